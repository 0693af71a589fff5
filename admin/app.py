"""The admin API: what an operator asks a node, over HTTP and JSON.

Read-only views of the node's relay state, health probes for orchestrators, and
Prometheus metrics. Versioned under ``/api/v1``; every response is JSON except
``/metrics`` (Prometheus text format).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from admin.cluster_api import cluster_routes
from admin.metrics import metrics_handler
from admin.openapi import document
from broker.auth import AuthError

if TYPE_CHECKING:
    from broker.server import Node

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
    broker = _node(request).broker
    sessions = sorted(broker.sessions, key=lambda s: s.id) if broker else []
    return web.json_response({"connections": [s.describe() for s in sessions]})


async def services(request: web.Request) -> web.Response:
    broker = _node(request).broker
    return web.json_response({"services": broker.services_view() if broker else {}})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


async def dashboard(request: web.Request) -> web.Response:
    return web.Response(text=DASHBOARD.read_text(), content_type="text/html")


def _token_middleware(node: "Node") -> Any:
    """Require ``Authorization: Bearer <JWT>`` with role admin on everything but health probes."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/health/"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return web.json_response(
                {"error": "this admin API requires 'Authorization: Bearer <token>' with role admin"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        verifier = node.broker.security.verifier if node.broker else None
        if verifier is None:
            return web.json_response({"error": "no JWT keys configured"}, status=503)
        try:
            principal = verifier.verify(token.strip())
        except AuthError as exc:
            return web.json_response({"error": f"authentication failed: {exc}"}, status=401)
        if not principal.is_admin:
            return web.json_response({"error": f"principal '{principal.name}' lacks the admin role"}, status=403)
        return await handler(request)

    return middleware


def admin_app(node: "Node") -> web.Application:
    middlewares = [_token_middleware(node)] if node.settings.admin_require_token else []
    app = web.Application(middlewares=middlewares)
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
    return app
