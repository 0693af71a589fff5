"""Per-route request metering for the relay: plain counters and bucket arrays, no locks.

The relay meters every stream: one :class:`RouteMeter` is looked up when a stream opens
(a dict hit per request), and the frames of the stream only add to integer attributes.
Nothing here imports prometheus-client: the admin package turns these numbers into metric
families when Prometheus scrapes (``admin/metrics.py``), so the per-frame cost stays an
attribute increment.

Cardinality is bounded here, not at scrape time: services whose name starts with one of
``metrics_aggregate_prefixes`` share one meter per prefix (thousands of one-instance device
services become ``device.*``), a service keeps at most ``metrics_max_routes_per_service``
route labels (later routes fold into ``other``), and at most ``metrics_max_services``
service labels exist (later services fold into ``other``).
"""

from __future__ import annotations

import collections
from bisect import bisect_left
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

if TYPE_CHECKING:
    from broker.hotpath import SpanRing

#: Stream outcomes, in the order of ``RouteMeter.outcomes``. Append-only: the index is stored.
OUTCOMES = ("ok", "application_error", "rejected", "canceled", "timeout")
OK, APPLICATION_ERROR, REJECTED, CANCELED, TIMEOUT = range(len(OUTCOMES))

#: Latency bucket upper bounds, seconds: 0.5 ms (a loopback hop) to 30 s (a long stream).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Label of the routes and services folded together once their cap is reached.
OTHER = "other"
#: Service (and route) label of requests refused before their route was read: no route, a limit.
UNROUTED = "unrouted"
#: Routes remembered per exact route text before the lookup cache is cleared (memory bound).
_CACHE_SIZE = 4096


class Histogram:
    """Bucket counts (not cumulative; the last slot is +Inf) and the sum, in seconds."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (Prometheus 'le').
        self.counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.total += seconds


class RouteMeter:
    """Numbers for one (service label, route label) pair."""

    __slots__ = ("service", "route", "inflight", "bytes_in", "bytes_out", "outcomes", "first", "complete", "spans")

    def __init__(self, service: str, route: str) -> None:
        self.service = service
        self.route = route
        self.inflight = 0
        #: payload bytes requester → provider and provider → requester (frame headers included)
        self.bytes_in = 0
        self.bytes_out = 0
        self.outcomes = [0] * len(OUTCOMES)
        #: latency to the first response frame and to the end of the stream, per outcome
        self.first: list[Histogram | None] = [None] * len(OUTCOMES)
        self.complete: list[Histogram | None] = [None] * len(OUTCOMES)
        #: the last hop spans of this label (``broker.tracing.Tracer.ring``), made on its first
        #: traced request: here, the relay's hot path reaches them with one attribute read
        self.spans: "SpanRing | None" = None

    def ended(self, outcome: int, opened_at: float, first_at: float, now: float) -> None:
        """A stream that opened at ``opened_at`` ended; ``first_at`` is 0 when no response came.

        The observations are inlined (no ``Histogram.observe`` calls): this runs once per
        request, and a request costs the relay only a few microseconds in all.
        """
        self.inflight -= 1
        self.outcomes[outcome] += 1
        elapsed = now - opened_at
        hist = self.complete[outcome] or self._new(self.complete, outcome)
        index = bisect_left(LATENCY_BUCKETS_S, elapsed)
        hist.counts[index] += 1
        hist.total += elapsed
        if first_at:
            hist = self.first[outcome] or self._new(self.first, outcome)
            if first_at != now:  # a request-response's first frame is its last: same bucket
                elapsed = first_at - opened_at
                index = bisect_left(LATENCY_BUCKETS_S, elapsed)
            hist.counts[index] += 1
            hist.total += elapsed

    @staticmethod
    def _new(slots: list[Histogram | None], outcome: int) -> Histogram:
        hist = slots[outcome] = Histogram()
        return hist


class Metering:
    """Every route meter of one node, with the counters that have a bounded label of their own."""

    def __init__(
        self,
        clock: Callable[[], float],
        max_routes_per_service: int,
        max_services: int,
        aggregate_prefixes: Sequence[str],
    ) -> None:
        self.clock = clock
        self.max_routes_per_service = max_routes_per_service
        self.max_services = max_services
        self.aggregate_prefixes = tuple(aggregate_prefixes)
        self._services: dict[str, dict[str, RouteMeter]] = {}
        self._by_route: dict[str, RouteMeter] = {}
        #: SETUPs refused, by the ERROR code name sent (REJECTED_SETUP, INVALID_SETUP, ...)
        self.setups_refused: collections.Counter[str] = collections.Counter()
        self.setups_accepted = 0
        #: requests, connections or frames refused by a configured limit, by the setting's name
        self.limit_hits: collections.Counter[str] = collections.Counter()

    def route(self, route: str, service: str) -> RouteMeter:
        """The meter a stream for ``route`` (of ``service``) counts into."""
        meter = self._by_route.get(route)
        if meter is None:
            if len(self._by_route) >= _CACHE_SIZE:
                self._by_route.clear()
            meter = self._by_route[route] = self._label(route, service)
        return meter

    def _label(self, route: str, service: str) -> RouteMeter:
        label, method = service, route[len(service) + 1 :] if route != service else route
        for prefix in self.aggregate_prefixes:
            if service.startswith(prefix):
                label = prefix + "*"
                break
        routes = self._services.get(label)
        if routes is None:
            if len(self._services) >= self.max_services and label != UNROUTED:
                label = OTHER
            routes = self._services.setdefault(label, {})
        route_label = route if label == service else f"{label}.{method}"
        meter = routes.get(route_label)
        if meter is None:
            if len(routes) >= self.max_routes_per_service:
                route_label = OTHER
                meter = routes.get(OTHER)
            if meter is None:
                meter = routes[route_label] = RouteMeter(label, route_label)
        return meter

    def unrouted(self) -> RouteMeter:
        """The meter of requests refused before their route was known."""
        return self.route(UNROUTED, UNROUTED)

    def meters(self) -> Iterator[RouteMeter]:
        for routes in self._services.values():
            yield from routes.values()
