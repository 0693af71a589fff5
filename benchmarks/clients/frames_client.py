"""The frame-speaking load generator: RSocket without a client library, built not to be the bottleneck.

Requests are pre-built bytes that only need a stream id stamped in front; answers are read in
place from the receive buffer; every request an answer triggers is appended to one buffer
that goes out in a single write per read. One TCP connection carries all streams, as
RSocket intends.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time

from benchmarks import frames
from benchmarks.clients.window import Recorder, measure
from benchmarks.servers.common import split_address
from benchmarks.stats import Cell, Measurement

_TYPE_SHIFT = 10
_FIRST_STREAM = 1
#: open-loop sender tick, seconds; requests due within a tick leave together.
_RATE_TICK_S = 0.001
#: BENCH_TRACE=1: every request-response carries a W3C trace entry with its own span id, as
#: traced traffic does (for the tracing overhead figure; the broker's route cache cannot help)
TRACE_ENV = "BENCH_TRACE"


class FrameLoad(frames.FrameProtocol):
    """One requester connection; what it sends depends on the cell's scenario."""

    def __init__(self, cell: Cell, recorder: Recorder) -> None:
        super().__init__()
        self.cell = cell
        self.recorder = recorder
        data = bytes(cell.payload_bytes)
        routing = frames.routing_metadata()
        if os.environ.get(TRACE_ENV) == "1":
            routing += frames.trace_metadata()
        stream_body = frames.request_body(frames.REQUEST_STREAM, data, routing, cell.inflight)
        self._stream_request = (len(stream_body) + 4).to_bytes(3, "big"), stream_body
        body = frames.request_body(
            frames.REQUEST_FNF if cell.scenario == "fire-and-forget" else frames.REQUEST_RESPONSE, data, routing
        )
        self._prefix = (len(body) + 4).to_bytes(3, "big")
        self._body = body
        span_at = body.find(frames.SPAN_PLACEHOLDER)
        #: where each request's own span id goes, and the ids (None: requests are not traced)
        self._span = (span_at, itertools.count(1)) if span_at >= 0 else None
        probe = frames.request_body(frames.REQUEST_RESPONSE, b"", routing)
        self._probe = (len(probe) + 4).to_bytes(3, "big"), probe
        self._next_id = _FIRST_STREAM
        #: request-response: stream id -> time the request was due
        self._pending: dict[int, float] = {}
        self._probe_waiters: dict[int, asyncio.Future[str | None]] = {}
        self._streaming = cell.scenario == "request-stream"
        self._credit = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.out += frames.tcp(frames.setup(self.keepalive_ms, self.lifetime_ms))

    def _stamp(self, prefix: bytes, body: bytes) -> int:
        """Append one request with the next client stream id (odd, increasing; never reused)."""
        stream_id = self._next_id
        self._next_id += 2
        out = self.out
        out += prefix
        out += stream_id.to_bytes(4, "big")
        out += body
        return stream_id

    # request-response
    def send_request(self, due: float) -> None:
        """Queue one request-response; its latency counts from ``due``."""
        body = self._body
        if self._span is not None:
            at, ids = self._span
            body = body[:at] + b"%016x" % next(ids) + body[at + 16 :]
        self._pending[self._stamp(self._prefix, body)] = due

    # request-stream
    def start_stream(self) -> None:
        self._credit = self.cell.inflight
        self._stamp(*self._stream_request)
        self.flush()

    # fire-and-forget
    def send_batch(self) -> None:
        prefix, body = self._prefix, self._body
        for _ in range(self.cell.inflight):
            self._stamp(prefix, body)
        if self.recorder.recording:
            self.recorder.count += self.cell.inflight
        self.flush()

    def probe(self) -> asyncio.Future[str | None]:
        """A request-response whose answer proves every frame sent before it was handled.

        The future holds None for a PAYLOAD answer, or the ERROR frame's code and message.
        """
        waiter: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._probe_waiters[self._stamp(*self._probe)] = waiter
        self.flush()
        return waiter

    def frame_received(self, buf: bytearray, start: int, end: int) -> None:
        stream_id, type_flags = frames.HEADER.unpack_from(buf, start)
        frame_type = type_flags >> _TYPE_SHIFT
        if frame_type == frames.PAYLOAD:
            due = self._pending.pop(stream_id, None)
            if due is not None:
                self.recorder.done(self.now - due)
                if self.cell.rate is None:
                    self.send_request(self.now)
            elif self._streaming:
                self._stream_item(stream_id)
            else:
                self._answer_probe(stream_id, None)
        elif frame_type == frames.ERROR:
            if stream_id == 0:
                self.connection_frame(frame_type, type_flags & 0x3FF, buf, start, end)
                return
            if self._pending.pop(stream_id, None) is not None and self.cell.rate is None:
                self.send_request(self.now)
            code = int.from_bytes(buf[start + 6 : start + 10], "big")
            self._answer_probe(stream_id, f"ERROR 0x{code:X}: {bytes(buf[start + 10 : end]).decode(errors='replace')}")
            if self.recorder.recording:
                self.recorder.errors += 1
        elif stream_id == 0:
            self.connection_frame(frame_type, type_flags & 0x3FF, buf, start, end)

    def _stream_item(self, stream_id: int) -> None:
        recorder = self.recorder
        if recorder.recording:
            recorder.count += 1
        self._credit -= 1
        inflight = self.cell.inflight
        if self._credit <= inflight // 2:
            grant = inflight - self._credit
            self._credit = inflight
            self.out += frames.tcp(frames.request_n(stream_id, grant))

    def _answer_probe(self, stream_id: int, error: str | None) -> None:
        waiter = self._probe_waiters.pop(stream_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(error)


async def _open_loop(load: FrameLoad) -> None:
    """Send request-responses at ``cell.rate`` per second, each stamped with the time it was due."""
    rate = load.cell.rate
    assert rate is not None
    started = time.perf_counter()
    sent = 0
    while load.is_open:
        now = time.perf_counter()
        due = int((now - started) * rate) + 1  # request k is due at started + k / rate
        while sent < due:
            load.send_request(started + sent / rate)
            sent += 1
        load.flush()
        await asyncio.sleep(_RATE_TICK_S)


async def _fire_and_forget(load: FrameLoad) -> None:
    while load.recorder.sending and load.is_open:
        await load.writable()
        load.send_batch()
        await asyncio.sleep(0)


async def run_cell(target: str, cell: Cell, watch: dict[str, int]) -> Measurement:
    host, port = split_address(target)
    recorder = Recorder()
    transport, load = await asyncio.get_running_loop().create_connection(
        lambda: FrameLoad(cell, recorder), host, port
    )
    sender: asyncio.Task[None] | None = None
    try:
        if cell.scenario == "request-stream":
            load.start_stream()
            return await measure(cell, recorder, watch)
        if cell.scenario == "fire-and-forget":
            batches = sender = asyncio.ensure_future(_fire_and_forget(load))

            async def drain() -> None:
                await batches
                await load.probe()

            return await measure(cell, recorder, watch, drain)
        if cell.rate is not None:
            sender = asyncio.ensure_future(_open_loop(load))
        else:
            now = time.perf_counter()
            for _ in range(cell.inflight):
                load.send_request(now)
            load.flush()
        return await measure(cell, recorder, watch)
    finally:
        if sender is not None:
            sender.cancel()
        transport.close()


class RouteUnavailable(RuntimeError):
    """No answer came for :data:`frames.ROUTE` through the target in time."""


async def wait_for_route(target: str, timeout_s: float, retry_s: float = 0.1) -> None:
    """Ask ``target`` for :data:`frames.ROUTE` until a provider answers; a broker learns routes asynchronously."""
    host, port = split_address(target)
    cell = Cell("request-response", 1, 0, 0.0, 1.0)
    transport, load = await asyncio.get_running_loop().create_connection(
        lambda: FrameLoad(cell, Recorder()), host, port
    )
    deadline = time.monotonic() + timeout_s
    last = "no answer: neither PAYLOAD nor ERROR came back"
    try:
        while time.monotonic() < deadline:
            try:
                answer = await asyncio.wait_for(load.probe(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            if answer is None:
                return
            last = answer
            await asyncio.sleep(retry_s)
        raise RouteUnavailable(f"no answer for route {frames.ROUTE!r} via {target} within {timeout_s:.0f} s ({last})")
    finally:
        transport.close()
