"""``GET /api/v1/traces``: the last hop spans of traced requests on this node (broker.tracing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from rsbroker.node import Node


def trace_routes(app: web.Application, node: "Node") -> None:
    async def traces(request: web.Request) -> web.Response:
        """Spans, newest last; ``?route=`` narrows to one route label (as in the metrics)."""
        tracer = node.broker.tracer if node.broker else None
        spans = tracer.view(request.query.get("route")) if tracer else []
        return web.json_response({"spans_kept_per_route": node.settings.trace_spans_kept, "spans": spans})

    app.router.add_get("/api/v1/traces", traces)
