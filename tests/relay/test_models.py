"""Every interaction model through the broker with plain rsocket-py on both ends,
over TCP, over WebSocket, and across the two."""

from __future__ import annotations

from typing import Any, AsyncIterator

import pytest
from rsocket.awaitable.awaitable_rsocket import AwaitableRSocket
from rsocket.payload import Payload
from rsocket.streams.stream_from_generator import StreamFromGenerator

from broker import metadata as md
from broker.client.rsocketpy import connect, route
from tests.relay.rsocket_provider import Recorder, router_for
from tests.support.admin import service_instances, wait_for
from tests.support.brokerproc import BrokerProcess


@pytest.fixture(params=[("tcp", "tcp"), ("ws", "ws"), ("tcp", "ws")], ids=["tcp", "ws", "tcp-to-ws"])
def transports(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(provider transport, requester transport)."""
    return request.param  # type: ignore[no-any-return]


def _where(node: BrokerProcess, transport: str) -> dict[str, Any]:
    host, port = node.ws_address if transport == "ws" else node.tcp_address
    return {"host": host, "port": port, "websocket": transport == "ws"}


class Pair:
    """A connected rsocket-py provider (serving ``service``) and requester."""

    def __init__(self, provider: Any, requester: AwaitableRSocket, recorder: Recorder) -> None:
        self.provider = provider
        self.requester = requester
        self.recorder = recorder


@pytest.fixture
async def pair(node: BrokerProcess, service: str, transports: tuple[str, str]) -> AsyncIterator[Pair]:
    recorder = Recorder()
    p, r = (_where(node, t) for t in transports)
    async with connect(
        p.pop("host"), p.pop("port"), services=[service], router=router_for(service, recorder), instance="py-provider", **p
    ) as provider:
        await wait_for(lambda: service_instances(node.admin, service), message="provider registered")
        async with connect(r.pop("host"), r.pop("port"), **r) as requester:
            yield Pair(provider, AwaitableRSocket(requester), recorder)


async def test_request_response(pair: Pair, service: str) -> None:
    reply = await pair.requester.request_response(Payload(b"ada", route(f"{service}.hello")))
    assert reply.data == b"hello ada"


async def test_request_stream(pair: Pair, service: str) -> None:
    items = await pair.requester.request_stream(Payload(b"5", route(f"{service}.count")))
    assert [p.data for p in items] == [b"1", b"2", b"3", b"4", b"5"]


async def test_request_stream_with_limit_rate(pair: Pair, service: str) -> None:
    """rsocket-py asks for 2 at a time: REQUEST_N frames must travel for the stream to finish."""
    items = await pair.requester.request_stream(Payload(b"7", route(f"{service}.count")), limit_rate=2)
    assert [p.data for p in items] == [str(i).encode() for i in range(1, 8)]


async def test_request_channel(pair: Pair, service: str) -> None:
    def words() -> Any:
        for i, word in enumerate([b"alpha", b"beta", b"gamma"]):
            yield Payload(word), i == 2

    items = await pair.requester.request_channel(Payload(b"start", route(f"{service}.upper")), StreamFromGenerator(words))
    assert [p.data for p in items] == [b"START", b"ALPHA", b"BETA", b"GAMMA", b"<end>"]


async def test_fire_and_forget(pair: Pair, service: str) -> None:
    for i in range(3):
        await pair.requester.fire_and_forget(Payload(b"note %d" % i, route(f"{service}.log")))
    await wait_for(lambda: len(pair.recorder.fire_and_forget) == 3, message="three fire-and-forget messages")
    assert sorted(pair.recorder.fire_and_forget) == [b"note 0", b"note 1", b"note 2"]


async def test_routed_metadata_push_reaches_the_provider(pair: Pair, service: str) -> None:
    metadata = route(f"{service}.notify")
    await pair.requester.metadata_push(metadata)
    await wait_for(lambda: pair.recorder.metadata_push, message="metadata push delivered")
    assert pair.recorder.metadata_push == [metadata]


async def test_provider_reregisters_with_metadata_push(pair: Pair, node: BrokerProcess, service: str) -> None:
    moved = f"{service}.v2"
    reg = md.Registration(services=(moved,), instance="py-provider")
    await pair.provider.metadata_push(md.composite_entry(md.REGISTER_MIME, reg.to_json()))
    await wait_for(lambda: service_instances(node.admin, moved), message=f"'{moved}' registered")
    assert await service_instances(node.admin, service) == []
    # the router still serves the old routes; only the broker's view of the services changed
    with pytest.raises(Exception, match=f"no provider for service '{service}'"):
        await pair.requester.request_response(Payload(b"x", route(f"{service}.hello")))
