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
one walk over their metadata's entry headers (in the hot path); a malformed entry is ignored,
as the W3C specification asks, and never fails the request. A traced repeat opens from the
connection's route cache like any repeat, by its route key (``hotpath.trace_entry``: the
metadata without the entry's content, which differs every time).

Tracing is priced per request, so all of its per-request work is in the hot path
(``broker.hotpath``), and in the compiled one it is C with no Python call:

* ``trace_entry`` finds and checks the entry in one walk over the metadata's headers; the
  compiled ``_open`` walks the frame itself and makes the route key from it (one allocation and
  one hash, where an untraced repeat makes its metadata's bytes);
* ``trace_stream`` makes the stream carry its hop span: a copy of the entry's content (at most
  568 bytes; the compiled ``Stream`` holds a lone 55-byte ``traceparent`` in its own C field,
  with no object made), this hop's span id (a PRNG; splitmix64 in C in the compiled twin) and
  the provider;
* the parent id is written where the frame was queued in a length-prefixed (TCP) provider's
  ``wire_out``, or in a copy of the frame (``stamp_parent``) for a WebSocket provider and for a
  request kept to be retried;
* at its end, the stream itself is kept as the span (:meth:`Tracer.record`: its end time and
  outcome set, then put in its route label's ring, ``hotpath.SpanRing``, hung on the
  ``RouteMeter``; in the compiled twin a C ring the relay fills with no Python call). Nothing is
  decoded or built until the admin API asks or the OTLP export sends it; :meth:`Tracer.describe`
  is the one reader of a span's fields.

A kept span is an ended ``Stream``: besides its own small fields (route, times, the trace
content, span id) it holds its meter, the provider entry and both sessions, and a retried
request's kept frame (at most ``max_retry_frame_size``). At most ``trace_spans_kept`` of them
per route label, whose count ``broker.metering`` bounds; a closed TCP or WebSocket session lets
its buffers go when its connection is lost (``broker.transports``), so what a kept span pins of
a closed connection is the session object, not its traffic.

Spans nest: each node mints a span id for its hop and rewrites the 16 hex digits of the
forwarded ``traceparent``'s parent id to it (same length, nothing re-encoded), so the
provider's span is a child of the last node's hop span, which is a child of the node before
it, up to the requester's span.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from broker import metadata as md
from broker.metering import OUTCOMES

if TYPE_CHECKING:
    from broker.hotpath import SpanRing
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
#: where, in a trace entry's content, the ``traceparent``'s parent id lies (``00-<32 hex>-``)
PARENT_AT = 36

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
        #: kept spans (ended traced streams) by route meter (its service and route labels name them)
        self.recent: dict["RouteMeter", SpanRing] = {}

    def record(self, st: "Stream", outcome: int, now: float) -> None:
        """Keep the hop span of a traced stream that just ended (loop-time ``now``).

        The stream itself is the span: its ``trace``, ``span``, ``provider``, ``route`` and times
        (``hotpath.trace_stream``) plus the end set here; nothing is decoded until
        :meth:`describe`. The compiled hot path does the same for the commonest end (a last
        response frame) with C calls.
        """
        st.ended_at = now
        st.outcome = outcome
        meter: "RouteMeter" = st.meter  # type: ignore[assignment]
        (meter.spans if meter.spans is not None else self.ring(meter)).append(st)

    def ring(self, meter: "RouteMeter") -> "SpanRing":
        """The ring that keeps the last ``spans_kept`` spans of ``meter``'s route label, made on
        its first span and hung on the meter (``RouteMeter.spans``), where the hot path finds it
        with one attribute read. With an OTLP export, putting a span in it queues it there too."""
        from broker import hotpath  # not at the top: the hot path imports this module

        ring = hotpath.SpanRing(self.spans_kept, self.export)
        meter.spans = self.recent[meter] = ring
        return ring

    def view(self, route: str | None = None) -> list[dict[str, Any]]:
        """Kept spans, newest last, of every route or of the route label ``route``."""
        return [
            self.describe(span)
            for meter, spans in sorted(self.recent.items(), key=lambda item: (item[0].service, item[0].route))
            if route is None or meter.route == route
            for span in spans
        ]

    def describe(self, st: "Stream") -> dict[str, Any]:
        """One kept span (an ended traced stream) as the admin API and the OTLP export show it:
        the one place that reads a span's fields."""
        trace = TraceContext.of(st.trace)
        provider = st.provider
        opened = st.opened_at
        return {
            "trace_id": trace.trace_id,
            "span_id": f"{st.span:016x}",
            "parent_span_id": trace.parent_id,
            "trace_flags": trace.flags,
            "tracestate": trace.state,
            "node": self.node_id,
            "route": st.route,
            "provider": provider.instance,
            "provider_node": getattr(provider, "node", self.node_id),
            "start": time.time() - self.clock() + opened,  # loop clock to epoch seconds
            "first_response_s": st.first_at - opened if st.first_at else None,
            "duration_s": st.ended_at - opened,
            "outcome": OUTCOMES[st.outcome],
        }

