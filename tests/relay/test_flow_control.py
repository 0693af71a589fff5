"""A slow requester does not make the broker buffer without bound.

A raw provider floods PAYLOAD frames, ignoring request-n, while the requester reads
nothing. With ``--max-pending-bytes`` small, the broker must stop reading from the
provider once the requester's queue is full, so the provider's writes stall after a
bounded amount (kernel socket buffers plus the broker's queue), far below the flood.
When the requester reads again, the flow resumes.

"Stalled" is a condition, not a timing: the provider's writer is blocked on a full
socket and its byte count stays the same over consecutive polls. The assertion is on the
byte count, never on how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from broker import frames as fr
from broker.frames import FrameType
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.peers import raw_provider
from tests.support.rawclient import RawClient

MAX_PENDING = 64 * 1024
FLOOD = 256 * 1024 * 1024
#: kernel buffers on both hops (Linux autotunes a receive buffer up to tcp_rmem's maximum,
#: 32 MiB here, but only while the application keeps reading) plus the broker's own queue
STALL_BOUND = 48 * 1024 * 1024
CHUNK = fr.payload_frame(0, b"x" * 60_000)


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory.start("--max-pending-bytes", str(MAX_PENDING))


class Flood:
    """Sends one frame over and over as fast as the connection takes it (``RawClient.send``
    waits for the socket's write buffer to drain): by default PAYLOADs on ``stream_id``."""

    def __init__(self, client: RawClient, stream_id: int, frame: bytes | None = None) -> None:
        self.client = client
        self.frame = frame or fr.payload_frame(stream_id, CHUNK[6:])
        self.written = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self.written < FLOOD:
            await self.client.send(self.frame)
            self.written += len(self.frame)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def _stalled(flood: Flood, polls: int = 20) -> int:
    """Bytes written once the flood has made no progress for ``polls`` polls in a row."""
    last, same = -1, 0
    while same < polls:
        if flood.task.done():
            failure = flood.task.exception()
            assert failure is None, f"the connection failed during the flood: {failure!r}"
            raise AssertionError(f"the flood of {FLOOD} bytes went through: the broker buffered without bound")
        same = same + 1 if flood.written == last else 0
        last = flood.written
        await asyncio.sleep(0.05)
    return last


@pytest.mark.parametrize(
    ("provider_transport", "transport"), [("tcp", "tcp"), ("tcp", "ws"), ("ws", "tcp")], ids=["tcp", "tcp-to-ws", "ws-to-tcp"]
)
async def test_slow_requester_pauses_the_provider(
    node: BrokerProcess, service: str, provider_transport: str, transport: str
) -> None:
    provider = await raw_provider(
        node, [service], "flooder", provider_transport, sndbuf=MAX_PENDING if provider_transport == "tcp" else None
    )
    if transport == "tcp":
        requester = await RawClient.tcp(node.tcp, rcvbuf=MAX_PENDING)
    else:
        requester = await RawClient.ws(node.ws)
    await requester.setup()
    flood: Flood | None = None
    try:
        sid = await requester.request(FrameType.REQUEST_STREAM, f"{service}.flood", initial_n=1)
        request = await provider.expect(FrameType.REQUEST_STREAM)
        assert request.request_n == 1
        flood = Flood(provider, request.stream_id)
        stalled_at = await _stalled(flood)
        assert stalled_at < STALL_BOUND
        # the requester reads again: the frames arrive intact and the provider moves on
        while flood.written <= stalled_at + 4 * MAX_PENDING:
            frame = await requester.expect(FrameType.PAYLOAD, stream_id=sid)
            assert frame.data == CHUNK[6:]
        await requester.send(fr.cancel_frame(sid))
    finally:
        if flood is not None:
            await flood.stop()
        await requester.close()
        await provider.close()


async def test_provider_paused_longer_than_its_lifetime_is_not_dropped(node: BrokerProcess, service: str) -> None:
    """While the broker is not reading from a provider (back-pressure), the provider's
    keepalives cannot be seen; that silence is the broker's doing, not the provider's."""
    lifetime_ms = 1000
    # it keeps alive all along; during the pause its KEEPALIVEs wait in socket buffers
    provider = await raw_provider(
        node, [service], "patient", sndbuf=MAX_PENDING, keepalive_ms=100, max_lifetime_ms=lifetime_ms, keepalive_every_s=0.1
    )
    requester = await RawClient.tcp(node.tcp, rcvbuf=MAX_PENDING)
    await requester.setup()
    flood: Flood | None = None
    try:
        sid = await requester.request(FrameType.REQUEST_STREAM, f"{service}.flood", initial_n=1)
        request = await provider.expect(FrameType.REQUEST_STREAM)
        flood = Flood(provider, request.stream_id)
        # stalled for two of its lifetimes at least (polls of 50 ms)
        stalled_at = await _stalled(flood, polls=2 * lifetime_ms // 50)
        while flood.written <= stalled_at + 4 * MAX_PENDING:
            frame = await requester.expect(FrameType.PAYLOAD, stream_id=sid)
            assert frame.data == CHUNK[6:]
        await flood.stop()
        # the provider is still connected and served: its stream is still relayed
        await provider.send(fr.payload_frame(request.stream_id, b"", next_=False, complete=True))
        while True:
            frame = await requester.expect(FrameType.PAYLOAD, stream_id=sid)
            if frame.flags & fr.FLAG_COMPLETE:
                break
    finally:
        if flood is not None:
            await flood.stop()
        await requester.close()
        await provider.close()


async def test_hung_requester_is_dropped_and_its_provider_released(node: BrokerProcess, service: str) -> None:
    """A requester that stops reading and sending (a hung process) while a provider streams
    to it: the broker's output to it cannot drain, yet after its max lifetime it must be
    dropped, and the provider must get a CANCEL and be read from again.

    TCP and WebSocket requesters run side by side: the wait is mostly the broker's grace
    period for a closing connection, so together they cost the time of one.
    """
    await asyncio.gather(_hung_requester(node, f"{service}.tcp", "tcp"), _hung_requester(node, f"{service}.ws", "ws"))


async def _hung_requester(node: BrokerProcess, service: str, transport: str) -> None:
    provider = await raw_provider(node, [service], "streamer", sndbuf=MAX_PENDING)
    if transport == "tcp":
        requester = await RawClient.tcp(node.tcp, rcvbuf=MAX_PENDING)
    else:
        requester = await RawClient.ws(node.ws)
    await requester.setup(keepalive_ms=100, max_lifetime_ms=1000)
    requester.start_keepalive(0.1)
    flood: Flood | None = None
    try:
        await requester.request(FrameType.REQUEST_STREAM, f"{service}.flood", initial_n=1)
        request = await provider.expect(FrameType.REQUEST_STREAM)
        flood = Flood(provider, request.stream_id)
        await _stalled(flood)
        await requester.stop_keepalive()  # now it neither reads nor writes
        await provider.expect(FrameType.CANCEL, stream_id=request.stream_id)
        # the provider is read from again: its KEEPALIVE is answered once the flood drains
        await flood.stop()
        await provider.send(fr.keepalive_frame(True, b"free"))
        while True:
            frame = await provider.expect(FrameType.KEEPALIVE, skip=(FrameType.CANCEL,))
            if frame.raw[14:] == b"free":
                break
    finally:
        if flood is not None:
            await flood.stop()
        await requester.close()
        await provider.close()


async def test_client_that_asks_for_keepalives_but_never_reads_is_paused(node: BrokerProcess) -> None:
    """KEEPALIVE answers echo the request's data: a client sending big KEEPALIVEs with the
    respond flag and reading nothing must not make the broker queue the answers without bound."""
    client = await RawClient.tcp(node.tcp, sndbuf=MAX_PENDING, rcvbuf=MAX_PENDING)
    await client.setup()
    flood = Flood(client, 0, fr.keepalive_frame(True, CHUNK[6:]))
    try:
        stalled_at = await _stalled(flood)
        assert stalled_at < STALL_BOUND
        # it reads again: the answers come, intact, and its KEEPALIVEs are read again
        while flood.written <= stalled_at + 4 * MAX_PENDING:
            answer = await client.expect(FrameType.KEEPALIVE, skip=())
            assert not answer.flags & fr.FLAG_RESPOND and answer.raw[14:] == CHUNK[6:]
    finally:
        await flood.stop()
        await client.close()
