"""Prometheus metrics, read from the relay's plain counters at scrape time.

The relay counts with a ``collections.Counter`` (one dict increment per event) rather
than prometheus-client metric objects, whose locks would cost more per frame than the
relay itself. A custom collector turns those counters into metric families only when
Prometheus scrapes, on a registry private to this node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from broker.server import Node

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


class _RelayCollector:
    def __init__(self, node: "Node") -> None:
        self._node = node

    def collect(self) -> Iterator[Any]:
        broker = self._node.broker
        stats = broker.stats if broker else {}
        for name, text in COUNTERS.items():
            family = CounterMetricFamily(f"rsbroker_{name}", text)
            family.add_metric([], stats.get(name, 0))
            yield family
        hits = CounterMetricFamily(
            "rsbroker_limit_hits", "Peers refused for going past a limit, by the limit's setting name", labels=["limit"]
        )
        for limit, count in sorted((broker.limit_hits if broker else {}).items()):
            hits.add_metric([limit], count)
        yield hits
        yield from _balancing_families(broker)
        sessions = list(broker.sessions) if broker else []
        conns = GaugeMetricFamily("rsbroker_connections", "Open client connections", labels=["transport"])
        by_transport: dict[str, int] = {}
        for session in sessions:
            by_transport[session.transport_name] = by_transport.get(session.transport_name, 0) + 1
        for transport, count in sorted(by_transport.items()):
            conns.add_metric([transport], count)
        yield conns
        streams = GaugeMetricFamily("rsbroker_open_streams", "Streams open through this node")
        streams.add_metric([], sum(len(s.streams) for s in sessions) // 2)
        yield streams
        services = GaugeMetricFamily("rsbroker_services", "Services with at least one local provider")
        services.add_metric([], len(broker.registry.services()) if broker else 0)
        yield services
        yield from _cluster_families(self._node)


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


def _cluster_families(node: "Node") -> Iterator[Any]:
    """The cluster plane's counters (see ``ClusterRuntime.counters``), when the cluster runs."""
    counters = node.runtime.counters() if node.runtime is not None else {"dropped": {}, "link_auth_failures": 0}
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


def metrics_handler(node: "Node") -> Callable[[web.Request], Any]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RelayCollector(node))  # type: ignore[arg-type]

    async def handler(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler
