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
from typing import TYPE_CHECKING, Any, Callable

from broker import metadata as md
from broker.auth.acl import CALL, REGISTER, denied_message
from broker.auth.principal import Principal
from broker.frames import ErrorCode, FrameError, error_frame, lease_frame
from broker.latency import estimate
from broker.hotpath import trace_entry
from broker.limits import LimitExceeded, SetupRate
from broker.logformat import LogBudget, conn_fields
from broker.looplag import LoopLag
from broker.metering import Metering
from broker.peers import LinkAuthority
from broker.tracing import Tracer
from broker.registry import Registry, ServicePolicy
from broker.security import Security, is_proven_link
from broker.session import Session, State
from broker.settings import Settings
from broker.traffic import TrafficRules, limits_from_config

if TYPE_CHECKING:
    from broker.gateway import Gateway

log = logging.getLogger("rsbroker.relay")

#: How often the housekeeping pass runs (keepalive, SETUP timeouts, lease renewal), seconds.
HOUSEKEEPING_INTERVAL_S = 0.25
#: A pass this much later than its interval (seconds) means this process stalled (SIGSTOP,
#: a paused VM, swapping, a blocking call): the peers' silence over that time is ours.
STALL_THRESHOLD_S = 1.0
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
        self.sessions: set[Session] = set()
        self._per_source: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self.meter = Metering(
            self.clock,
            settings.metrics_max_routes_per_service,
            settings.metrics_max_services,
            settings.metrics_aggregate_prefixes,
        )
        self.tracer = Tracer(
            settings.node_id,
            settings.trace_spans_kept,
            self.clock,
            settings.otlp_endpoint,
        )
        self.draining = False
        #: bumped by every change that can alter whether or how a request is admitted (access
        #: rules, service policies, rate limits, draining): a connection's route cache (``Session.open_cache``)
        #: holds only while its generation is this one
        self.open_generation = 0
        self._dirty: list[Session] = []
        self._flush_scheduled = False
        #: resolved routes of composite metadata and of bare routing tags, keyed as resolve says;
        #: two maps, since the same bytes read as either can name different routes
        self._route_cache: dict[bytes, tuple[str, str, None] | None] = {}
        self._tags_route_cache: dict[bytes, tuple[str, str, None] | None] = {}
        self._housekeeping: asyncio.Task[None] | None = None
        self.security = Security(settings)
        self.security.access.on_change.append(self.forget_admissions)
        #: rate limits, deadlines and retries (broker.traffic); the cluster side sets the live node count
        self.traffic = TrafficRules(self.loop, self.clock, self.registry, settings.max_retry_frame_size)
        self.traffic.on_change.append(self.forget_admissions)
        self.traffic.file_limits = limits_from_config(settings.limits)
        self.traffic.set_limits({})
        #: services whose requests carry who asked (broker.principal); empty: nothing is added
        self.forward_principal: set[str] = set()
        for service, obj in settings.services.items():
            self.set_policy(service, ServicePolicy.from_obj(obj))
        #: admits broker links from other nodes when this node is in a cluster (cluster.links.Links)
        self.links: LinkAuthority | None = None
        #: the HTTP gateway of the --ws listener (broker.gateway.Gateway), for its metrics
        self.gateway: Gateway | None = None
        #: called with the session after a successful SETUP (topology push, metrics)
        self.setup_listeners: list[Callable[[Session], None]] = []
        #: called with the services whose local providers changed (routing-table gossip;
        #: naming them keeps a registration O(its services) however many services exist)
        self.registry_listeners: list[Callable[[frozenset[str]], None]] = []
        #: deadline wheel: slot (time // HOUSEKEEPING_INTERVAL_S) -> sessions to check then;
        #: each session sits in about one slot, at its next SETUP or keepalive deadline, so an
        #: idle fleet costs one check per device per max lifetime, not one per pass
        self._wheel: dict[int, list[Session]] = collections.defaultdict(list)
        self._wheel_done = -1  # the last slot checked; set from the clock on first use
        self._next_check: dict[Session, int] = {}
        #: sessions holding fragmented requests (checked every pass: reassembly_timeout_s)
        self._reassembling: set[Session] = set()
        #: sessions that negotiated leases (renewed every pass as needed)
        self._leased: set[Session] = set()
        self.setup_rate = SetupRate(settings.max_setups_per_s)
        #: when the loop ran behind: not held against a client's SETUP deadline (broker.looplag)
        self.lag = LoopLag(2 * settings.setup_timeout_s + STALL_THRESHOLD_S)
        self._last_pass = -1.0
        #: a fleet registers by the thousand a second: those lines are counted past 20 a second
        self._registration_log = LogBudget(log, "registrations")

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
        if self.tracer.export is not None:  # the spans still queued go out before the process exits
            await self.loop.run_in_executor(None, self.tracer.export.close)

    async def drain(self, timeout: float) -> None:
        """Refuse new streams, wait up to ``timeout`` for open ones to end.

        A connection is closed (ERROR CONNECTION_CLOSE) as soon as it has no open stream,
        so clients move to another node at once instead of meeting REJECTED here.
        """
        self.draining = True
        self.forget_admissions()
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
        self.watch(session, session.connected_at + self.settings.setup_timeout_s)
        self._per_source[str(session.peer[0]) if session.peer else "?"] += 1
        self.stats["connections_accepted"] += 1

    def remove_session(self, session: Session) -> None:
        self._reassembling.discard(session)
        self._leased.discard(session)
        self._next_check.pop(session, None)
        if session in self.sessions:
            self.sessions.discard(session)
            key = str(session.peer[0]) if session.peer else "?"
            self._per_source[key] -= 1
            if self._per_source[key] <= 0:
                del self._per_source[key]
        if session in self._dirty:
            self._dirty.remove(session)

    def limit_hit(self, limit: str) -> None:
        """A peer ran into ``limit`` (a setting name): count it for the metrics."""
        self.meter.limit_hits[limit] += 1

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

    def check_setup_rate(self) -> None:
        """Raise LimitExceeded(max_setups_per_s, REJECTED_SETUP) with a retry hint when over the rate."""
        wait_ms = self.setup_rate.retry_after_ms(self.clock())
        if wait_ms:
            raise LimitExceeded(
                "max_setups_per_s",
                f"too many connections being set up: this node accepts {self.settings.max_setups_per_s} SETUPs per "
                f"second (max_setups_per_s); retry after {wait_ms} ms",
                ErrorCode.REJECTED_SETUP,
            )

    def check_registration(self, session: Session, registration: md.Registration) -> None:
        if session.is_link:
            raise FrameError("a broker link cannot register services", ErrorCode.REJECTED)
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
        if session.is_link:
            # The node a link comes from checked the request at its own edge; a link that
            # has not answered its challenge yet may send nothing.
            return "" if is_proven_link(session.principal) else "this broker link has not proven the cluster key yet"
        if not self.security.access.can_call(session.principal, route):
            return denied_message(session.principal, CALL, route)
        return ""

    # -- registry ---------------------------------------------------------------------------

    def forget_admissions(self) -> None:
        """Send every connection's next requests through the full checks again (access, policy,
        rate limits, draining): the route caches of ``Session.open_cache`` are dropped as they are next read."""
        self.open_generation += 1

    def set_policy(self, service: str, policy: ServicePolicy | None) -> None:
        """Set (None: clear) a service's policy: its load balancing, deadline and retries."""
        self.forget_admissions()
        self.registry.set_policy(service, policy)
        if policy is None:
            self.traffic.set_service(service, None, 0)
        else:
            self.traffic.set_service(service, policy.deadline_ms, policy.retries)
        self.forward_principal.discard(service)
        if policy is not None and policy.forward_principal:
            self.forward_principal.add(service)

    def register(self, session: Session, registration: md.Registration) -> None:
        """Replace the services ``session`` provides with those of ``registration``."""
        old = set(session.registration.services) if session.registration else set()
        session.registration = registration
        for service in old - set(registration.services):
            self.registry.remove(service, session)
        for service in registration.services:
            self.registry.add(service, session)
        if self._registration_log.allow(self.clock()):
            log.info(
                "connection %s registered instance '%s' for %s",
                session.id,
                registration.instance,
                ", ".join(registration.services) or "no services",
                extra=conn_fields(session),
            )
        self._registry_changed(frozenset(old) | frozenset(registration.services))

    def unregister(self, session: Session) -> None:
        if session.registration is None:
            return
        for service in session.registration.services:
            self.registry.remove(service, session)
        self._registry_changed(frozenset(session.registration.services))

    def provider_outcome(self, provider: Session, route: str, ok: bool) -> None:
        """How ``provider`` answered a request of ``route``: an APPLICATION_ERROR (or, from
        whoever times requests out, a timeout) when not ``ok``; a good answer after failures
        when ``ok``. Feeds the service's outlier ejection (broker.outlier); a broker link is
        never judged here (the far node judges its own providers)."""
        if provider.registration is None:
            return
        if ok:
            self.registry.provider_ok(provider, provider.registration.services)
            return
        provider.failures += 1
        service = md.service_of(route)
        if self.registry.provider_failed(service, provider, self.clock()):
            log.warning(
                "ejected %s from service '%s' after %d errors in a row", provider.provider_label, service, provider.failures
            )

    def _registry_changed(self, services: frozenset[str]) -> None:
        for listener in self.registry_listeners:
            listener(services)

    def resolve(self, metadata: bytes, metadata_mime: str) -> tuple[str, str, int | None] | None:
        """``(route, service, trace)`` of a request's metadata, or None when it names no route;
        ``trace`` is where a well-formed trace entry's content starts in ``metadata`` (None
        without one). Raises FrameError for unreadable metadata.

        Cached, because clients repeat the same bytes; only small metadata is cached
        (routing plus a little more): caching big blobs as keys would let a client pin
        megabytes of broker memory per request. Traced metadata differs on every request (its
        trace entry), so it is cached by the key ``hotpath.trace_entry`` gives: the same
        metadata with that entry's content cut out, itself metadata whose full read names the
        same route and refuses what this one's does. A full read of the request's own bytes
        is what fills the cache.
        """
        trace: int | None = None
        if metadata_mime == md.COMPOSITE_MIME:
            cache = self._route_cache
            key, at = trace_entry(metadata, self.settings.max_metadata_entries)
            if at >= 0:
                trace = at
        else:
            cache, key = self._tags_route_cache, metadata
        if len(key) > _ROUTE_CACHE_MAX_KEY:
            resolved = self._read_route(metadata, metadata_mime)
        else:
            try:
                resolved = cache[key]
            except KeyError:
                resolved = self._read_route(metadata, metadata_mime)
                if len(cache) >= _ROUTE_CACHE_SIZE:
                    cache.clear()
                cache[key] = resolved
        if trace is None or resolved is None:
            return resolved
        return resolved[0], resolved[1], trace

    def _read_route(self, metadata: bytes, metadata_mime: str) -> tuple[str, str, None] | None:
        """The full read :meth:`resolve` caches."""
        route = md.route_of(metadata, metadata_mime, self.settings.max_metadata_entries)
        return (route, md.service_of(route), None) if route is not None else None

    def authenticate_link(self, session: Session, link_entry: bytes) -> Principal:
        """Principal of an inbound broker link; refused unless a cluster is configured."""
        if self.links is None:
            raise FrameError("this node is not part of a cluster: broker links are refused", ErrorCode.REJECTED_SETUP)
        return self.links.authenticate(session, link_entry)

    def link_metadata_push(self, session: Session, metadata: bytes, frame: bytes) -> None:
        """A METADATA_PUSH on an inbound broker link: its handshake, or a routed push (see cluster.links)."""
        assert self.links is not None, "a link session exists only once authenticate_link admitted it"
        self.links.on_link_push(session, metadata, frame)

    def push_metadata(self, source: Session, route: str, frame: bytes) -> None:
        """Deliver a routed METADATA_PUSH to every provider of the route's service.

        A provider on another node gets it over the link to that node, once per node however
        many of its instances there are; the far node delivers it to its local providers. A
        push that came in over a link goes to local providers only (one hop, as requests).
        A node whose link is down misses the push: METADATA_PUSH has no reply to carry an
        error, so that is counted (``metadata_push_undelivered``), never the sender's fault.
        """
        targets: dict[int, Session] = {}
        for provider in self.registry.providers(md.service_of(route)):
            if provider is source or (provider.is_remote and source.is_link):
                continue
            target = provider.target
            if target is None or not provider.available:
                self.stats["metadata_push_undelivered"] += 1
                continue
            targets[id(target)] = target
        for target in targets.values():
            target.send_frame(frame)

    # -- hooks -----------------------------------------------------------------------------

    def on_setup(self, session: Session) -> None:
        deadline = self._credential_deadline(session, self.clock(), session.last_recv + session.max_lifetime_ms / 1000.0)
        if deadline is None:
            return
        self.watch(session, deadline)
        if session.lease_enabled:
            self._leased.add(session)
            self._grant_lease(session)
        for listener in self.setup_listeners:
            listener(session)

    def _grant_lease(self, session: Session) -> None:
        session.send_frame(lease_frame(self.settings.lease_ttl_ms, self.settings.lease_requests))
        session.lease_granted_until = self.clock() + self.settings.lease_ttl_ms / 1000.0

    # -- housekeeping ---------------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        last = self.clock()
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            now = self.clock()
            stalled, last = now - last - HOUSEKEEPING_INTERVAL_S, now
            try:
                if stalled > STALL_THRESHOLD_S:
                    self.excuse_stall(stalled)
                    await asyncio.sleep(0)  # read what the peers sent meanwhile before judging them
                    now = self.clock()
                self.housekeeping(now)
                self.security.enforce(self)
            except Exception:  # a bug here must not stop keepalive enforcement for good
                log.exception("housekeeping pass failed")

    def excuse_stall(self, stalled: float) -> None:
        """This process did not run for ``stalled`` seconds: move every peer's deadlines by that much.

        A node resumed after SIGSTOP finds every peer silent for the whole pause, though
        their keepalives sit unread in its socket buffers; closing them would blame healthy
        clients (and broker links) for our own pause. A peer that really went silent is
        still dropped, one max lifetime after the stall.
        """
        log.warning("this node stalled for %.1f s (paused?); keepalive and SETUP deadlines are extended", stalled)
        self.stats["stalls"] += 1
        for session in list(self.sessions):
            session.last_recv += stalled
            session.connected_at += stalled

    def watch(self, session: Session, when: float) -> None:
        """Check ``session``'s deadlines at ``when`` (broker clock), at most one pass late.

        A session has one pending check (``_next_check``); an earlier one already pending
        stands, since the check reschedules from the session's state at the time.
        """
        if self._wheel_done < 0:
            self._wheel_done = int(self.clock() // HOUSEKEEPING_INTERVAL_S) - 1
        slot = max(int(when // HOUSEKEEPING_INTERVAL_S), self._wheel_done + 1)
        pending = self._next_check.get(session)
        if pending is not None and self._wheel_done < pending <= slot:
            return
        self._next_check[session] = slot
        self._wheel[slot].append(session)

    def watch_reassembly(self, session: Session) -> None:
        """``session`` holds a fragmented request now: expire it by reassembly_timeout_s."""
        self._reassembling.add(session)

    def housekeeping(self, now: float) -> None:
        """Enforce SETUP timeouts and keepalive lifetimes of the sessions due; renew leases we
        granted; expire unfinished fragmented requests."""
        late = now - self._last_pass - HOUSEKEEPING_INTERVAL_S if self._last_pass >= 0 else 0.0
        if late <= STALL_THRESHOLD_S:  # a longer stall was excused whole (excuse_stall)
            self.lag.add(now, late)
        self._last_pass = now
        current = int(now // HOUSEKEEPING_INTERVAL_S)
        if self._wheel_done < 0:
            self._wheel_done = current - 1
        due: list[tuple[int, Session]] = []
        for slot in range(self._wheel_done + 1, current + 1):
            due.extend((slot, session) for session in self._wheel.pop(slot, ()))
        self._wheel_done = max(self._wheel_done, current)
        next_check = self._next_check
        for slot, session in due:
            if next_check.get(session) != slot:
                continue  # moved to an earlier check, or gone
            del next_check[session]
            if session.state is State.CLOSED or session.closing:
                continue
            deadline = self._check_deadline(session, now)
            if deadline is not None:
                self.watch(session, deadline)
        renew_margin = self.settings.lease_ttl_ms / 2000.0
        for session in list(self._leased):
            if session.state is State.SERVING and not session.closing and session.lease_granted_until - now < renew_margin:
                self._grant_lease(session)
        for session in list(self._reassembling):
            if session.reassembling:
                session.expire_reassembly(now)
            if not session.reassembling:
                self._reassembling.discard(session)

    def _check_deadline(self, session: Session, now: float) -> float | None:
        """Close ``session`` if its SETUP or keepalive deadline passed; else its next deadline."""
        if session.state is State.AWAIT_SETUP:
            # counted from accept, less the time this node was behind (at most the timeout
            # again): a node late in a storm must not blame its clients (broker.looplag)
            timeout = self.settings.setup_timeout_s
            excused = min(self.lag.since(session.connected_at), timeout)
            if now - session.connected_at > timeout + excused:
                self.stats["setup_timeouts"] += 1
                behind = f" (not counting {excused:.1f} s this node was behind)" if excused >= 0.05 else ""
                session.fail(ErrorCode.INVALID_SETUP, f"no SETUP frame within {timeout:g} s{behind}")
                return None
            return session.connected_at + timeout + excused
        lifetime = session.max_lifetime_ms / 1000.0
        if now - session.last_recv > lifetime:
            self.stats["keepalive_timeouts"] += 1
            session.timed_out = True
            session.fail(
                ErrorCode.CONNECTION_ERROR,
                f"no frame from the client within its max lifetime of {session.max_lifetime_ms} ms",
            )
            return None
        return self._credential_deadline(session, now, session.last_recv + lifetime)

    def _credential_deadline(self, session: Session, now: float, deadline: float) -> float | None:
        """``deadline``, or the earlier time ``session``'s credentials run out; None (and the
        session closed) if they ran out or were revoked already."""
        reason, left = self.security.credentials_left(session.principal)
        if reason:
            self.stats["credential_closes"] += 1
            session.fail(ErrorCode.CONNECTION_CLOSE, reason)
            return None
        return deadline if left is None or now + left >= deadline else now + left

    # -- views ------------------------------------------------------------------------------

    def services_view(self, names: list[str] | None = None) -> dict[str, Any]:
        """Services (all, sorted, or just ``names`` in their order) with their providers."""
        out: dict[str, Any] = {}
        now = self.clock()
        for service in sorted(self.registry.names()) if names is None else names:
            providers = self.registry.providers(service)
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
                        "load": p.balance_load,
                        "rtt_ms": round(estimate(p, now) * 1000.0, 3),
                        "tags": dict(p.tags),
                        "ejected": self.registry.ejected(service, p, now),
                    }
                    for p in providers
                ],
            }
        return out
