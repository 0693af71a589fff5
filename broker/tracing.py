"""W3C trace context on relayed requests: read it, record one span per hop, keep the last few.

A requester that wants its request traced puts a composite metadata entry of type
:data:`TRACE_MIME` beside the route: the W3C ``traceparent`` value (``00-<trace id>-<span id>-<flags>``),
then, optionally, a newline and the ``tracestate`` value, ASCII (https://www.w3.org/TR/trace-context/);
plain text rather than JSON because it is read on every traced request. The relay
forwards request frames unchanged, so the provider (and the next node, over a broker link)
sees the same entry and its spans join the same trace; each node records its own hop span as a
child of the requester's span.

A span here is one hop through one node: route, the provider chosen, time to the first
response and to the end, and the outcome. The last ``trace_spans_kept`` spans per route label
(the bounded labels of ``broker.metering``) are kept in memory for the admin API. Requests
without the entry cost one substring test of their metadata; a malformed entry is ignored,
as the W3C specification asks, and never fails the request.
"""

from __future__ import annotations

import collections
import random
import re
import time
from typing import TYPE_CHECKING, Any

from broker import metadata as md
from broker.frames import FrameError
from broker.metering import OUTCOMES

if TYPE_CHECKING:
    from broker.session import Stream

TRACE_MIME = "message/x.rsbroker.trace-context.v0"
#: what a request's metadata must contain to be looked at further (the entry's MIME, as sent)
MARKER = TRACE_MIME.encode("ascii")
_TRACEPARENT = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_MAX_TRACESTATE = 512
#: all-zero ids are invalid (W3C trace-context, section 3.2.2.3)
_NO_TRACE, _NO_SPAN = "0" * 32, "0" * 16
#: span ids need to be unique, not secret: a seeded PRNG is ten times cheaper than os.urandom
_span_ids = random.Random()


class TraceContext:
    """The requester's trace context of one stream."""

    __slots__ = ("trace_id", "parent_id", "flags", "state", "started", "provider", "provider_node")

    def __init__(self, trace_id: str, parent_id: str, flags: str, state: str) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.flags = flags
        self.state = state
        #: wall-clock start (epoch seconds), for the span's timestamp
        self.started = time.time()
        #: the provider the relay chose: its instance and the node it is connected to
        self.provider = ""
        self.provider_node = ""


def parse(content: bytes) -> TraceContext | None:
    """The context in a trace entry, or None when it is malformed (then the request is untraced)."""
    parent_text, _, state = content.partition(b"\n")
    parent = _TRACEPARENT.fullmatch(parent_text)
    if parent is None or len(state) > _MAX_TRACESTATE or not state.isascii():
        return None
    text = parent_text.decode()  # 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, checked above
    trace_id, parent_id = text[3:35], text[36:52]
    if trace_id == _NO_TRACE or parent_id == _NO_SPAN:
        return None
    return TraceContext(trace_id, parent_id, text[53:55], state.decode() if state else "")


def entry(traceparent: str, tracestate: str = "") -> bytes:
    """The composite metadata entry a requester adds to be traced."""
    content = traceparent + ("\n" + tracestate if tracestate else "")
    return md.composite_entry(TRACE_MIME, content.encode("ascii"))


#: what is kept of a span until the admin API asks: (context, span id, route, first response s, duration s, outcome)
_Kept = tuple[TraceContext, int, str, "float | None", float, int]


class Tracer:
    """The last spans of each route label on this node."""

    def __init__(self, node_id: str, spans_kept: int) -> None:
        self.node_id = node_id
        self.spans_kept = spans_kept
        self.recent: dict[tuple[str, str], collections.deque[_Kept]] = {}

    def context(self, metadata: bytes, provider: Any) -> TraceContext | None:
        """The trace context of a request going to ``provider``, if it carries one and tracing is on."""
        if not self.spans_kept or MARKER not in metadata:
            return None
        try:
            content = md.find_entry(metadata, TRACE_MIME)
        except FrameError:
            return None
        trace = parse(content) if content is not None else None
        if trace is not None:
            trace.provider = provider.instance
            trace.provider_node = getattr(provider, "node", self.node_id)
        return trace

    def record(self, st: "Stream", outcome: int, now: float) -> None:
        """The hop span of a stream that just ended (loop-time ``now``)."""
        trace, meter = st.trace, st.meter
        assert trace is not None and meter is not None
        spans = self.recent.get((meter.service, meter.route))
        if spans is None:
            spans = self.recent[(meter.service, meter.route)] = collections.deque(maxlen=self.spans_kept)
        first = st.first_at - st.opened_at if st.first_at else None
        spans.append((trace, _span_ids.getrandbits(64) or 1, st.route, first, now - st.opened_at, outcome))

    def view(self, route: str | None = None) -> list[dict[str, Any]]:
        """Kept spans, newest last, of every route or of the route label ``route``."""
        return [
            {
                "trace_id": trace.trace_id,
                "span_id": f"{span_id:016x}",
                "parent_span_id": trace.parent_id,
                "trace_flags": trace.flags,
                "tracestate": trace.state,
                "node": self.node_id,
                "route": full_route,
                "provider": trace.provider,
                "provider_node": trace.provider_node,
                "start": trace.started,
                "first_response_s": first,
                "duration_s": duration,
                "outcome": OUTCOMES[outcome],
            }
            for (_, label), spans in sorted(self.recent.items())
            if route is None or label == route
            for trace, span_id, full_route, first, duration, outcome in spans
        ]
