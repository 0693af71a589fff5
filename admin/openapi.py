"""The admin API's OpenAPI 3.1 document, served at ``/api/v1/openapi.json``.

Written out by hand (the API is small) and checked against the routes actually registered
by a test, so the document cannot drift from the server.
"""

from __future__ import annotations

from typing import Any

_JSON = {"application/json": {"schema": {"type": "object"}}}


def _op(
    summary: str, *, body: bool = False, codes: tuple[int, ...] = (200,), params: tuple[str, ...] = (),
    query: tuple[str, ...] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {str(code): {"description": _STATUS.get(code, "see summary"), "content": _JSON} for code in codes},
    }
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {}}}}
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    if query:
        op["parameters"] = op.get("parameters", []) + [_QUERY[q] for q in query]
    return op


def _q(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": {"type": kind}}


#: Filters and paging of the list endpoints (admin/paging.py); answers carry ``total`` first.
_QUERY = {
    "prefix": _q("prefix", "only names starting with this (services; registered services for connections)"),
    "node": _q("node", "only this node (services with a provider on it; one member or topology node)"),
    "limit": _q("limit", "page size, 1..10000 (default 1000; service names per node for members/topology, default 100)",
                "integer"),
    "cursor": _q("cursor", "the next_cursor of the previous page"),
}


_STATUS = {
    200: "OK",
    400: "the request or value was refused; the body says why",
    401: "a bearer token with role admin is required",
    404: "no such key",
    409: "membership change refused",
    503: "not ready (the body's reason says why), starting, no Raft leader, or timed out",
    507: "storage full: the node's disk is full; nothing commits on it",
}

PATHS: dict[str, dict[str, Any]] = {
    "/health/live": {"get": _op("Alive: no background loop died (503 names each cause, e.g. storage full)", codes=(200, 503))},
    "/health/ready": {"get": _op("Ready for clients: joined, config store caught up, links up, not draining", codes=(200, 503))},
    "/api/v1/node": {"get": _op("This node: id, addresses, limits, uptime")},
    "/api/v1/connections": {"get": _op("Client connections on this node with their streams and principals: total, a page",
                                       codes=(200, 400), query=("prefix", "limit", "cursor"))},
    "/api/v1/services": {"get": _op("Services with providers on this node and in the cluster: total, a page",
                                    codes=(200, 400), query=("prefix", "node", "limit", "cursor"))},
    "/api/v1/members": {"get": _op("Gossip members: state, incarnation, address, service count and names",
                                   codes=(200, 400), query=("prefix", "node", "limit"))},
    "/api/v1/topology": {"get": _op("Every node, its state, service count and names, connections and link status",
                                    codes=(200, 400), query=("prefix", "node", "limit"))},
    "/api/v1/raft": {"get": _op("Raft status: term, leader, commit and applied index, members")},
    "/api/v1/raft/members/{member}": {
        "delete": _op("Remove a (dead) node from the Raft group", codes=(200, 409, 503), params=("member",))
    },
    "/api/v1/config": {"get": _op("Config keys under ?prefix= (linearizable unless ?stale=true)", codes=(200, 503))},
    "/api/v1/config/{key}": {
        "get": _op("One config key", codes=(200, 404, 503), params=("key",)),
        "put": _op("Set a config key through the Raft leader", body=True, codes=(200, 400, 503, 507), params=("key",)),
        "delete": _op("Delete a config key", codes=(200, 404, 503, 507), params=("key",)),
    },
    "/api/v1/openapi.json": {"get": _op("This document")},
    "/api/v1/traces": {"get": _op("Last hop spans of traced requests per route (?route= for one route label)")},
    "/api/v1/stats": {"get": _op("This node's request rate and link states (for other nodes' dashboards)")},
    "/api/v1/events": {
        "get": {
            "summary": "Server-sent events: a dashboard snapshot every second (nodes, services, changes)",
            "responses": {"200": {"description": "text/event-stream"}},
        }
    },
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}},
    "/": {"get": {"summary": "Dashboard", "responses": {"200": {"description": "HTML"}}}},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rsbroker admin API",
            "version": "1",
            "description": "With authentication on, every path but /health/* and / needs a bearer JWT "
            "with role admin (401 without, 403 without the role); see admin/guard.py.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}, {}],
        "paths": PATHS,
    }
