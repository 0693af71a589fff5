"""The admin API's OpenAPI 3.1 document, served at ``/api/v1/openapi.json``.

Written out by hand (the API is small) and checked against the routes actually registered
by a test, so the document cannot drift from the server.
"""

from __future__ import annotations

from typing import Any

_JSON = {"application/json": {"schema": {"type": "object"}}}


def _op(summary: str, *, body: bool = False, codes: tuple[int, ...] = (200,), params: tuple[str, ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {str(code): {"description": _STATUS.get(code, "see summary"), "content": _JSON} for code in codes},
    }
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {}}}}
    if params:
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    return op


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
    "/api/v1/connections": {"get": _op("Client connections on this node with their streams and principals")},
    "/api/v1/services": {"get": _op("Services with providers on this node and in the cluster")},
    "/api/v1/members": {"get": _op("Gossip members: state, incarnation, address, services")},
    "/api/v1/topology": {"get": _op("Every node, its state, services, connections and link status")},
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
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}},
    "/": {"get": {"summary": "Dashboard", "responses": {"200": {"description": "HTML"}}}},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "rsbroker admin API", "version": "1"},
        "paths": PATHS,
    }
