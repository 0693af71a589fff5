"""Browsers against the Origin and Host checks, in a real Chromium (issue 11 §1 and §4).

* A page of another site (``evil.example``, which Chromium is told resolves to 127.0.0.1)
  opens ``ws://127.0.0.1:PORT/rsocket`` on a protected-mode broker: the upgrade is refused,
  the provider never hears of it. The same page served from 127.0.0.1 works (see
  ``test_browser_ws``).
* The dashboard opened from the node itself shows the node, with authentication off, and
  with it on once an admin token is pasted into it.
"""

import asyncio
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.async_api import Browser, Page, async_playwright

from broker.auth.certs import public_pem
from broker.auth.tokens import mint_token
from tests.support.brokerproc import BrokerFactory, BrokerProcess

from .greeter import GreeterState
from .pages import CHROMIUM_ARGS, PAGE_TIMEOUT_MS, greeter_page, run_page

pytestmark = pytest.mark.browser

FOREIGN = "evil.example"


@pytest.fixture
async def rebinding_browser(chromium_executable: str) -> AsyncIterator[Browser]:
    """Chromium in which ``evil.example`` resolves to 127.0.0.1, as after a DNS rebinding."""
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=chromium_executable, args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {FOREIGN} 127.0.0.1"]
        )
        try:
            yield instance
        finally:
            await instance.close()


async def refused_upgrades(broker: BrokerProcess) -> int:
    """``rsbroker_ws_origins_refused_total`` from the broker's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{broker.admin_url}/metrics") as response:
        text = await response.text()
    match = re.search(r"^rsbroker_ws_origins_refused_total (\S+)$", text, re.MULTILINE)
    assert match, "rsbroker_ws_origins_refused missing from /metrics"
    return int(float(match.group(1)))


async def test_a_foreign_page_cannot_use_the_brokers_loopback_websocket(
    rebinding_browser: Browser, example_site: str, broker: BrokerProcess, greeter: GreeterState
) -> None:
    foreign_site = example_site.replace("127.0.0.1", FOREIGN)
    context = await rebinding_browser.new_context()
    try:
        report = await run_page(await context.new_page(), greeter_page(foreign_site, broker.ws_url, name="Mallory"))
    finally:
        await context.close()
    assert report["state"] == "failed", report
    assert greeter.greeted == []
    assert await refused_upgrades(broker) >= 1


async def test_the_dashboard_opened_from_the_node_shows_it(page: Page, broker: BrokerProcess) -> None:
    await page.goto(f"{broker.admin_url}/")
    await page.wait_for_function(
        f"document.getElementById('self').textContent === {broker.node_id!r}", timeout=PAGE_TIMEOUT_MS
    )
    assert await page.is_hidden("#auth")


async def test_the_dashboard_asks_for_an_admin_token_when_authentication_is_on(
    page: Page, broker_factory: BrokerFactory
) -> None:
    key = Ed25519PrivateKey.generate()
    key_file = broker_factory.tmpdir() / "jwt-public.pem"
    key_file.write_bytes(public_pem(key))
    node = await asyncio.to_thread(broker_factory.start, "--jwt-keys", str(key_file), node_id="secured")
    await page.goto(f"{node.admin_url}/")
    await page.wait_for_selector("#auth", state="visible", timeout=PAGE_TIMEOUT_MS)
    assert "requires 'Authorization: Bearer <token>'" in (await page.text_content("#err") or "")
    await page.fill("#token", mint_token(key, sub="operator", roles=["admin"]))
    await page.click("#auth button")
    await page.wait_for_function(
        "document.getElementById('self').textContent === 'secured'", timeout=PAGE_TIMEOUT_MS
    )
