"""W3C trace context on relayed requests: read it, record one span per hop, keep the last few.

A requester that wants its request traced puts a composite metadata entry of type
:data:`TRACE_MIME` beside the route: UTF-8 JSON ``{"traceparent": "00-<trace id>-<span id>-<flags>",
"tracestate": "..."}`` (the W3C header values, https://www.w3.org/TR/trace-context/). The relay
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
import json
import os
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
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


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
    try:
        obj = json.loads(content)
        parent = _TRACEPARENT.match(obj["traceparent"])
        state = obj.get("tracestate", "")
    except (ValueError, KeyError, TypeError):
        return None
    if parent is None or not isinstance(state, str) or len(state) > 512:
        return None
    trace_id, parent_id, flags = parent.groups()
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return TraceContext(trace_id, parent_id, flags, state)


def entry(traceparent: str, tracestate: str = "") -> bytes:
    """The composite metadata entry a requester adds to be traced."""
    body: dict[str, str] = {"traceparent": traceparent}
    if tracestate:
        body["tracestate"] = tracestate
    return md.composite_entry(TRACE_MIME, json.dumps(body).encode())


class Tracer:
    """The last spans of each route label on this node."""

    def __init__(self, node_id: str, spans_kept: int) -> None:
        self.node_id = node_id
        self.spans_kept = spans_kept
        self.recent: dict[tuple[str, str], collections.deque[dict[str, Any]]] = {}

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
        spans.append(
            {
                "trace_id": trace.trace_id,
                "span_id": os.urandom(8).hex(),
                "parent_span_id": trace.parent_id,
                "tracestate": trace.state,
                "node": self.node_id,
                "route": st.route,
                "provider": trace.provider,
                "provider_node": trace.provider_node,
                "start": trace.started,
                "first_response_s": (st.first_at - st.opened_at) if st.first_at else None,
                "duration_s": now - st.opened_at,
                "outcome": OUTCOMES[outcome],
            }
        )

    def view(self, route: str | None = None) -> list[dict[str, Any]]:
        """Kept spans, newest last, of every route or of the route label ``route``."""
        return [
            span
            for (_, label), spans in sorted(self.recent.items())
            if route is None or label == route
            for span in spans
        ]
