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
(the bounded labels of ``broker.metering``) are kept in memory for the admin API and, with
``--otlp-endpoint``, exported over OTLP (``broker.otlp``). Requests without the entry cost
one substring test of their metadata; a malformed entry is ignored, as the W3C
specification asks, and never fails the request.

Tracing is priced per request, so the relay's part is kept to checks and tuples: the relay
finds the entry in the same pass that finds the route (``Broker.resolve``), the entry is
checked with one regular expression and kept as the bytes it came in, and a span is one
tuple appended to a bounded deque; ids and times are decoded only when the admin API asks
or a span is exported.
"""

from __future__ import annotations

import collections
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
#: what a request's metadata must contain to be looked at further (the entry's MIME, as sent)
MARKER = TRACE_MIME.encode("ascii")
_MAX_TRACESTATE = 512
#: ``traceparent`` (lower-case hex, W3C version 00; all-zero ids are invalid, section 3.2.2.3),
#: then optionally a newline and a printable ASCII ``tracestate``: the whole entry, one match
_ENTRY = re.compile(
    rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(?:\n[\x20-\x7e]{0,%d})?" % _MAX_TRACESTATE
)
#: span ids need to be unique, not secret: a seeded PRNG is ten times cheaper than os.urandom
_span_ids = random.Random()

#: a traced stream's context as the relay keeps it: (trace entry content, provider instance,
#: provider node); see :class:`TraceContext` for what the entry says
HopContext = tuple[bytes, str, str]


class TraceContext(NamedTuple):
    """The requester's trace context, decoded from a checked trace entry."""

    trace_id: str
    parent_id: str
    flags: str
    state: str

    @classmethod
    def of(cls, content: bytes) -> "TraceContext":
        text = content.decode("ascii")  # checked by ``_ENTRY``: ASCII only
        return cls(text[3:35], text[36:52], text[53:55], text[56:])


def entry(traceparent: str, tracestate: str = "") -> bytes:
    """The composite metadata entry a requester adds to be traced."""
    content = traceparent + ("\n" + tracestate if tracestate else "")
    return md.composite_entry(TRACE_MIME, content.encode("ascii"))


#: what is kept of a span until it is looked at: (context, span id, route, opened at,
#: first response at or 0, ended at (loop clock), outcome)
_Kept = tuple[HopContext, int, str, float, float, float, int]


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

    def context(self, content: bytes, provider: Any) -> HopContext | None:
        """The context of a request whose trace entry holds ``content`` (found by the relay in
        the same pass that finds its route), going to ``provider``; None when tracing is off
        or the entry is malformed."""
        if not self.spans_kept or _ENTRY.fullmatch(content) is None:
            return None
        return content, provider.instance, getattr(provider, "node", self.node_id)

    def record(self, st: "Stream", outcome: int, now: float) -> None:
        """The hop span of a stream that just ended (loop-time ``now``)."""
        trace, meter = st.trace, st.meter
        assert trace is not None and meter is not None
        spans = self.recent.get(meter)
        if spans is None:
            spans = self.recent[meter] = collections.deque(maxlen=self.spans_kept)
        span = (trace, _span_ids.getrandbits(64) or 1, st.route, st.opened_at, st.first_at, now, outcome)
        spans.append(span)
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
        (content, provider, provider_node), span_id, full_route, opened, first_at, ended, outcome = span
        trace = TraceContext.of(content)
        return {
            "trace_id": trace.trace_id,
            "span_id": f"{span_id:016x}",
            "parent_span_id": trace.parent_id,
            "trace_flags": trace.flags,
            "tracestate": trace.state,
            "node": self.node_id,
            "route": full_route,
            "provider": provider,
            "provider_node": provider_node,
            "start": time.time() - self.clock() + opened,  # loop clock to epoch seconds
            "first_response_s": first_at - opened if first_at else None,
            "duration_s": ended - opened,
            "outcome": OUTCOMES[outcome],
        }
