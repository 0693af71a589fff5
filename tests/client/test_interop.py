"""``broker.client`` speaks plain RSocket: against an rsocket-py server directly, and as the
provider rsocket-py requesters reach through the broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from reactivestreams.subscriber import Subscriber
from reactivestreams.subscription import Subscription
from rsocket.awaitable.awaitable_rsocket import AwaitableRSocket
from rsocket.payload import Payload
from rsocket.routing.routing_request_handler import RoutingRequestHandler
from rsocket.rsocket_server import RSocketServer
from rsocket.streams.stream_from_generator import StreamFromGenerator
from rsocket.transports.tcp import TransportTCP

from broker import metadata as md
from broker.client import ApplicationError, Connection, connect
from broker.client.rsocketpy import connect as rsocketpy_connect
from broker.client.rsocketpy import route
from tests.client.service import Probe, service_router
from tests.relay.rsocket_provider import Recorder, router_for
from tests.support.admin import wait_for
from tests.support.brokerproc import BrokerProcess, split_hostport

BOUND_S = 30.0


@pytest.fixture
async def rsocketpy_server() -> AsyncIterator[tuple[str, Recorder]]:
    """An rsocket-py ``RSocketServer`` per accepted connection, routing with ``router_for``."""
    recorder = Recorder()
    router = router_for("py", recorder)
    servers: list[RSocketServer] = []

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        servers.append(RSocketServer(TransportTCP(reader, writer), handler_factory=lambda: RoutingRequestHandler(router)))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    async with server:
        yield f"{host}:{port}", recorder
        for rsocket in servers:
            await rsocket.close()


async def test_every_model_against_an_rsocketpy_server(rsocketpy_server: tuple[str, Recorder]) -> None:
    address, recorder = rsocketpy_server
    async with connect(address) as client:
        assert await client.request_response("py.hello", b"ada") == b"hello ada"
        assert [item async for item in client.request_stream("py.count", b"4", window=2)] == [b"1", b"2", b"3", b"4"]

        async def words() -> AsyncIterator[bytes]:
            for word in (b"ab", b"cd"):
                yield word

        # rsocket-py's channel answers the request's payload, then each inbound item, then "<end>"
        assert [item async for item in client.request_channel("py.upper", words())] == [b"AB", b"CD", b"<end>"]

        # an infinite stream that honours request-n: leaving the loop early ends it
        async for item in client.request_stream("py.ticks", b"", window=2):
            if item == b"3":
                break

        await client.fire_and_forget("py.log", b"kept")
        await client.metadata_push(md.route_metadata("py.notify"))
        # a round trip after the one-way frames: rsocket-py handles a connection's frames in order
        assert await client.request_response("py.size", b"12345") == b"5"
        assert recorder.fire_and_forget == [b"kept"]
        assert recorder.metadata_push == [md.route_metadata("py.notify")]

        with pytest.raises(ApplicationError):
            await client.request_response("py.nothing-here", b"")


async def test_rsocketpy_requesters_reach_a_broker_client_provider(
    node: BrokerProcess, provider: Connection, service: str, probe: Probe
) -> None:
    host, port = split_hostport(str(node.tcp))
    async with rsocketpy_connect(host, port) as raw:
        client = AwaitableRSocket(raw)
        reply = await asyncio.wait_for(client.request_response(Payload(b"ada", route(f"{service}.hello"))), BOUND_S)
        assert reply.data == b"hello ada"

        items = await asyncio.wait_for(client.request_stream(Payload(b"3", route(f"{service}.count"))), BOUND_S)
        assert [p.data for p in items] == [b"1", b"2", b"3"]

        def words():  # type: ignore[no-untyped-def]
            for i, word in enumerate((b"xy", b"z")):
                yield Payload(word), i == 1

        echoed = await asyncio.wait_for(
            client.request_channel(Payload(b"first", route(f"{service}.upper")), StreamFromGenerator(words)), BOUND_S
        )
        assert [p.data for p in echoed if p.data] == [b"FIRST", b"XY", b"Z"]

        await client.fire_and_forget(Payload(b"from rsocket-py", route(f"{service}.log")))
        await asyncio.wait_for(probe.logged_event.wait(), BOUND_S)
        assert probe.logged == [b"from rsocket-py"]

        with pytest.raises(Exception, match="boom"):
            await asyncio.wait_for(client.request_response(Payload(b"", route(f"{service}.fail"))), BOUND_S)


async def test_an_unbounded_request_n_neither_starves_the_provider_nor_outlives_cancel(
    node: BrokerProcess, provider: Connection, requester: Connection, service: str, probe: Probe
) -> None:
    """rsocket-py asks for 2^31-1 items of an endless stream: the provider sends in bursts,
    keeps serving other requests meanwhile, and stops when the requester cancels."""
    host, port = split_hostport(str(node.tcp))
    received = 0
    done = asyncio.Event()

    class Taker(Subscriber):
        def on_subscribe(self, subscription: Subscription) -> None:
            self.subscription = subscription

        def on_next(self, value: Payload, is_complete: bool = False) -> None:
            nonlocal received
            received += 1
            if received == 2000:
                self.subscription.cancel()
                done.set()

        def on_error(self, exception: Exception) -> None:
            done.set()

        def on_complete(self) -> None:
            done.set()

    async with rsocketpy_connect(host, port) as raw:
        raw.request_stream(Payload(b"", route(f"{service}.ticks"))).initial_request_n(0x7FFFFFFF).subscribe(Taker())
        await wait_for(lambda: probe.produced > 0, message="the stream to start")
        # the provider's connection still answers while it streams
        assert await asyncio.wait_for(requester.request_response(f"{service}.hello", b"x"), BOUND_S) == b"hello x"
        await asyncio.wait_for(done.wait(), BOUND_S)
        await asyncio.wait_for(probe.stream_closed.wait(), BOUND_S)


async def test_fragments_interoperate_with_rsocketpy_both_ways(node: BrokerProcess, service: str, probe: Probe) -> None:
    """rsocket-py fragments its requests (1 KiB); our provider fragments its answers (4 KiB)."""
    host, port = split_hostport(str(node.tcp))
    payload = bytes(range(256)) * 40  # 10 KiB
    async with connect(str(node.tcp), services=[service], router=service_router(service, probe), fragment_size=4096):
        async with rsocketpy_connect(host, port, fragment_size_bytes=1024) as raw:
            client = AwaitableRSocket(raw)
            reply = await asyncio.wait_for(client.request_response(Payload(payload, route(f"{service}.echo"))), BOUND_S)
            assert reply.data == payload
            await client.fire_and_forget(Payload(payload, route(f"{service}.log")))
            await asyncio.wait_for(probe.logged_event.wait(), BOUND_S)
            assert probe.logged == [payload]
