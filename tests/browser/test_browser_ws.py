"""The browser example against a real broker: rsocket-js in Chromium over WebSocket.

Each test checks both ends: what the page reports (``window.rsbroker``, mirrored in its DOM)
and what the rsocket-py provider behind the broker received, so a relay that answered the
page without forwarding its frames (or forwarded them to the wrong stream) fails here.
"""

import asyncio
import socket

import pytest
from playwright.async_api import Browser, Page

from tests.support.brokerproc import BrokerProcess

from .greeter import GreeterState, greeting
from .pages import REJECTED, UNSERVED_ROUTE, greeter_page, page_url, run_page

pytestmark = pytest.mark.browser


async def test_page_calls_every_interaction_model_through_the_broker(
    page: Page, example_site: str, broker: BrokerProcess, greeter: GreeterState
) -> None:
    report = await run_page(page, greeter_page(example_site, broker.ws_url, name="Ada", count=5, batch=2))

    assert report["state"] == "done", report["error"]
    assert report["response"] == greeting("Ada")
    assert greeter.greeted == ["Ada"]
    assert report["stream"] == {"items": ["1", "2", "3", "4", "5"], "requests": [2, 2, 2]}
    assert greeter.grants == [2, 2, 2], "REQUEST_N credits reaching the provider differ from those sent"
    assert await greeter.next_logged() == "hello from Ada"
    assert report["logSent"] is True
    unserved = report["unserved"]
    assert isinstance(unserved, dict)
    assert unserved["code"] == REJECTED
    assert str(unserved["message"]).startswith(f"no provider for service '{UNSERVED_ROUTE.rpartition('.')[0]}'")
    assert await page.text_content("#response") == greeting("Ada")
    assert await page.text_content("#state") == "done"
    print(
        f"browser run: connected {report['connectMs']:.1f} ms, first reply {report['firstReplyMs']:.1f} ms, "
        f"all calls done {report['totalMs']:.1f} ms after page start"
    )


async def test_two_pages_keep_their_streams_apart_on_one_provider(
    browser: Browser, example_site: str, broker: BrokerProcess, greeter: GreeterState
) -> None:
    """Both pages use stream ids 1, 3, 5...; the broker must map them to distinct provider streams."""
    left, right = await browser.new_context(), await browser.new_context()
    try:
        left_report, right_report = await asyncio.gather(
            run_page(await left.new_page(), greeter_page(example_site, broker.ws_url, name="left", count=3, batch=1)),
            run_page(await right.new_page(), greeter_page(example_site, broker.ws_url, name="right", count=4, batch=3)),
        )
    finally:
        await left.close()
        await right.close()

    assert left_report["state"] == "done", left_report["error"]
    assert right_report["state"] == "done", right_report["error"]
    assert left_report["response"] == greeting("left")
    assert right_report["response"] == greeting("right")
    assert sorted(greeter.greeted) == ["left", "right"]
    assert left_report["stream"] == {"items": ["1", "2", "3"], "requests": [1, 1, 1]}
    assert right_report["stream"] == {"items": ["1", "2", "3", "4"], "requests": [3, 3]}
    assert sorted(greeter.grants) == [1, 1, 1, 3, 3]
    assert {await greeter.next_logged(), await greeter.next_logged()} == {"hello from left", "hello from right"}


def unused_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_page_reports_an_unreachable_broker(page: Page, example_site: str) -> None:
    ws_url = f"ws://127.0.0.1:{unused_tcp_port()}/rsocket"

    report = await run_page(page, page_url(example_site, ws_url))

    assert report["state"] == "failed"
    assert report["error"] == {"code": None, "message": f"cannot open WebSocket {ws_url}"}
    assert await page.text_content("#state") == "failed"
