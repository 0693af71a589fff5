"""OTLP export of hop spans (the ``otlp`` extra: ``pip install 'rsbroker[otlp]'``).

With ``--otlp-endpoint`` each hop span the tracer records is also sent to an OpenTelemetry
collector over OTLP/HTTP (protobuf), as a SERVER span whose parent is the span the request
came with: the requester's, or the previous node's hop span (``broker.tracing`` forwards each
hop's span id as the parent), so a tracing backend shows requester → node → node → provider. The OpenTelemetry SDK is optional: it is
imported only when an endpoint is configured, and the settings refuse the endpoint when the
packages are missing (:func:`missing`), so a node never starts without the export it was
asked for. Spans are queued and sent from a thread of the exporter's own (:class:`OtlpExport`):
the event loop never waits on the collector, and a slow or absent collector costs dropped
spans (a bounded queue), never relay time.
"""

from __future__ import annotations

import collections
import importlib.util
import threading
from typing import Any, Callable
from urllib.parse import urlsplit

#: the module the export needs; its absence is reported by :func:`missing`
_EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
INSTALL_HINT = "pip install 'rsbroker[otlp]'"
#: OTLP/HTTP path of traces, added to an endpoint given without a path (the collector's default)
TRACES_PATH = "/v1/traces"


def missing() -> bool:
    """True when the OpenTelemetry packages of the ``otlp`` extra are not installed."""
    try:
        return importlib.util.find_spec(_EXPORTER_MODULE) is None
    except ModuleNotFoundError:  # a parent package (opentelemetry.exporter...) is absent
        return True


def traces_url(endpoint: str) -> str:
    """The URL spans are POSTed to: ``endpoint`` itself, or its ``/v1/traces`` when it has no path."""
    return endpoint.rstrip("/") + TRACES_PATH if urlsplit(endpoint).path in ("", "/") else endpoint


#: spans waiting for the export thread; more are dropped (and counted) rather than held
QUEUE_LIMIT = 8192
#: most spans per OTLP request
BATCH = 512
#: how often the export thread sends what is queued, seconds
INTERVAL_S = 0.5
#: how long a node that stops waits for the last batch, seconds
CLOSE_TIMEOUT_S = 5.0


class OtlpExport:
    """Sends hop spans to one OTLP/HTTP endpoint from a thread of its own.

    The event loop only appends a span's tuple to a deque (:meth:`put`); the thread turns
    queued spans into OpenTelemetry spans (``describe`` gives their fields, as the admin API
    shows them) and sends them in batches, so neither building spans nor a slow collector
    costs relay time. A full queue drops new spans and counts them in ``dropped``.
    """

    def __init__(self, endpoint: str, node_id: str, describe: Callable[[Any], dict[str, Any]]) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

        self._span, self._context, self._flags, self._state = ReadableSpan, SpanContext, TraceFlags, TraceState
        self._kind = SpanKind.SERVER
        self._ok, self._error = Status(StatusCode.OK), Status(StatusCode.ERROR)
        self._resource = Resource.create({"service.name": "rsbroker", "service.instance.id": node_id})
        self._scope = InstrumentationScope("rsbroker.broker")
        self._exporter = OTLPSpanExporter(endpoint=traces_url(endpoint))
        self._describe = describe
        self._queue: collections.deque[Any] = collections.deque()
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rsbroker-otlp", daemon=True)
        self._thread.start()

    def put(self, span: Any) -> None:
        """Queue one kept span (called on the event loop: an append, nothing more)."""
        if len(self._queue) < QUEUE_LIMIT:
            self._queue.append(span)
        else:
            self.dropped += 1

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self._send()
        self._send()

    def _send(self) -> None:
        queue = self._queue
        while queue:
            batch = [self._otel_span(self._describe(queue.popleft())) for _ in range(min(BATCH, len(queue)))]
            self._exporter.export(batch)  # logs and drops a batch the collector refused

    def _otel_span(self, span: dict[str, Any]) -> Any:
        """The OpenTelemetry span of one hop span, as ``Tracer`` describes it (hex ids, seconds)."""
        trace_id, flags = int(span["trace_id"], 16), self._flags(int(span["trace_flags"], 16))
        state = self._state.from_header([span["tracestate"]]) if span["tracestate"] else None
        start = int(span["start"] * 1e9)
        attributes: dict[str, Any] = {
            "rsbroker.node": span["node"],
            "rsbroker.route": span["route"],
            "rsbroker.provider": span["provider"],
            "rsbroker.provider_node": span["provider_node"],
            "rsbroker.outcome": span["outcome"],
            "rsbroker.duration_s": span["duration_s"],
        }
        if span["first_response_s"] is not None:
            attributes["rsbroker.first_response_s"] = span["first_response_s"]
        return self._span(
            name=span["route"],
            context=self._context(trace_id, int(span["span_id"], 16), False, flags, state),
            parent=self._context(trace_id, int(span["parent_span_id"], 16), True, flags, state),
            resource=self._resource,
            attributes=attributes,
            kind=self._kind,
            status=self._ok if span["outcome"] == "ok" else self._error,
            start_time=start,
            end_time=start + int(span["duration_s"] * 1e9),
            instrumentation_scope=self._scope,
        )

    def close(self) -> None:
        """Send what is queued and stop the thread (blocks up to :data:`CLOSE_TIMEOUT_S`)."""
        self._stop.set()
        self._thread.join(CLOSE_TIMEOUT_S)
        self._exporter.shutdown()
