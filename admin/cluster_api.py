"""Admin endpoints for the cluster: members, topology, Raft status and the config store.

Writes go through the Raft leader (``RaftNode.put`` forwards them when this node is a
follower); reads are linearizable unless ``?stale=true`` asks for this node's local copy.
Raft's errors map to HTTP statuses here and nowhere else:

=====================  ======  ===============================================
``ValidationError``    400     the value (or key) was refused; nothing applied
``NotLeader``          503     no leader right now (election in progress)
``Timeout``            503     no answer in time; a write's outcome is unknown
``MembershipError``    409     a membership change was refused
``StorageFull``        507     the node's disk is full; nothing commits here
=====================  ======  ===============================================

Before the node has started its cluster side every endpoint here answers 503 with
``{"error": ..., "reason": "starting"}``, never a 500.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from admin.paging import page_params
from cluster.raft.errors import MembershipError, NotLeader, RaftError, StorageFull, Timeout
from cluster.raft.validation import ValidationError
from cluster.runtime import TOPOLOGY_SERVICES

if TYPE_CHECKING:
    from rsbroker.node import Node

#: the part of the URL after /api/v1/config/ may contain slashes (``acl/ops``)
CONFIG_PATH = "/api/v1/config/{key:.+}"


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _raft_error(exc: Exception) -> web.Response:
    if isinstance(exc, ValidationError):
        return _error(400, str(exc))
    if isinstance(exc, MembershipError):
        return _error(409, str(exc))
    if isinstance(exc, NotLeader):
        return _error(503, str(exc), leader=exc.leader)
    if isinstance(exc, StorageFull):
        return _error(507, str(exc))
    if isinstance(exc, Timeout):
        return _error(503, f"timed out: {exc}")
    return _error(503, str(exc))


def cluster_routes(app: web.Application, node: "Node") -> None:
    """Add the cluster endpoints to the admin application."""

    def runtime() -> Any:
        if node.runtime is None or not node.runtime.started:
            body = {"error": "node is starting: its cluster side is not up yet", "reason": "starting"}
            raise web.HTTPServiceUnavailable(text=json.dumps(body), content_type="application/json")
        return node.runtime

    def names_per_node(request: web.Request) -> tuple[str, int, str | None]:
        """Members are few, their service lists long: ``?limit=`` caps the names listed
        per node (default ``TOPOLOGY_SERVICES``), ``?prefix=`` filters them; the count
        ``services_total`` is always whole. ``?node=`` keeps one node."""
        page = page_params(request)
        return page.prefix, page.limit if "limit" in request.query else TOPOLOGY_SERVICES, page.node

    async def members(request: web.Request) -> web.Response:
        prefix, limit, only = names_per_node(request)
        view = [m for m in runtime().members_view(prefix, limit) if only in (None, m["node_id"])]
        return web.json_response({"total": len(view), "members": view})

    async def topology(request: web.Request) -> web.Response:
        prefix, limit, only = names_per_node(request)
        view = runtime().topology_view(prefix, limit)
        view["nodes"] = [n for n in view["nodes"] if only in (None, n["node_id"])]
        return web.json_response({"total": len(view["nodes"]), **view})

    async def raft_status(request: web.Request) -> web.Response:
        return web.json_response(runtime().raft.status())

    async def config_list(request: web.Request) -> web.Response:
        rt = runtime()
        prefix = request.query.get("prefix", "")
        if request.query.get("stale", "false").lower() not in ("1", "true", "yes"):
            try:
                await rt.raft.read_barrier()
            except (ValidationError, RaftError) as exc:
                return _raft_error(exc)
        return web.json_response({"prefix": prefix, "items": rt.raft.list(prefix)})

    async def config_get(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        linearizable = request.query.get("stale", "false").lower() not in ("1", "true", "yes")
        rt = runtime()
        try:
            value = await rt.raft.get(key, linearizable=linearizable)
        except (ValidationError, RaftError) as exc:
            return _raft_error(exc)
        if value is None and key not in rt.raft.list(key):
            return _error(404, f"no config key '{key}'")
        return web.json_response({"key": key, "value": value})

    async def config_put(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            value = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"the body must be JSON: {exc}")
        try:
            index = await runtime().raft.put(key, value)
        except (ValidationError, RaftError) as exc:
            return _raft_error(exc)
        return web.json_response({"key": key, "value": value, "index": index})

    async def config_delete(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            existed = await runtime().raft.delete(key)
        except (ValidationError, RaftError) as exc:
            return _raft_error(exc)
        if not existed:
            return _error(404, f"no config key '{key}'")
        return web.json_response({"key": key, "deleted": True})

    async def remove_member(request: web.Request) -> web.Response:
        member = request.match_info["member"]
        try:
            await runtime().remove_member(member)
        except (ValidationError, RaftError) as exc:
            return _raft_error(exc)
        return web.json_response({"removed": member})

    app.router.add_get("/api/v1/members", members)
    app.router.add_get("/api/v1/topology", topology)
    app.router.add_get("/api/v1/raft", raft_status)
    app.router.add_delete("/api/v1/raft/members/{member}", remove_member)
    app.router.add_get("/api/v1/config", config_list)
    app.router.add_get(CONFIG_PATH, config_get)
    app.router.add_put(CONFIG_PATH, config_put)
    app.router.add_delete(CONFIG_PATH, config_delete)
