"""Fixtures for driving the browser example (examples/browser) in a real headless Chromium.

Everything is real: an ``rsbroker serve`` subprocess, an rsocket-py provider over TCP, the
page served over HTTP by aiohttp, Debian's chromium driven by Playwright. Tests skip (with the
fix in the reason) only when chromium or the bundle is absent; ``make test`` installs both
through scripts/browser-deps.sh first.
"""

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from tests.support.brokerproc import BrokerFactory, BrokerProcess

from .greeter import GreeterState, serving_greeter
from .pages import BUNDLE, CHROMIUM_ARGS, EXAMPLE_DIR


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium not installed: run scripts/browser-deps.sh (as root) or apt-get install chromium")
    return path


@pytest.fixture(scope="session")
def example_bundle() -> Path:
    if not BUNDLE.exists():
        pytest.skip(f"{BUNDLE} missing: run scripts/browser-deps.sh (npm ci && npm run build)")
    return BUNDLE


@pytest.fixture
async def example_site(example_bundle: Path) -> AsyncIterator[str]:
    """examples/browser (with its built bundle) served over HTTP on a free loopback port;
    yields ``http://host:port``."""
    app = web.Application()
    app.router.add_static("/", EXAMPLE_DIR)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser(chromium_executable: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    try:
        yield await context.new_page()
    finally:
        await context.close()


@pytest.fixture
async def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    """One ``rsbroker serve`` node (TCP, WebSocket and admin listeners on free ports)."""
    return await asyncio.to_thread(broker_factory.start, node_id="b1")


@pytest.fixture
async def greeter(broker: BrokerProcess) -> AsyncIterator[GreeterState]:
    """The greeter service connected to ``broker``, already routable when yielded."""
    async with serving_greeter(broker) as state:
        yield state
