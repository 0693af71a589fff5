"""``broker.client`` at both ends of a real ``rsbroker serve``: every interaction model,
flow control end to end, cancellation, and the error types (TCP and WebSocket)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import pytest

from broker import metadata as md
from broker.client import (
    ApplicationError,
    CanceledError,
    Connection,
    ConnectionLostError,
    InvalidError,
    PayloadTooLarge,
    RejectedError,
    RSocketError,
    connect,
)
from broker.frames import ErrorCode
from tests.client.service import Probe, service_router
from tests.support.admin import service_instances, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess

#: bound on any single wait in these tests; generous for a busy shared machine
BOUND_S = 30.0

both_transports = pytest.mark.parametrize("transport", ["tcp", "ws"], indirect=True)


@both_transports
async def test_every_interaction_model(provider: Connection, requester: Connection, service: str, probe: Probe) -> None:
    assert await requester.request_response(f"{service}.hello", b"ada") == b"hello ada"
    assert await requester.request_response(f"{service}.route", b"") == f"{service}.route".encode()
    assert [item async for item in requester.request_stream(f"{service}.count", b"5", window=2)] == [
        b"1", b"2", b"3", b"4", b"5"
    ]  # fmt: skip

    async def words() -> AsyncIterator[bytes]:
        for word in (b"alpha", b"beta", b"gamma"):
            yield word

    assert [item async for item in requester.request_channel(f"{service}.upper", words(), window=1)] == [
        b"ALPHA", b"BETA", b"GAMMA"
    ]  # fmt: skip
    # REQUEST_CHANNEL always carries a payload: an empty source sends one empty item
    assert [item async for item in requester.request_channel(f"{service}.upper", [])] == [b""]

    await requester.fire_and_forget(f"{service}.log", b"remember me")
    await asyncio.wait_for(probe.logged_event.wait(), BOUND_S)
    assert probe.logged == [b"remember me"]

    await requester.metadata_push(md.route_metadata(f"{service}.notify"))
    await asyncio.wait_for(probe.pushed_event.wait(), BOUND_S)
    assert probe.pushed == [f"{service}.notify".encode()]


async def test_many_concurrent_requests_each_get_their_own_answer(provider: Connection, requester: Connection, service: str) -> None:
    payloads = [f"{i:05d}".encode() * 20 for i in range(500)]
    replies = await asyncio.wait_for(
        asyncio.gather(*(requester.request_response(f"{service}.echo", p) for p in payloads)), BOUND_S
    )
    assert replies == payloads


async def test_a_slow_consumer_bounds_the_producer_end_to_end(
    provider: Connection, requester: Connection, service: str, probe: Probe
) -> None:
    window = 8
    stream = requester.request_stream(f"{service}.ticks", b"", window=window)
    taken = [await asyncio.wait_for(stream.__anext__(), BOUND_S) for _ in range(5)]
    assert taken == [b"0", b"1", b"2", b"3", b"4"]
    # credit granted so far: the window, plus one batch (half the window) per 4 items taken
    granted = window + (5 // (window // 2)) * (window // 2)
    await wait_for(lambda: probe.produced >= granted, message=f"the producer to use its {granted} credits")
    # a round trip through the same connections: any credit still in flight would be ahead of it
    assert await requester.request_response(f"{service}.hello", b"") == b"hello "
    assert probe.produced == granted, "the producer ran ahead of the consumer's window"
    await stream.aclose()
    await asyncio.wait_for(probe.stream_closed.wait(), BOUND_S)


async def test_leaving_a_stream_early_cancels_it_at_the_provider(
    provider: Connection, requester: Connection, service: str, probe: Probe
) -> None:
    async for item in requester.request_stream(f"{service}.ticks", b"", window=4):
        if item == b"2":
            break
    await asyncio.wait_for(probe.stream_closed.wait(), BOUND_S)
    # the connection serves on
    assert await requester.request_response(f"{service}.hello", b"x") == b"hello x"


async def test_cancelling_a_waiting_request_cancels_its_handler(
    provider: Connection, requester: Connection, service: str, probe: Probe
) -> None:
    pending = asyncio.create_task(requester.request_response(f"{service}.hold", b""))
    await asyncio.wait_for(probe.held.wait(), BOUND_S)
    pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pending
    await asyncio.wait_for(probe.hold_cancelled.wait(), BOUND_S)


@pytest.mark.parametrize(
    ("method", "error", "code", "text"),
    [
        ("fail", ApplicationError, ErrorCode.APPLICATION_ERROR, "boom"),
        ("busy", RejectedError, ErrorCode.REJECTED, "busy, try another"),
        ("gives_up", CanceledError, ErrorCode.CANCELED, "gave up"),
        ("picky", InvalidError, ErrorCode.INVALID, "not a number"),
    ],
)
async def test_a_handlers_error_reaches_the_requester_as_its_type(
    provider: Connection, requester: Connection, service: str, method: str, error: type[RSocketError], code: int, text: str
) -> None:
    with pytest.raises(error) as raised:
        await requester.request_response(f"{service}.{method}", b"")
    assert raised.value.code == code
    assert raised.value.message == text


async def test_an_error_in_the_middle_of_a_stream_ends_the_loop_with_it(
    provider: Connection, requester: Connection, service: str
) -> None:
    items: list[bytes] = []
    with pytest.raises(ApplicationError, match="broken stream"):
        async for item in requester.request_stream(f"{service}.broken", b""):
            items.append(item)
    assert items == [b"first"]


async def test_no_provider_is_a_rejected_error(requester: Connection, service: str) -> None:
    with pytest.raises(RejectedError) as raised:
        await requester.request_response(f"{service}.nobody.hello", b"")
    assert raised.value.message.startswith(f"no provider for service '{service}.nobody'")
    with pytest.raises(RejectedError):
        async for _ in requester.request_stream(f"{service}.nobody.count", b"3"):
            pass


async def test_registering_later_by_metadata_push(node: BrokerProcess, requester: Connection, service: str, probe: Probe) -> None:
    async with connect(str(node.tcp), router=service_router(service, probe)) as late:
        with pytest.raises(RejectedError):
            await requester.request_response(f"{service}.hello", b"")
        await late.register([service], "late-1")
        await wait_for(lambda: service_instances(str(node.admin), service), message="the pushed registration")
        assert await requester.request_response(f"{service}.hello", b"late") == b"hello late"
        await late.register([], "late-1")

        async def withdrawn() -> bool:
            return not await service_instances(str(node.admin), service)

        await wait_for(withdrawn, message="the withdrawal")


async def test_requests_in_flight_fail_when_the_broker_dies(broker_factory: BrokerFactory, service: str, probe: Probe) -> None:
    doomed = await asyncio.to_thread(broker_factory.start)
    async with connect(str(doomed.tcp), services=[service], router=service_router(service, probe)):
        async with connect(str(doomed.tcp)) as requester:
            pending = asyncio.create_task(requester.request_response(f"{service}.hold", b""))
            await asyncio.wait_for(probe.held.wait(), BOUND_S)
            doomed.kill()
            with pytest.raises(ConnectionLostError):
                await asyncio.wait_for(pending, BOUND_S)
            with pytest.raises(ConnectionLostError):
                await requester.request_response(f"{service}.hello", b"")
            assert requester.is_closed


async def test_a_node_that_never_answers_the_setup_is_a_connection_error() -> None:
    """A listener that accepts and stays silent (what a paused node's kernel does)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    async with server:
        with pytest.raises(ConnectionLostError, match="did not answer the SETUP"):
            async with connect(f"{host}:{port}", setup_timeout_s=0.5):
                pass


async def test_the_route_metadata_is_the_standard_routing_extension(requester: Connection, service: str) -> None:
    """What the broker routes on, byte for byte (so any RSocket provider understands it)."""
    assert requester._metadata(f"{service}.hello", None) == md.route_metadata(f"{service}.hello")  # noqa: SLF001


async def test_leaving_a_channel_early_cancels_it_and_a_failing_source_ends_it(
    provider: Connection, requester: Connection, service: str, probe: Probe
) -> None:
    async def endless() -> AsyncIterator[bytes]:
        n = 0
        while True:
            yield str(n).encode()
            n += 1

    async for item in requester.request_channel(f"{service}.upper", endless(), window=2):
        if item == b"3":
            break
    await asyncio.wait_for(probe.channel_closed.wait(), BOUND_S)
    assert await requester.request_response(f"{service}.hello", b"on") == b"hello on"

    async def failing() -> AsyncIterator[bytes]:
        raise ValueError("no first item")
        yield b""  # pragma: no cover — makes this an async generator

    with pytest.raises(ValueError, match="no first item"):
        async for _ in requester.request_channel(f"{service}.upper", failing()):
            pass


def test_handlers_must_be_async() -> None:
    router = service_router("x", Probe())
    with pytest.raises(TypeError, match="must be an async def"):
        router.response("x.sync")(lambda data: data)
    with pytest.raises(ValueError, match="already has"):
        router.response("x.hello")(_async_echo)


async def _async_echo(data: bytes) -> bytes:
    return data


async def test_payloads_over_16_mib_travel_as_fragments_both_ways(
    provider: Connection, requester: Connection, service: str
) -> None:
    big = bytes(range(256)) * (17 * 4096 + 7)  # 17 MiB and a bit: more than one TCP frame holds
    assert len(big) > 16 * 1024 * 1024
    assert await asyncio.wait_for(requester.request_response(f"{service}.echo", big), BOUND_S) == big
    assert await requester.request_response(f"{service}.echo", b"small") == b"small"


async def test_a_fragmented_answer_past_max_payload_bytes_is_refused_and_the_connection_serves_on(
    node: BrokerProcess, service: str, probe: Probe
) -> None:
    router = service_router(service, probe)
    async with connect(str(node.tcp), services=[service], router=router, fragment_size=64 * 1024):
        async with connect(str(node.tcp), max_payload_bytes=1024 * 1024) as requester:
            with pytest.raises(PayloadTooLarge, match="max_payload_bytes=1048576"):
                await requester.request_response(f"{service}.echo", bytes(2 * 1024 * 1024))
            assert await requester.request_response(f"{service}.echo", bytes(512 * 1024)) == bytes(512 * 1024)
            assert await requester.request_response(f"{service}.hello", b"on") == b"hello on"


async def test_keepalives_hold_an_idle_connection_past_its_lifetime(node: BrokerProcess, service: str) -> None:
    """The broker closes a client silent for its max lifetime: ours keeps talking."""
    async with connect(str(node.tcp), keepalive_s=0.1, max_lifetime_s=0.5) as idle:
        # ten answered keepalives take at least 1 s: twice the lifetime the broker enforces
        await wait_for(lambda: idle.keepalives_answered >= 10, message="ten keepalive answers")
        assert not idle.is_closed
        with pytest.raises(RejectedError):
            await idle.request_response(f"{service}.hello", b"")


async def test_a_paused_broker_is_detected_by_the_keepalive_lifetime(broker_factory: BrokerFactory) -> None:
    paused = await asyncio.to_thread(broker_factory.start)
    async with connect(str(paused.tcp), keepalive_s=0.1, max_lifetime_s=1.0) as client:
        paused.signal(signal.SIGSTOP)
        try:
            reason = await asyncio.wait_for(client.wait_closed(), BOUND_S)
        finally:
            paused.signal(signal.SIGCONT)
        assert isinstance(reason, ConnectionLostError)
        assert "max lifetime" in reason.message
