"""The browser example as an IoT device (examples/browser/src/device.ts) in headless Chromium:
it registers ``device.<id>`` with rsocket-js, answers calls from any node of a 3-node
cluster, and moves to another node when its node is SIGKILLed (issue 13)."""

from __future__ import annotations

import asyncio
import time

import pytest
from playwright.async_api import Page

from broker.client import RejectedError, connect
from tests.support.brokerproc import BrokerProcess
from tests.support.cluster import ClusterFactory

from .pages import PAGE_TIMEOUT_MS, page_url

pytestmark = pytest.mark.browser

DEVICE = "device.7"
#: gossip finds a killed node and the device's new route spreads within this (seconds)
MOVE_TIMEOUT_S = 60.0


async def _call_device(node: BrokerProcess, payload: bytes) -> bytes:
    """``device.7.ping`` through ``node``, retried while the device's route is on its way there."""
    assert node.tcp
    deadline = time.monotonic() + MOVE_TIMEOUT_S
    async with connect(node.tcp) as client:
        while True:
            try:
                return await client.request_response(f"{DEVICE}.ping", payload)
            except RejectedError as exc:
                if not exc.message.startswith("no provider") or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)


async def _device_report(page: Page, condition: str) -> dict:
    await page.wait_for_function(f"() => {{ const d = window.rsbroker && window.rsbroker.device; return !!d && ({condition}); }}",
                                 timeout=PAGE_TIMEOUT_MS * 2)
    return await page.evaluate("window.rsbroker.device")


async def test_a_browser_device_answers_from_any_node_and_survives_its_node(page: Page, example_site: str) -> None:
    with ClusterFactory() as factory:
        cluster = await asyncio.to_thread(factory.start, 3)
        await cluster.wait_converged()
        by_url = {f"ws://{n.ws}/rsocket": n for n in cluster}
        nodes = ",".join(by_url)
        await page.goto(page_url(example_site, next(iter(by_url)), mode="device", id="7", nodes=nodes))
        first = await _device_report(page, "d.connects >= 1 && d.node !== null")
        assert first["service"] == DEVICE
        home = by_url[first["node"]]
        others = [n for n in cluster if n is not home]
        for node in others:  # reached through a node it is not connected to, one hop
            assert await _call_device(node, b"hello " + node.node_id.encode()) == b"hello " + node.node_id.encode()

        await asyncio.to_thread(home.kill)
        moved = await _device_report(page, f"d.connects >= 2 && d.node !== null && d.node !== {first['node']!r}")
        assert by_url[moved["node"]] in others
        for node in others:
            assert await _call_device(node, b"again") == b"again"
        answered = await page.evaluate("window.rsbroker.device.calls")
        assert answered >= 2 * len(others)
