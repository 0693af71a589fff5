"""What a kept trace span is and holds: the ended ``Stream`` itself (broker.tracing), on each hot path.

A span is described from the stream's fields alone (``Tracer.describe``), at most
``trace_spans_kept`` of them per route label are kept, and a kept one holds the trace entry's
content, never the request's frame or payload; a session a kept span names lets its buffers go
once its connection is lost.
"""

from __future__ import annotations

import asyncio
import gc
import time
from types import ModuleType

import pytest

from broker import frames as fr
from broker import metadata as md
from broker import tracing
from broker.frames import FrameType
from broker.relay import Broker
from broker.session import State
from broker.settings import Settings
from broker.transports import TcpSession
from tests.relay.test_hotpath import _use
from tests.relay.test_parsers_fuzz import HOT_PATHS
from tests.support.admin import wait_for
from tests.support.memory_session import MemorySession

KEPT = 3
#: what the requester's trace entry holds (the W3C maximum is 568 bytes: traceparent, newline, 512)
STATE = "k=" + "v" * 500
#: each request carries this much data: a span that held the frame would hold it too
DATA = b"d" * 8192


def _traced(sid: int) -> bytes:
    return md.route_metadata("svc.m") + tracing.entry(f"00-{'ab' * 16}-{sid:016x}-01", STATE)


@pytest.mark.parametrize("coalesce", [False, True], ids=["whole", "wire_out"])
@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_kept_spans_describe_their_hop_and_hold_no_frame(hot: ModuleType, monkeypatch: pytest.MonkeyPatch, coalesce: bool) -> None:
    """Five traced request-responses (the first through the full path, the rest from the route
    cache): the last three are kept, each described with the requester's trace context, the span
    id the provider got as its parent, the provider and the times the relay's clock read; each
    kept stream references no bytes longer than the trace entry's content."""
    _use(hot, monkeypatch)
    loop = asyncio.new_event_loop()
    try:
        broker = Broker(Settings(trace_spans_kept=KEPT), loop)
        now = [10.0]
        broker.clock = broker.tracer.clock = lambda: now[0]
        provider, requester = MemorySession(broker, 45000, coalesce), MemorySession(broker, 45001, coalesce)
        reg = md.Registration(services=("svc",), instance="p")
        provider.feed(fr.setup_frame(metadata=md.composite_entry(md.REGISTER_MIME, reg.to_json())))
        requester.feed(fr.setup_frame())
        parents: dict[str, str] = {}  # hop span id -> the parent id the requester sent
        for i, sid in enumerate(range(1, 11, 2)):
            now[0] = 10.0 + i
            requester.feed(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, _traced(sid), DATA))
            [got] = provider.take()
            content = md.find_entry(hot.request_metadata(got.raw, 0, len(got.raw))[0], tracing.TRACE_MIME)
            assert content is not None
            parents[tracing.TraceContext.of(content).parent_id] = f"{sid:016x}"
            now[0] += 0.25
            provider.feed(fr.payload_frame(got.stream_id, b"a", complete=True))
            assert [f.data for f in requester.take()] == [b"a"]

        spans = broker.tracer.view("svc.m")
        assert len(spans) == KEPT
        for i, span in zip(range(2, 5), spans):
            start = span.pop("start")
            assert abs(start - (time.time() - now[0] + 10.0 + i)) < 5.0  # loop time read as epoch seconds
            assert span == {
                "trace_id": "ab" * 16,
                "span_id": span["span_id"],
                "parent_span_id": f"{2 * i + 1:016x}",
                "trace_flags": "01",
                "tracestate": STATE,
                "node": broker.tracer.node_id,
                "route": "svc.m",
                "provider": "p",
                "provider_node": broker.tracer.node_id,
                "first_response_s": 0.25,
                "duration_s": 0.25,
                "outcome": "ok",
            }
            assert parents[span["span_id"]] == span["parent_span_id"]  # the provider's parent is this hop

        [ring] = broker.tracer.recent.values()
        assert len(ring) == KEPT and all(type(st) is hot.Stream for st in ring)
        content_len = len(md.find_entry(_traced(1), tracing.TRACE_MIME) or b"")
        for st in ring:
            held = [len(r) for r in gc.get_referents(st) if isinstance(r, (bytes, bytearray, memoryview))]
            assert max(held) == content_len < len(DATA)
    finally:
        loop.close()


def test_a_closed_tcp_session_lets_its_buffers_go() -> None:
    """A kept span names the sessions of its stream after their connections close; such a session
    then holds nothing of its traffic (here: the first bytes of a frame still being received)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        broker = Broker(Settings(), loop)
        server = await loop.create_server(lambda: TcpSession(broker), "127.0.0.1", 0)
        try:
            port = server.sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write((300).to_bytes(3, "big") + b"x" * 100)  # a frame of 300 bytes, 100 of them sent
            await writer.drain()
            session = await wait_for(lambda: next(iter(broker.sessions), None), message="the connection accepted")
            await wait_for(lambda: len(session._buf) == 103, message="the partial frame held")
            writer.close()
            await wait_for(lambda: session.state is State.CLOSED, message="the connection closed")
            assert not session._buf and not session.wire_out
        finally:
            server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("kept", [1, 3])
def test_a_span_ring_keeps_the_last_spans_oldest_first_and_exports_every_one(hot: ModuleType, kept: int) -> None:
    """``SpanRing`` (the C ring the compiled relay fills, and its pure twin): bounded at ``kept``,
    iterated oldest first at every fill, and every span put in it also goes to the export."""

    class Export:
        def __init__(self) -> None:
            self.got: list[object] = []

        def put(self, span: object) -> None:
            self.got.append(span)

    export = Export()
    ring, plain = hot.SpanRing(kept, export), hot.SpanRing(kept)
    spans = [hot.Stream(FrameType.REQUEST_RESPONSE, None, sid) for sid in range(1, 16, 2)]
    for i, span in enumerate(spans):
        ring.append(span)
        plain.append(span)
        assert list(ring) == list(plain) == spans[max(0, i + 1 - kept) : i + 1]
        assert len(ring) == min(i + 1, kept)
    assert export.got == spans
    with pytest.raises(ValueError, match="at least one span"):
        hot.SpanRing(0)
