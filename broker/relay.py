"""The broker node's relay: sessions, the service registry, and the rules between them.

``Broker`` owns every session on this node and decides, for each new stream, whether it
may proceed and which provider gets it. It never parses frames itself (sessions do) and
never touches sockets (listeners do). Output is coalesced: sessions mark themselves
dirty and one ``call_soon`` per event-loop turn flushes them all, so a burst of frames
read in one turn leaves in one write per destination.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Callable

from broker import metadata as md
from broker.auth.acl import CALL, REGISTER, denied_message
from broker.frames import ErrorCode, FrameError, error_frame, lease_frame
from broker.registry import Registry, ServicePolicy
from broker.security import Security
from broker.session import Session, State
from broker.settings import Settings

log = logging.getLogger("rsbroker.relay")

#: How often the housekeeping pass runs (keepalive, SETUP timeouts, lease renewal), seconds.
HOUSEKEEPING_INTERVAL_S = 0.25
_ROUTE_CACHE_SIZE = 4096
#: metadata longer than this (bytes) is parsed every time instead of cached
_ROUTE_CACHE_MAX_KEY = 512


class Broker:
    """All relay state of one node."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.settings = settings
        self.loop = loop or asyncio.get_event_loop()
        self.clock: Callable[[], float] = self.loop.time
        self.registry = Registry(settings.default_policy)
        for service, obj in settings.services.items():
            self.registry.set_policy(service, ServicePolicy.from_obj(obj))
        self.sessions: set[Session] = set()
        self._per_source: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self.draining = False
        self._dirty: list[Session] = []
        self._flush_scheduled = False
        self._route_cache: dict[bytes, tuple[str, str] | None] = {}
        self._housekeeping: asyncio.Task[None] | None = None
        self.security = Security(settings)
        #: the cluster's broker links (cluster.links.Links) when this node is in a cluster
        self.links: Any = None
        #: called with the session after a successful SETUP (topology push, metrics)
        self.setup_listeners: list[Callable[[Session], None]] = []
        #: called when the set of local services changes (routing-table gossip)
        self.registry_listeners: list[Callable[[], None]] = []

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Start the housekeeping loop; returns its task (the node supervises it)."""
        self._housekeeping = self.loop.create_task(self._housekeeping_loop())
        return self._housekeeping

    async def stop(self) -> None:
        if self._housekeeping:
            self._housekeeping.cancel()
            try:
                await self._housekeeping
            except asyncio.CancelledError:
                pass
        for session in list(self.sessions):
            session.send_frame(error_frame(0, ErrorCode.CONNECTION_CLOSE, "broker is shutting down"))
            session.flush()
            session.close()

    async def drain(self, timeout: float) -> None:
        """Refuse new streams, wait up to ``timeout`` for open ones to end.

        A connection is closed (ERROR CONNECTION_CLOSE) as soon as it has no open stream,
        so clients move to another node at once instead of meeting REJECTED here.
        """
        self.draining = True
        deadline = self.clock() + timeout
        while True:
            inbound = [s for s in self.sessions if not s.outbound]
            for session in inbound:
                if not session.streams and not session.closing:
                    session.send_frame(
                        error_frame(0, ErrorCode.CONNECTION_CLOSE, f"node '{self.settings.node_id}' is draining; reconnect to another node")
                    )
                    session.flush()
                    session.close()
            # Our own outbound broker links stay: streams still draining may be using them.
            if not inbound or self.clock() >= deadline:
                break
            await asyncio.sleep(0.05)
        left = sum(len(s.streams) for s in self.sessions)
        if left:
            log.warning("drain timeout: %d streams still open are cut off", left)

    # -- sessions -------------------------------------------------------------------------

    def admit(self, peer: tuple[Any, ...] | None) -> str:
        """Reason to refuse a new connection from ``peer``, or '' to accept it."""
        if self.draining:
            return "node is draining"
        source = str(peer[0]) if peer else "?"
        if self._per_source[source] >= self.settings.max_connections_per_source:
            self.stats["connections_refused"] += 1
            return f"too many connections from {source} (limit {self.settings.max_connections_per_source})"
        return ""

    def add_session(self, session: Session) -> None:
        self.sessions.add(session)
        self._per_source[str(session.peer[0]) if session.peer else "?"] += 1
        self.stats["connections_accepted"] += 1

    def remove_session(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            key = str(session.peer[0]) if session.peer else "?"
            self._per_source[key] -= 1
            if self._per_source[key] <= 0:
                del self._per_source[key]
        if session in self._dirty:
            self._dirty.remove(session)

    def mark_dirty(self, session: Session) -> None:
        self._dirty.append(session)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for session in dirty:
            session.flush()

    # -- authentication and access ----------------------------------------------------------

    def authenticate(self, session: Session, auth_entry: bytes | None) -> Any:
        """Principal for a SETUP, or raise FrameError(REJECTED_SETUP) with the reason."""
        return self.security.authenticate(session, auth_entry)

    def check_registration(self, session: Session, registration: md.Registration) -> None:
        access = self.security.access
        for service in registration.services:
            if not access.can_register(session.principal, service):
                raise FrameError(
                    denied_message(session.principal, REGISTER, service),
                    ErrorCode.REJECTED_SETUP if session.state is State.AWAIT_SETUP else ErrorCode.REJECTED,
                )

    def refuse_request(self, session: Session, route: str) -> str:
        """Why a request for ``route`` from ``session`` may not proceed, or ''."""
        if self.draining:
            return f"node '{self.settings.node_id}' is draining; reconnect to another node"
        if not self.security.access.can_call(session.principal, route):
            return denied_message(session.principal, CALL, route)
        return ""

    # -- registry ---------------------------------------------------------------------------

    def register(self, session: Session, registration: md.Registration) -> None:
        """Replace the services ``session`` provides with those of ``registration``."""
        old = set(session.registration.services) if session.registration else set()
        session.registration = registration
        for service in old - set(registration.services):
            self.registry.remove(service, session)
        for service in registration.services:
            self.registry.add(service, session)
        log.info(
            "connection %s registered instance '%s' for %s",
            session.id,
            registration.instance,
            ", ".join(registration.services) or "no services",
        )
        self._registry_changed()

    def unregister(self, session: Session) -> None:
        if session.registration is None:
            return
        for service in session.registration.services:
            self.registry.remove(service, session)
        self._registry_changed()

    def _registry_changed(self) -> None:
        for listener in self.registry_listeners:
            listener()

    def resolve(self, metadata: bytes, metadata_mime: str) -> tuple[str, str] | None:
        """``(route, service)`` of a request's metadata, or None when it names no route.

        Cached, because clients repeat the same bytes; only small metadata is cached
        (routing plus a little more): caching big blobs as keys would let a client pin
        megabytes of broker memory per request. Raises FrameError for unreadable metadata.
        """
        if len(metadata) > _ROUTE_CACHE_MAX_KEY:
            route = md.route_of(metadata, metadata_mime)
            return (route, md.service_of(route)) if route is not None else None
        key = metadata if metadata_mime == md.COMPOSITE_MIME else b"R" + metadata
        try:
            return self._route_cache[key]
        except KeyError:
            pass
        route = md.route_of(metadata, metadata_mime)
        resolved = (route, md.service_of(route)) if route is not None else None
        if len(self._route_cache) >= _ROUTE_CACHE_SIZE:
            self._route_cache.clear()
        self._route_cache[key] = resolved
        return resolved

    def authenticate_link(self, session: Session, link_entry: bytes) -> Any:
        """Principal of an inbound broker link; refused unless a cluster is configured."""
        if self.links is None:
            raise FrameError("this node is not part of a cluster: broker links are refused", ErrorCode.REJECTED_SETUP)
        return self.links.authenticate(session, link_entry)

    def push_metadata(self, source: Session, route: str, frame: bytes) -> None:
        """Deliver a routed METADATA_PUSH to every provider of the route's service."""
        for provider in self.registry.providers(md.service_of(route)):
            if provider is not source:
                provider.send_frame(frame)  # type: ignore[attr-defined]

    # -- hooks -----------------------------------------------------------------------------

    def on_setup(self, session: Session) -> None:
        if session.lease_enabled:
            self._grant_lease(session)
        for listener in self.setup_listeners:
            listener(session)

    def _grant_lease(self, session: Session) -> None:
        session.send_frame(lease_frame(self.settings.lease_ttl_ms, self.settings.lease_requests))
        session.lease_granted_until = self.clock() + self.settings.lease_ttl_ms / 1000.0

    # -- housekeeping ---------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            try:
                self.housekeeping(self.clock())
                self.security.enforce(self)
            except Exception:  # a bug here must not stop keepalive enforcement for good
                log.exception("housekeeping pass failed")

    def housekeeping(self, now: float) -> None:
        """Enforce SETUP timeouts and keepalive lifetimes; renew leases we granted."""
        setup_timeout = self.settings.setup_timeout_s
        renew_margin = self.settings.lease_ttl_ms / 2000.0
        for session in list(self.sessions):
            if session.state is State.AWAIT_SETUP:
                if now - session.connected_at > setup_timeout:
                    self.stats["setup_timeouts"] += 1
                    session.fail(ErrorCode.INVALID_SETUP, f"no SETUP frame within {setup_timeout:g} s")
            elif session.state is State.SERVING:
                if now - session.last_recv > session.max_lifetime_ms / 1000.0:
                    self.stats["keepalive_timeouts"] += 1
                    session.fail(
                        ErrorCode.CONNECTION_ERROR,
                        f"no frame from the client within its max lifetime of {session.max_lifetime_ms} ms",
                    )
                elif session.lease_enabled and session.lease_granted_until - now < renew_margin:
                    self._grant_lease(session)

    # -- views ------------------------------------------------------------------------------

    def services_view(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for service, providers in sorted(self.registry.services().items()):
            policy = self.registry.policy(service)
            out[service] = {
                "policy": policy.policy,
                "providers": [
                    {
                        "instance": p.instance,
                        "connection": getattr(p, "id", None),
                        "node": getattr(p, "node", self.settings.node_id),
                        "remote": p.is_remote,
                        "weight": policy.weights.get(p.instance, p.weight),
                        "outstanding": p.outstanding,
                    }
                    for p in providers
                ],
            }
        return out
