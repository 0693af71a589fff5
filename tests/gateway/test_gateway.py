"""``/rpc/{route}`` on a real ``rsbroker serve``: the three HTTP shapes, errors, curl.

A ``broker.client`` provider serves ``gw`` (``tests.gateway.peers``); HTTP clients are
aiohttp and, where it is installed, the ``curl`` binary.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from broker.client import connect
from tests.gateway.peers import SERVICE, Seen, gateway_router, http, wait_served
from tests.support.brokerproc import BrokerFactory, BrokerProcess

CURL = shutil.which("curl")


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory.start()


def rpc(node: BrokerProcess, route: str) -> str:
    return f"http://{node.ws}/rpc/{route}"


async def test_post_is_request_response_with_its_content_type(node: BrokerProcess) -> None:
    seen = Seen()
    async with connect(str(node.tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(node)
        status, headers, body = await http("POST", rpc(node, "gw.echo"), data=b'{"a":1}', headers={"Content-Type": "application/json"})
        assert (status, body) == (200, b'p1 echo {"a":1}')
        assert headers["Content-Type"].startswith("application/json")
        assert seen.calls == [("echo", b'{"a":1}')]


async def test_prefer_respond_async_is_fire_and_forget(node: BrokerProcess) -> None:
    seen = Seen()
    async with connect(str(node.tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(node)
        status, _, _ = await http("POST", rpc(node, "gw.note"), data=b"n1", headers={"Prefer": "respond-async"})
        assert status == 202
        assert await asyncio.wait_for(seen.notes.get(), 30) == b"n1"


async def test_no_provider_is_503_with_retry_after(node: BrokerProcess) -> None:
    status, headers, body = await http("POST", rpc(node, "nobody.here"), data=b"x")
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert json.loads(body) == {"error": "REJECTED", "message": "no provider for service 'nobody'"}


async def test_provider_error_is_502_and_bad_requests_are_400(node: BrokerProcess) -> None:
    seen = Seen()
    async with connect(str(node.tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(node)
        status, _, body = await http("POST", rpc(node, "gw.fail"), data=b"x")
        assert status == 502
        assert json.loads(body)["error"] == "APPLICATION_ERROR"
        status, _, body = await http("GET", rpc(node, "gw.count"))  # no Accept saying how to stream
        assert status == 400
        assert "text/event-stream" in json.loads(body)["message"]
        status, _, body = await http("POST", rpc(node, "gw." + "x" * 300), data=b"x")
        assert status == 400 and "255 bytes" in json.loads(body)["message"]
        status, _, body = await http("POST", rpc(node, "gw.echo"), data=b"x", headers={"RSBroker-Deadline-Ms": "soon"})
        assert status == 400 and "RSBroker-Deadline-Ms" in json.loads(body)["message"]


async def test_get_streams_as_ndjson_and_sse(node: BrokerProcess) -> None:
    seen = Seen()
    async with connect(str(node.tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(node)
        # 100 items: more than three windows, so the gateway must ask for more as it drains
        status, headers, body = await http("GET", rpc(node, "gw.count") + "?data=100", headers={"Accept": "application/x-ndjson"})
        assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
        assert body.split(b"\n")[:-1] == [str(i).encode() for i in range(100)]
        status, headers, body = await http("GET", rpc(node, "gw.count") + "?data=3", headers={"Accept": "text/event-stream"})
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
        assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_a_client_that_goes_away_cancels_the_stream_at_the_provider(node: BrokerProcess) -> None:
    import aiohttp

    seen = Seen()
    async with connect(str(node.tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(node)
        session = aiohttp.ClientSession()
        response = await session.get(rpc(node, "gw.count"), headers={"Accept": "application/x-ndjson"})  # endless
        assert response.status == 200
        assert await response.content.readline() == b"0\n"
        response.close()  # drop the connection mid-stream
        await session.close()
        await asyncio.wait_for(seen.stream_ended.wait(), 30)
        # flow control held the endless stream to what the client could take, not unbounded
        assert seen.items_sent < 10_000


@pytest.mark.skipif(CURL is None, reason="the curl binary is not installed")
async def test_curl_post_and_sse(node: BrokerProcess) -> None:
    assert CURL is not None
    seen = Seen()
    async with connect(str(node.tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(node)
        out = await _curl("-s", "-X", "POST", "--data-binary", "ada", "-H", "Content-Type: text/plain", rpc(node, "gw.echo"))
        assert out == b"p1 echo ada"
        out = await _curl("-sN", "-H", "Accept: text/event-stream", rpc(node, "gw.count") + "?data=2")
        assert out == b"data: 0\n\ndata: 1\n\n"
        out = await _curl("-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", rpc(node, "nobody.here"))
        assert out == b"503"


async def _curl(*args: str) -> bytes:
    assert CURL is not None
    process = await asyncio.create_subprocess_exec(CURL, "--max-time", "60", *args, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    return out



async def test_every_http_request_leaves_the_relay_when_it_ends(node: BrokerProcess) -> None:
    """Answered, refused, failed, streamed and abandoned requests: none stays a connection."""
    import aiohttp

    from tests.support.admin import connections, wait_for

    seen = Seen()
    async with connect(str(node.tcp), services=[SERVICE], router=gateway_router(seen)):
        await wait_served(node)
        for route, method, headers in (
            ("gw.echo", "POST", {}),
            ("gw.fail", "POST", {}),
            ("nobody.here", "POST", {}),
            ("gw.note", "POST", {"Prefer": "respond-async"}),
            ("gw.count?data=20", "GET", {"Accept": "text/event-stream"}),
        ):
            await asyncio.gather(*(http(method, rpc(node, route), data=b"1", headers=headers) for _ in range(10)))
        async with aiohttp.ClientSession() as session:
            abandoned = [
                await session.get(rpc(node, "gw.count"), headers={"Accept": "application/x-ndjson"}) for _ in range(5)
            ]
            for response in abandoned:
                response.close()

        async def no_http_connections() -> bool:
            return not [c for c in await connections(node) if c["transport"] == "http"]

        await wait_for(no_http_connections, message="every gateway session closed")
