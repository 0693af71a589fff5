"""Keepalive answered and enforced; leases honoured both ways."""

from __future__ import annotations

import asyncio
import signal

from broker import frames as fr
from broker.frames import ErrorCode, FrameType, payload_frame
from tests.support.admin import service_instances, wait_for
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.peers import Responder, raw_provider, raw_requester
from tests.support.rawclient import RawClient


async def test_keepalive_with_respond_flag_is_answered(node: BrokerProcess, transport: str) -> None:
    async with await raw_requester(node, transport) as c:
        await c.send(fr.keepalive_frame(True, b"ping-data", last_position=7))
        answer = await c.expect(FrameType.KEEPALIVE, skip=())
        assert not answer.flags & fr.FLAG_RESPOND
        assert answer.raw[6 + 8 :] == b"ping-data"
        # a KEEPALIVE without the flag is not answered: the next frame is the request's ERROR
        await c.send(fr.keepalive_frame(False))
        sid = await c.request(FrameType.REQUEST_RESPONSE, "nobody.keepalive.m")
        frame = await c.recv()
        assert frame.type == FrameType.ERROR and frame.stream_id == sid, frame


async def test_silent_client_is_dropped_and_its_streams_get_errors(node: BrokerProcess, service: str, transport: str) -> None:
    # a provider promising a frame at least every 1.2 s: it keeps that promise until the
    # stream is open, then falls silent
    provider = await raw_provider(
        node, [service], "silent", transport, keepalive_ms=100, max_lifetime_ms=1200, keepalive_every_s=0.1
    )
    requester = await raw_requester(node)
    try:
        sid = await requester.request(FrameType.REQUEST_STREAM, f"{service}.numbers", initial_n=5)
        request = await provider.expect(FrameType.REQUEST_STREAM)
        await provider.send(payload_frame(request.stream_id, b"1"))
        assert (await requester.expect(FrameType.PAYLOAD, stream_id=sid)).data == b"1"
        await provider.stop_keepalive()
        await provider.expect_error(ErrorCode.CONNECTION_ERROR, contains="within its max lifetime of 1200 ms")
        await provider.wait_closed()
        message = await requester.expect_error(ErrorCode.APPLICATION_ERROR, stream_id=sid, contains="provider 'silent' went away")
        assert "max lifetime" in message
        assert not await service_instances(node.admin, service)
    finally:
        await requester.close()
        await provider.close()


async def test_client_that_keeps_alive_is_not_dropped(node: BrokerProcess) -> None:
    async with await RawClient.tcp(node.tcp) as c:
        await c.setup(keepalive_ms=100, max_lifetime_ms=1500)
        # keep talking for longer than the lifetime: every KEEPALIVE answered, no ERROR
        for i in range(20):
            await c.send(fr.keepalive_frame(True, b"%d" % i))
            answer = await c.expect(FrameType.KEEPALIVE, skip=())
            assert answer.raw[14:] == b"%d" % i
            await asyncio.sleep(0.1)


async def _lease_in_force(provider: RawClient, ttl_ms: int, count: int) -> None:
    """Send LEASE, then a KEEPALIVE asking for an answer: once answered, the broker has
    processed the LEASE (frames of one connection are handled in order)."""
    await provider.send(fr.lease_frame(ttl_ms, count), fr.keepalive_frame(True, b"lease-sent"))
    while True:
        frame = await provider.expect(FrameType.KEEPALIVE, skip=(FrameType.LEASE,))
        if frame.raw[14:] == b"lease-sent":
            return


async def test_lease_respected(node: BrokerProcess, service: str, transport: str) -> None:
    provider = await raw_provider(node, [service], "leased", transport, lease=True)
    requester = await raw_requester(node)
    try:
        # the broker grants the provider a lease of its own, since it negotiated leases
        lease = await provider.expect(FrameType.LEASE, skip=())
        ttl_ms, count = fr.parse_lease(lease.raw, 0, len(lease.raw))
        assert ttl_ms > 0 and count > 0
        # no LEASE from the provider yet: requests are refused, never sent to it
        sid = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m", b"early")
        await requester.expect_error(ErrorCode.REJECTED, stream_id=sid, contains="holds a lease")
        await _lease_in_force(provider, 60_000, 2)
        for data in (b"1", b"2"):
            await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m", data)
            assert (await provider.expect(FrameType.REQUEST_RESPONSE)).data == data
        third = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m", b"3")
        await requester.expect_error(ErrorCode.REJECTED, stream_id=third, contains="holds a lease with requests left")
        # a new lease opens the door again
        await _lease_in_force(provider, 60_000, 1)
        await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m", b"4")
        assert (await provider.expect(FrameType.REQUEST_RESPONSE)).data == b"4"
    finally:
        await requester.close()
        await provider.close()


async def test_lease_from_a_client_that_did_not_negotiate_it(node: BrokerProcess) -> None:
    async with await raw_requester(node) as c:
        await c.send(fr.lease_frame(1000, 1))
        await c.expect_error(ErrorCode.CONNECTION_ERROR, contains="SETUP did not negotiate leases")
        await c.wait_closed()


async def test_expired_provider_lease_stops_requests(node: BrokerProcess, service: str) -> None:
    """A lease ends with its time to live even with requests left."""
    provider = await raw_provider(node, [service], "short-lease", lease=True)
    requester = await raw_requester(node)
    try:
        await _lease_in_force(provider, 300, 1_000)

        async def rejected() -> bool:
            """One request: answered by the provider while the lease holds, REJECTED after."""
            sid = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.m")
            frame = await requester.recv()
            assert frame.stream_id == sid and frame.type in (FrameType.PAYLOAD, FrameType.ERROR), frame
            if frame.type == FrameType.PAYLOAD:
                return False
            code, message = frame.error
            assert code == ErrorCode.REJECTED and "holds a lease with requests left" in message, frame
            return True

        async with Responder(provider):
            await wait_for(rejected, message="requests refused once the lease expired")
    finally:
        await requester.close()
        await provider.close()


async def test_a_paused_broker_does_not_blame_its_clients_for_its_own_silence(broker_factory: BrokerFactory) -> None:
    """SIGSTOP the broker for longer than a client's max lifetime, then SIGCONT: the client
    kept sending keepalives all along (they wait in socket buffers), so its connection must
    survive; the broker, not the client, was silent (issue 12 §7)."""
    node = broker_factory.start()
    client = await RawClient.tcp(node.tcp)
    await client.setup(keepalive_ms=200, max_lifetime_ms=1000)
    client.start_keepalive(0.2)
    try:
        sid = await client.request(FrameType.REQUEST_RESPONSE, "nobody.before.pause")
        assert (await client.recv()).stream_id == sid  # served: the SETUP was accepted
        node.signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(3.0)  # three max lifetimes of the client pass while the broker sleeps
        finally:
            node.signal(signal.SIGCONT)
        sid = await client.request(FrameType.REQUEST_RESPONSE, "nobody.after.pause")
        frame = await client.recv(timeout=10)
        assert frame.stream_id == sid and frame.type == FrameType.ERROR, frame  # REJECTED: no provider
        assert "no provider" in frame.error[1], frame
    finally:
        await client.close()
