"""W3C trace context on relayed requests: read it, record one span per hop, keep the last few.

A requester that wants its request traced puts a composite metadata entry of type
:data:`TRACE_MIME` beside the route: the W3C ``traceparent`` value (``00-<trace id>-<span id>-<flags>``),
then, optionally, a newline and the ``tracestate`` value, ASCII (https://www.w3.org/TR/trace-context/);
plain text rather than JSON because it is read on every traced request. The relay
forwards the entry with only its parent id changed (see below), so the provider (and the next
node, over a broker link) joins the same trace.

A span here is one hop through one node: route, the provider chosen, time to the first
response and to the end, and the outcome. The last ``trace_spans_kept`` spans per route label
(the bounded labels of ``broker.metering``) are kept in memory for the admin API and, with
``--otlp-endpoint``, exported over OTLP (``broker.otlp``). Requests without the entry cost
one walk over their metadata's entry headers (in the hot path), and repeats of a route
none (the connection's route cache answers them first); a malformed entry is ignored, as the W3C
specification asks, and never fails the request. A traced repeat opens from the route cache too,
by its route key: its costs are :meth:`Tracer.context`, the stamped copy and :meth:`Tracer.record`.

Tracing is priced per request, so the relay's part is kept to checks and tuples, and the
byte work is in the hot path (``broker.hotpath``): ``trace_entry`` finds and checks the entry in
one walk over the metadata's headers (and gives the route cache a key without the entry's
content), and ``stamp_parent`` copies the request frame with the parent id rewritten. A span
is one tuple appended to a bounded deque; ids and times are decoded only when the admin API
asks or a span is exported.

Spans nest: each node mints a span id for its hop and rewrites the 16 hex digits of the
forwarded ``traceparent``'s parent id to it (same length, in the copy of the frame that goes
out), so the provider's span is a child of the last node's hop span, which is a child of the
node before it, up to the requester's span.
"""

from __future__ import annotations

import collections
import os
import random
import re
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from broker import metadata as md
from broker.metering import OUTCOMES

if TYPE_CHECKING:
    from broker.metering import RouteMeter
    from broker.otlp import OtlpExport
    from broker.session import Stream

TRACE_MIME = "message/x.rsbroker.trace-context.v0"
#: the entry's MIME type as it is sent (a custom MIME in composite metadata), which the hot path looks for
MARKER = TRACE_MIME.encode("ascii")
_MAX_TRACESTATE = 512
#: ``traceparent`` (lower-case hex, W3C version 00; all-zero ids are invalid, section 3.2.2.3),
#: then optionally a newline and a printable ASCII ``tracestate``: the whole entry, one match
ENTRY = re.compile(
    rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(?:\n[\x20-\x7e]{0,%d})?" % _MAX_TRACESTATE
)
#: span ids must not collide across nodes and restarts, but need not be secret: a PRNG seeded
#: from os.urandom (never the time, which two nodes started together share) is ten times
#: cheaper than reading os.urandom per span; a forked child reseeds, or it would repeat its parent's ids
_span_rng = random.Random(os.urandom(32))
_span_ids = _span_rng.getrandbits
os.register_at_fork(after_in_child=lambda: _span_rng.seed(os.urandom(32)))

#: where, in a trace entry's content, the ``traceparent``'s parent id lies (``00-<32 hex>-``)
PARENT_AT = 36

#: a traced stream's context as the relay keeps it: (the request's metadata, where the
#: requester's parent id lies in it, this hop's span id, the provider chosen); see
#: :class:`TraceContext` for what the entry says. The provider's names are read only when the
#: span is looked at (its ``instance`` is a property): a kept span holds the provider object
#: until it leaves the ring, at most ``trace_spans_kept`` spans per route label.
HopContext = tuple[bytes, int, int, Any]


class TraceContext(NamedTuple):
    """The requester's trace context, decoded from a checked trace entry."""

    trace_id: str
    parent_id: str
    flags: str
    state: str

    @classmethod
    def of(cls, content: bytes) -> "TraceContext":
        text = content.decode("ascii")  # checked by ``ENTRY``: ASCII only
        return cls(text[3:35], text[36:52], text[53:55], text[56:])


def entry(traceparent: str, tracestate: str = "") -> bytes:
    """The composite metadata entry a requester adds to be traced."""
    content = traceparent + ("\n" + tracestate if tracestate else "")
    return md.composite_entry(TRACE_MIME, content.encode("ascii"))


#: what is kept of a span until it is looked at: (context, route, opened at, first response
#: at or 0, ended at (loop clock), outcome)
_Kept = tuple[HopContext, str, float, float, float, int]


class Tracer:
    """The last spans of each route label on this node."""

    def __init__(self, node_id: str, spans_kept: int, clock: Callable[[], float], otlp_endpoint: str | None = None) -> None:
        self.node_id = node_id
        self.spans_kept = spans_kept
        #: the relay's loop clock (monotonic, readable from any thread), which stream times are read from
        self.clock = clock
        #: where spans also go when an OTLP endpoint is configured (the otlp extra, imported only then)
        self.export: "OtlpExport | None" = None
        if otlp_endpoint:
            from broker import otlp

            self.export = otlp.OtlpExport(otlp_endpoint, node_id, self.describe)
        #: kept spans by route meter (its service and route labels name them)
        self.recent: dict["RouteMeter", collections.deque[_Kept]] = {}

    def context(self, metadata: bytes, at: int, provider: Any) -> HopContext | None:
        """The context of a request whose metadata holds a checked trace entry with its content
        at ``at`` (``hotpath.trace_entry`` found it in the same walk that gave the route key),
        going to ``provider``, with a new span id for this hop; None when tracing is off."""
        if not self.spans_kept:
            return None
        return metadata, at + PARENT_AT, _span_ids(64) or 1, provider

    def record(self, st: "Stream", outcome: int, now: float) -> None:
        """The hop span of a stream that just ended (loop-time ``now``)."""
        meter = st.meter
        spans = self.recent.get(meter)  # type: ignore[arg-type]
        if spans is None:
            spans = self.recent[meter] = collections.deque(maxlen=self.spans_kept)  # type: ignore[index]
        span = (st.trace, st.route, st.opened_at, st.first_at, now, outcome)
        spans.append(span)  # type: ignore[arg-type]
        if self.export is not None:
            self.export.put(span)

    def view(self, route: str | None = None) -> list[dict[str, Any]]:
        """Kept spans, newest last, of every route or of the route label ``route``."""
        return [
            self.describe(span)
            for meter, spans in sorted(self.recent.items(), key=lambda item: (item[0].service, item[0].route))
            if route is None or meter.route == route
            for span in spans
        ]

    def describe(self, span: _Kept) -> dict[str, Any]:
        """One kept span as the admin API and the OTLP export show it."""
        (metadata, parent_at, span_id, provider), full_route, opened, first_at, ended, outcome = span
        at = parent_at - PARENT_AT
        trace = TraceContext.of(metadata[at : at + int.from_bytes(metadata[at - 3 : at], "big")])
        return {
            "trace_id": trace.trace_id,
            "span_id": f"{span_id:016x}",
            "parent_span_id": trace.parent_id,
            "trace_flags": trace.flags,
            "tracestate": trace.state,
            "node": self.node_id,
            "route": full_route,
            "provider": provider.instance,
            "provider_node": getattr(provider, "node", self.node_id),
            "start": time.time() - self.clock() + opened,  # loop clock to epoch seconds
            "first_response_s": first_at - opened if first_at else None,
            "duration_s": ended - opened,
            "outcome": OUTCOMES[outcome],
        }
