"""Who may use the admin API: three checks, in this order, before any handler runs.

1. ``Host`` must be one of the node's names (``broker.origins.NodeNames``) or listed in
   ``--admin-allowed-hosts``, else 421: a DNS-rebinding page learns nothing, not even
   whether a token is needed. A request without ``Host`` (not a browser) passes.
2. A write (any method but GET/HEAD) carrying an ``Origin`` must come from a page on one of
   those names, else 403: another site's page cannot write through a browser. No CORS
   header is ever sent, so no other site may read answers either.
3. With authentication on (``Settings.admin_token_required``), a credential with role admin:
   a bearer JWT (``--jwt-keys``) or, over ``--admin-tls``, a verified client certificate;
   401 without one, 403 without the role. Health probes and the dashboard page (static, no
   data; its requests, the event stream included, carry the token in their header) are open.

Every refusal is a JSON ``{"error": ...}`` saying what to do, and counts in
``rsbroker_admin_refused``. Anonymous admin access exists only on loopback with
authentication off: ``Settings.validate`` refuses any other exposure at start.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from aiohttp import web

from broker.auth import AuthError, Principal, peer_principal
from broker.origins import NodeNames, host_of, origin_authority

if TYPE_CHECKING:
    from rsbroker.node import Node

log = logging.getLogger("rsbroker.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: what needs no credential: orchestrators' probes and the dashboard page itself
OPEN_PATHS = frozenset({"/health/live", "/health/ready", "/"})
SAFE_METHODS = frozenset({"GET", "HEAD"})


def _refuse(node: "Node", status: int, message: str, **headers: str) -> web.Response:
    if node.broker is not None:
        node.broker.stats["admin_refused"] += 1
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _local_host(request: web.Request) -> str | None:
    local = request.transport.get_extra_info("sockname") if request.transport else None
    return str(local[0]) if local else None


def _host_refusal(request: web.Request, names: NodeNames) -> str:
    header = request.headers.get("Host")
    if header is None:
        return ""
    host = host_of(header)
    if names.knows(host, _local_host(request)):
        return ""
    return (
        f"Host {host[:200]!r} is not one of this node's names; if it is the name of a proxy or load "
        "balancer in front of this node, add it to --admin-allowed-hosts"
    )


def _origin_refusal(request: web.Request, names: NodeNames) -> str:
    origin = request.headers.get("Origin")
    if request.method in SAFE_METHODS or origin is None:
        return ""
    parsed = origin_authority(origin)
    if parsed is not None and names.knows(parsed[1], _local_host(request)):
        return ""
    return (
        f"cross-origin write refused: origin {origin[:200]!r} is not a page of this node "
        "(its own names or --admin-allowed-hosts)"
    )


def credential_refusal(request: web.Request, node: "Node") -> tuple[int, str]:
    """``(status, message)`` when the request lacks an admin credential, else ``(0, '')``.

    Also asked again by long-lived answers (``admin.sse``), so that a stream ends when the
    token it was opened with expires or is revoked, as each request of a poller would.
    """
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    principal: Principal | None
    if token.strip():
        if scheme.lower() != "bearer":
            return 401, "this admin API takes 'Authorization: Bearer <token>'"
        verifier = node.broker.security.verifier if node.broker else None
        if verifier is None:
            return 401, "this node verifies no JWTs (no --jwt-keys): present a client certificate with role admin"
        try:
            principal = verifier.verify(token.strip())
        except AuthError as exc:
            return 401, f"authentication failed: {exc}"
    else:
        principal = peer_principal(request.transport)  # a verified client certificate (--admin-tls)
        if principal is None:
            return 401, "this admin API requires 'Authorization: Bearer <token>' with role admin"
    if not principal.is_admin:
        return 403, f"principal '{principal.name}' lacks the admin role"
    return 0, ""


def guard(node: "Node") -> Any:
    """The aiohttp middleware applying the three checks for ``node``."""
    names = NodeNames.of(node.settings, node.settings.admin_allowed_hosts)
    credential_required = node.settings.admin_token_required

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        reason = _host_refusal(request, names)
        if reason:
            return _refuse(node, 421, reason)
        reason = _origin_refusal(request, names)
        if reason:
            return _refuse(node, 403, reason)
        if credential_required and request.path not in OPEN_PATHS:
            status, reason = credential_refusal(request, node)
            if status:
                log.info("admin %s %s refused (%d): %s", request.method, request.path, status, reason)
                extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
                return _refuse(node, status, reason, **extra)
        return await handler(request)

    return middleware
