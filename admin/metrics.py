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
        supervisor = self._node.supervisor
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

    async def handler(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler
