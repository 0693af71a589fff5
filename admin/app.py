"""The admin API: what an operator asks a node, over HTTP and JSON.

Read-only views of the node's relay state, health probes for orchestrators, and
Prometheus metrics. Versioned under ``/api/v1``; every response is JSON except
``/metrics`` (Prometheus text format). Who may ask is decided in ``admin.guard``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from admin.cluster_api import cluster_routes
from admin.guard import guard
from admin.metrics import metrics_handler
from admin.openapi import document
from admin.paging import page_of, page_params
from admin.sse import sse_routes
from admin.traces import trace_routes

if TYPE_CHECKING:
    from rsbroker.node import Node

NODE_KEY: web.AppKey["Node"] = web.AppKey("node")
DASHBOARD = Path(__file__).with_name("static") / "dashboard.html"


def _node(request: web.Request) -> "Node":
    return request.app[NODE_KEY]


async def live(request: web.Request) -> web.Response:
    """Alive unless a background loop died (gossip timer, Raft loop, links...): then 503 with
    each cause, so that an orchestrator restarts the node instead of keeping a zombie."""
    failures = _node(request).supervisor.failures
    if failures:
        reason = "; ".join(f"{name}: {cause}" for name, cause in sorted(failures.items()))
        return web.json_response({"status": "failed", "reason": reason, "failures": failures}, status=503)
    return web.json_response({"status": "live"})


async def not_ready_reason(node: "Node") -> str | None:
    """Why the node cannot take clients, or None: listeners bound, not draining, nothing dead,
    and the cluster side joined, caught up and able to route (``ClusterRuntime.readiness``)."""
    if node.broker is None or node.runtime is None:
        return "starting"
    if node.broker.draining:
        return "draining"
    if node.supervisor.failures:
        return "; ".join(f"{name}: {cause}" for name, cause in sorted(node.supervisor.failures.items()))
    reason: str | None = await node.runtime.readiness()
    return reason


async def ready(request: web.Request) -> web.Response:
    """200 only when the node can serve: see :func:`not_ready_reason`; 503 with the reason."""
    reason = await not_ready_reason(_node(request))
    if reason is not None:
        return web.json_response({"status": "not ready", "reason": reason}, status=503)
    return web.json_response({"status": "ready"})


async def node_info(request: web.Request) -> web.Response:
    node = _node(request)
    broker = node.broker
    body: dict[str, Any] = {
        "node_id": node.settings.node_id,
        "addresses": node.addresses,
        "started_at": node.started_at,
        "uptime_s": round(time.time() - node.started_at, 3),
        "draining": bool(broker and broker.draining),
        "auth": "jwt" if node.settings.auth_enabled else ("anonymous" if node.settings.allow_anonymous else "loopback-only"),
        "connections": len(broker.sessions) if broker else 0,
        "limits": {
            "max_frame_size": node.settings.max_frame_size,
            "max_streams": node.settings.max_streams,
            "max_connections_per_source": node.settings.max_connections_per_source,
            "setup_timeout_s": node.settings.setup_timeout_s,
            "max_pending_bytes": node.settings.max_pending_bytes,
        },
    }
    body.update(node.addresses)
    return web.json_response(body)


async def connections(request: web.Request) -> web.Response:
    """Connections by id; ``?prefix=`` keeps those registering a service with that prefix."""
    page = page_params(request)
    broker = _node(request).broker
    sessions = {s.id: s for s in broker.sessions} if broker else {}
    if page.prefix:
        sessions = {i: s for i, s in sessions.items()
                    if s.registration and any(n.startswith(page.prefix) for n in s.registration.services)}
    ids, next_cursor = page_of(sorted(sessions), page, _int_cursor)
    return web.json_response({"total": len(sessions), "next_cursor": next_cursor,
                              "connections": [sessions[i].describe() for i in ids]})


async def services(request: web.Request) -> web.Response:
    """Services by name; ``?prefix=`` on the name, ``?node=`` keeps those with a provider there."""
    page = page_params(request)
    node = _node(request)
    broker = node.broker
    if broker is None:
        return web.json_response({"total": 0, "next_cursor": None, "services": {}})
    registry = broker.registry
    names = [n for n in registry.names() if n.startswith(page.prefix)] if page.prefix else registry.names()
    if page.node is not None:
        own = node.settings.node_id
        names = [n for n in names if registry.served_on(n, page.node, own)]
    names.sort()
    chosen, next_cursor = page_of(names, page, str)
    return web.json_response({"total": len(names), "next_cursor": next_cursor, "services": broker.services_view(chosen)})


def _int_cursor(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "cursor must be a connection id", "parameter": "cursor"}',
                                 content_type="application/json") from None


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


async def dashboard(request: web.Request) -> web.Response:
    return web.Response(text=DASHBOARD.read_text(), content_type="text/html")


def admin_app(node: "Node") -> web.Application:
    app = web.Application(middlewares=[guard(node)])
    app[NODE_KEY] = node
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/api/v1/node", node_info)
    app.router.add_get("/api/v1/connections", connections)
    app.router.add_get("/api/v1/services", services)
    app.router.add_get("/metrics", metrics_handler(node))
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/", dashboard)
    cluster_routes(app, node)
    sse_routes(app, node)
    trace_routes(app, node)
    return app
