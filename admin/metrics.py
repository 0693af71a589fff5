"""Prometheus metrics, read from the relay's plain counters at scrape time.

The relay counts with a ``collections.Counter`` and the plain integers and bucket arrays
of ``broker.metering`` (one attribute increment per event) rather than prometheus-client
metric objects, whose locks would cost more per frame than the relay itself. Custom
collectors turn those numbers into metric families only when Prometheus scrapes, on a
registry private to this node. The cluster's families (gossip, links, Raft) come from
``admin.cluster_metrics``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from admin.cluster_metrics import ClusterCollector
from admin.families import add_histogram
from broker.metering import OUTCOMES

if TYPE_CHECKING:
    from rsbroker.node import Node

#: relay counter name → help text. Every counter the relay may increment is listed here.
COUNTERS = {
    "connections_accepted": "Connections accepted by the TCP and WebSocket listeners",
    "connections_refused": "Connections refused by the per-source limit",
    "requests": "Streams relayed to a provider",
    "rejected": "Requests refused (no provider, access denied, limits, draining)",
    "fnf_dropped": "Fire-and-forget requests that could not be delivered",
    "protocol_errors": "Connections closed for a protocol error",
    "setup_timeouts": "Connections closed for not sending SETUP in time",
    "keepalive_timeouts": "Connections closed for silence beyond their max lifetime",
    "oversized_frames": "Frames refused for exceeding the maximum frame size",
    "frames_for_unknown_streams": "Frames for streams that had already ended (ignored)",
    "ignored_frames": "Frames ignored as the spec allows (ignore flag, unrouted metadata push)",
    "auth_failures": "SETUPs refused because authentication failed",
    "credential_closes": "Connections closed because their token expired or was revoked",
    "ws_origins_refused": "WebSocket upgrades refused by the Origin policy (--ws-allowed-origins)",
    "admin_refused": "Admin API requests refused: no or bad admin credential, foreign Host, cross-origin write",
    "metadata_push_undelivered": "Routed METADATA_PUSH copies not sent: the link to the provider's node was down",
    "stalls": "Times this process stalled (paused) past its housekeeping interval; peers' deadlines were extended",
}

#: limit setting → relay counter that already counts its hits (the rest are in meter.limit_hits)
_LIMIT_COUNTERS = {
    "max_connections_per_source": "connections_refused",
    "max_frame_size": "oversized_frames",
    "setup_timeout_s": "setup_timeouts",
}

_ROUTE_LABELS = ["service", "route"]


def _jwt_cache_families(broker: Any) -> Iterator[Any]:
    """Lookups in the verified-token cache (``--jwt-cache-size``), when JWT authentication is on."""
    verifier = broker.security.verifier
    if verifier is None:
        return
    cache = verifier.cache
    lookups = CounterMetricFamily(
        "rsbroker_jwt_cache",
        "Bearer tokens looked up in the verified-token cache: hit = signature not verified again, miss = verified",
        labels=["result"],
    )
    lookups.add_metric(["hit"], cache.hits)
    lookups.add_metric(["miss"], cache.misses)
    yield lookups
    entries = GaugeMetricFamily("rsbroker_jwt_cache_entries", "Verified tokens held in the cache now")
    entries.add_metric([], len(cache))
    yield entries


class _RelayCollector:
    def __init__(self, node: "Node") -> None:
        self._node = node

    def collect(self) -> Iterator[Any]:
        broker = self._node.broker
        if broker is None:
            return
        stats = broker.stats
        for name, text in COUNTERS.items():
            family = CounterMetricFamily(f"rsbroker_{name}", text)
            family.add_metric([], stats.get(name, 0))
            yield family
        yield from self._connections(broker)
        yield from self._routes(broker.meter)
        meter = broker.meter
        setups = CounterMetricFamily("rsbroker_setups_accepted", "SETUP frames accepted (connections now serving)")
        setups.add_metric([], meter.setups_accepted)
        yield setups
        refused = CounterMetricFamily(
            "rsbroker_setups_refused", "SETUP frames refused, by the ERROR code sent back", labels=["reason"]
        )
        for reason, count in sorted(meter.setups_refused.items()):
            refused.add_metric([reason], count)
        yield refused
        limits = CounterMetricFamily(
            "rsbroker_limit_hits", "Requests, connections or frames refused by a limit, by setting name", labels=["limit"]
        )
        hits = dict(meter.limit_hits)
        for limit, counter in _LIMIT_COUNTERS.items():
            hits[limit] = hits.get(limit, 0) + stats.get(counter, 0)
        for limit, count in sorted(hits.items()):
            limits.add_metric([limit], count)
        yield limits
        yield from _jwt_cache_families(broker)
        yield from _balancing_families(broker)
        yield from _traffic_families(broker)
        services = GaugeMetricFamily("rsbroker_services", "Services with at least one local provider")
        services.add_metric([], len(broker.registry.names()))
        yield services
        yield from _cluster_families(self._node)
        yield from _supervisor_families(self._node)

    @staticmethod
    def _connections(broker: Any) -> Iterator[Any]:
        sessions = list(broker.sessions)
        conns = GaugeMetricFamily(
            "rsbroker_connections",
            "Open connections by transport and authentication (none: no SETUP yet; link: a broker link)",
            labels=["transport", "auth"],
        )
        counts: dict[tuple[str, str], int] = {}
        for session in sessions:
            auth = "link" if session.is_link or session.outbound else getattr(session.principal, "source", "none")
            key = (session.transport_name, auth)
            counts[key] = counts.get(key, 0) + 1
        for key, count in sorted(counts.items()):
            conns.add_metric(list(key), count)
        yield conns
        streams = GaugeMetricFamily("rsbroker_open_streams", "Streams open through this node")
        streams.add_metric([], sum(len(s.streams) for s in sessions) // 2)
        yield streams

    @staticmethod
    def _routes(meter: Any) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "rsbroker_route_requests", "Streams ended, by service, route and outcome", labels=[*_ROUTE_LABELS, "outcome"]
        )
        first = HistogramMetricFamily(
            "rsbroker_route_first_response_seconds",
            "Time from the request frame in to the first response frame out",
            labels=[*_ROUTE_LABELS, "outcome"],
        )
        duration = HistogramMetricFamily(
            "rsbroker_route_duration_seconds",
            "Time from the request frame in to the end of the stream",
            labels=[*_ROUTE_LABELS, "outcome"],
        )
        inflight = GaugeMetricFamily("rsbroker_route_in_flight", "Streams open now", labels=_ROUTE_LABELS)
        nbytes = CounterMetricFamily(
            "rsbroker_route_bytes",
            "Frame bytes relayed: in = requester to provider, out = provider to requester",
            labels=[*_ROUTE_LABELS, "direction"],
        )
        for m in meter.meters():
            labels = [m.service, m.route]
            for outcome, count in zip(OUTCOMES, m.outcomes):
                if count:
                    requests.add_metric([*labels, outcome], count)
            for family, hists in ((first, m.first), (duration, m.complete)):
                for outcome, hist in zip(OUTCOMES, hists):
                    if hist is not None:
                        add_histogram(family, [*labels, outcome], hist)
            inflight.add_metric(labels, m.inflight)
            nbytes.add_metric([*labels, "in"], m.bytes_in)
            nbytes.add_metric([*labels, "out"], m.bytes_out)
        yield from (requests, first, duration, inflight, nbytes)


def _balancing_families(broker: Any) -> Iterator[Any]:
    """Outlier ejections and canary requests by service (broker.registry)."""
    for name, text, counts in (
        ("rsbroker_ejections", "Providers ejected by outlier detection, by service", broker.registry.ejections if broker else {}),
        ("rsbroker_canary_requests", "Requests sent to a service's canary providers, by service",
         broker.registry.canary_requests if broker else {}),
    ):
        family = CounterMetricFamily(name, text, labels=["service"])
        for service, count in sorted(counts.items()):
            family.add_metric([service], count)
        yield family


def _traffic_families(broker: Any) -> Iterator[Any]:
    """Rate limits, deadlines and the HTTP gateway (``broker.traffic``, ``broker.gateway``)."""
    traffic = broker.traffic
    refused = CounterMetricFamily("rsbroker_rate_limited", "Requests refused by a rate limit, by limit name", labels=["limit"])
    for name, count in sorted(traffic.refused.items()):
        refused.add_metric([name], count)
    yield refused
    share = GaugeMetricFamily("rsbroker_rate_limit_node_rate", "This node's share of each rate limit, requests per second", labels=["limit"])
    for name, rate in sorted(traffic.shares().items()):
        share.add_metric([name], rate)
    yield share
    timeouts = CounterMetricFamily("rsbroker_deadline_timeouts", "Requests ended at their deadline, by service", labels=["service"])
    for service, count in sorted(traffic.timeouts.items()):
        timeouts.add_metric([service], count)
    yield timeouts
    retried = CounterMetricFamily("rsbroker_retries", "Idempotent requests sent to another provider, by service", labels=["service"])
    for service, count in sorted(traffic.retried.items()):
        retried.add_metric([service], count)
    yield retried
    spent = CounterMetricFamily(
        "rsbroker_retries_refused",
        "Retries not made, by service and reason: budget (the retry budget was spent) or too_large (over max_retry_frame_size)",
        labels=["service", "reason"],
    )
    for (service, reason), count in sorted(traffic.retries_refused.items()):
        spent.add_metric([service, reason], count)
    yield spent
    answers = CounterMetricFamily("rsbroker_gateway_responses", "HTTP gateway answers by status code", labels=["status"])
    for status, count in sorted((broker.gateway.responses if broker.gateway else {}).items()):
        answers.add_metric([str(status)], count)
    yield answers


def _cluster_families(node: "Node") -> Iterator[Any]:
    """The cluster plane's counters (see ``ClusterRuntime.counters``), when the cluster runs."""
    counters: dict[str, Any] = (
        node.runtime.counters() if node.runtime is not None else {"dropped": {}, "link_auth_failures": 0}
    )
    dropped = CounterMetricFamily(
        "rsbroker_cluster_dropped",
        "Gossip and Raft messages dropped before any state changed (bad seal, undecodable, oversize, timeout, ...)",
        labels=["plane", "reason"],
    )
    for (plane, reason), value in sorted(counters["dropped"].items()):
        dropped.add_metric([plane, reason], value)
    yield dropped
    links = CounterMetricFamily("rsbroker_link_auth_failures", "Broker links refused (bad entry, failed or missing proof)")
    links.add_metric([], counters["link_auth_failures"])
    yield links
    loads = CounterMetricFamily("rsbroker_load_updates", "Provider load figures re-announced to the cluster (p2c)")
    loads.add_metric([], counters.get("load_updates", 0))
    yield loads


def _supervisor_families(node: "Node") -> Iterator[Any]:
    """Whether the node's background loops are alive and its data directory writable."""
    supervisor = node.supervisor
    full = GaugeMetricFamily("rsbroker_storage_full", "1 when a write to the data directory failed for lack of space")
    full.add_metric([], 1 if supervisor.storage_full else 0)
    yield full
    failed = GaugeMetricFamily(
        "rsbroker_background_task_failed", "1 for each background loop that died (the node is not live)", labels=["task"]
    )
    for task in sorted(supervisor.failures):
        failed.add_metric([task], 1)
    yield failed


def metrics_handler(node: "Node") -> Callable[[web.Request], Any]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RelayCollector(node))  # type: ignore[arg-type]
    registry.register(ClusterCollector(node))  # type: ignore[arg-type]

    async def handler(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler
