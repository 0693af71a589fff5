"""Request-level traffic rules of the relay: rate limits, deadlines and retries.

Rules of this module:

* **Rate limits** (``limits/<name>`` in the config store, ``[limits.<name>]`` in the config
  file, both parsed by :meth:`RateLimit.from_obj`): a token bucket per principal (for a
  ``principal`` glob, each matching principal has its own bucket) or per service. Each node
  enforces its share: ``rate`` and ``burst`` divided by the number of live nodes, which the
  cluster side sets through :meth:`TrafficRules.set_live_nodes` as members join and leave
  (``broker/`` never imports ``cluster/``). A refused request gets ERROR(REJECTED) whose
  message begins ``rate limit '<name>'``; ``refused`` counts it by limit name.
* **Deadlines** (``deadline_ms`` of ``services/<service>``, or the requester's
  ``message/x.rsbroker.deadline.v0`` entry, the shorter wins): request-response only. A
  request still unanswered at its deadline gets ERROR(CANCELED) to the requester and CANCEL
  to the provider. One structure per node — a FIFO per deadline duration, each in deadline
  order — and one timer armed for the earliest head, never a task or timer per request;
  answered requests leave lazily (swept when the structure doubles). A requester's deadline
  is rounded down to two significant digits, which bounds the number of FIFOs. A request
  ended at its service's ``deadline_ms`` counts as a failure of its provider towards outlier
  ejection (``broker.outlier``), as an APPLICATION_ERROR does; one ended at a requester's
  shorter deadline does not. Either is a round-trip sample of its deadline (``broker.latency``).
* **Retries** (``idempotent`` and ``retries`` of ``services/<service>``): a request-response
  of an idempotent service is kept (one frame, not fragmented, at most ``max_retry_frame_size``
  bytes) until its provider answers; if the provider refuses it (ERROR REJECTED) or its
  connection is lost before it began to answer, it goes to another provider instead of
  failing, up to ``retries`` times, while the node's budget allows (``RETRY_BUDGET`` of the
  requests kept, so at most 20 %). A retry not made for the budget or the size is counted
  by service and reason.
* Requests that arrive over a broker link were held to these rules at their edge node and
  are not counted again.
* **Where the work is done:** this module owns the rules and decides; the per-request
  arithmetic runs in the relay's hot path (``broker.hotpath``, compiled when it can be):
  ``spend`` of a plan's buckets (``Bucket``), ``watch`` of a deadline and retry marks on the
  node's ``TrafficState``, ``sweep`` of the deadline FIFOs, ``keep`` of a retried frame. A
  request's rules are resolved once on the relay's full path, as a ``RouteRules``
  (:meth:`TrafficRules.route_rules`: the buckets of its principal and service, its deadline,
  its retries), and its route cache entry keeps them for the repeats it opens; so a change of the limits, a sweep of principals' buckets
  (``on_change``) and a change of a service's policy (``Broker.set_policy``) each drop the
  route caches (``Broker.forget_admissions``).
"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from broker import metadata as md
from broker import metering
from broker.frames import HEADER_LENGTH, ErrorCode, FrameError, cancel_frame, error_frame
from broker.hotpath import TOO_LARGE, Bucket, RouteRules, TrafficState, forward, request_metadata, spend, sweep
from broker.latency import observe

if TYPE_CHECKING:
    from broker.registry import Registry
    from broker.session import Session, Stream

#: principals whose buckets are kept before those that refilled (same as absent) are dropped
MAX_BUCKETS = 10_000
#: the deadline entry's MIME type as it appears in composite metadata: a cheap pre-check
DEADLINE_TAG = md.DEADLINE_MIME.encode("ascii")
#: shortest metadata that can hold a deadline entry (its MIME type with the type's length byte,
#: the 3-byte entry length and one digit): shorter metadata, which route-only metadata mostly
#: is, is passed over with a length test (~15 ns) instead of a scan (~50 ns)
DEADLINE_ENTRY_MIN = len(DEADLINE_TAG) + 5
#: why a retry was not made (the ``reason`` label of rsbroker_retries_refused_total)
REFUSED_BUDGET = "budget"
REFUSED_TOO_LARGE = "too_large"
#: deadlines are kept to within this, s: expiries due within one tick are handled together
DEADLINE_TICK_S = 0.01
#: fewest watched requests worth sweeping for answered ones: small, so that answered requests
#: die young; a backlog of thousands costs more in garbage collection (measured: +20 % relay
#: CPU per request at 4096) than the sweeps do
COMPACT_MIN = 256
#: retries earned per idempotent request (at most 20 % of them are sent again) ...
RETRY_BUDGET = 0.2
#: ... and the budget a quiet node starts with and never holds more than, requests
RETRY_FLOOR = 10
RETRY_CAP = 100
#: longest deadline accepted, ms (a day): beyond it a deadline is no deadline
MAX_DEADLINE_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One token bucket rule: ``rate`` requests per second, bursts of ``burst``, cluster-wide."""

    name: str
    principal: str | None
    service: str | None
    rate: float
    burst: float

    @classmethod
    def from_obj(cls, name: str, obj: object) -> "RateLimit":
        """The one parser of a limit (config file and config store); ValueError names the field."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"rate limit '{name}' must be an object, got {type(obj).__name__}")
        unknown = set(obj) - {"principal", "service", "rate", "burst"}
        if unknown:
            raise ValueError(
                f"rate limit '{name}': unknown field(s) {', '.join(sorted(map(str, unknown)))}; allowed: principal, service, rate, burst"
            )
        principal, service = obj.get("principal"), obj.get("service")
        if (principal is None) == (service is None):
            raise ValueError(f"rate limit '{name}' needs exactly one of 'principal' (a glob) or 'service' (a name)")
        for field_name, value in (("principal", principal), ("service", service)):
            if value is not None and (not isinstance(value, str) or not value or len(value) > 255):
                raise ValueError(f"rate limit '{name}': '{field_name}' must be a non-empty string of at most 255 characters")
        rate, burst = obj.get("rate"), obj.get("burst", obj.get("rate"))
        for field_name, value in (("rate", rate), ("burst", burst)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"rate limit '{name}': '{field_name}' must be a number > 0 (requests per second / requests)")
        return cls(name, principal, service, float(rate), float(burst))  # type: ignore[arg-type]


def limits_from_config(obj: Mapping[str, object]) -> dict[str, RateLimit]:
    """``{name: RateLimit}`` of a ``limits`` table; ValueError for the first bad one."""
    return {name: RateLimit.from_obj(name, value) for name, value in obj.items()}


#: headroom added to every bucket, in intervals (see _shape)
_ROUNDING_SLACK = 1e-9


def _bucket(lim: RateLimit, share: int, now: float) -> Bucket:
    """A full token bucket of this node's share of ``lim`` (``hotpath.Bucket``, kept as GCRA
    does: one number per bucket, no refill arithmetic; spent by ``hotpath.spend``)."""
    return Bucket(lim, now, *_shape(lim, share))


def _shape(lim: RateLimit, share: int) -> tuple[float, float]:
    """(seconds per request, burst headroom in seconds) of this node's share of ``lim``.

    The headroom gets a billionth of an interval of slack: ``tat`` is a sum of intervals, and
    its rounding could put a burst's last request spent at one instant (one tick of the loop's
    millisecond clock) a hair past the headroom, refusing it."""
    interval = share / lim.rate
    burst = lim.burst / share if lim.burst >= share else 1.0
    return interval, (burst - 1.0 + _ROUNDING_SLACK) * interval


class TrafficRules:
    """Rate limits, deadlines and retries of one node."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float], registry: "Registry", max_kept: int = 64 * 1024
    ) -> None:
        self.loop = loop
        self.clock = clock
        self.registry = registry
        #: what each request under a deadline or retries updates, read and written by the hot
        #: path (``hotpath.TrafficState``): ``max_kept`` is the largest request frame kept for a
        #: retry, bytes (``max_retry_frame_size``); the rest is explained where it is used below
        self.state = TrafficState(self, max_kept, COMPACT_MIN)
        #: called when limits change or principals' buckets are swept: a route cache entry holds
        #: the buckets its requests spend (``hotpath.RouteRules``), so the relay drops its route
        #: caches then (``Broker.forget_admissions``), as for access rules
        self.on_change: list[Callable[[], None]] = []
        #: retries of each idempotent service (kept by :meth:`set_service`)
        self.retries: dict[str, int] = {}
        #: retries this node may still spend: RETRY_BUDGET per kept request, at most RETRY_CAP,
        #: starting at RETRY_FLOOR; earned lazily: requests marked since the budget was last
        #: brought up to date are counted in ``state.marked`` (one increment per request), which
        #: adds up to the same figure as capping after each addition
        self.retry_budget = float(RETRY_FLOOR)
        #: requests sent again by service, and those that would have been but were not, by
        #: (service, reason): the budget was spent, or the request was too large to keep
        self.retried: collections.Counter[str] = collections.Counter()
        self.retries_refused: collections.Counter[tuple[str, str]] = collections.Counter()
        self.file_limits: dict[str, RateLimit] = {}
        self._limits: dict[str, RateLimit] = {}
        #: deadline_ms of the services that have one (kept by :meth:`set_service`)
        self.deadlines: dict[str, int] = {}
        self._principal_limits: list[RateLimit] = []
        #: buckets by service, and by principal name (made on a principal's first request)
        self._by_service: dict[str, tuple[Bucket, ...]] = {}
        self._by_principal: dict[str, tuple[Bucket, ...]] = {}
        #: the buckets a request spends, resolved once (:meth:`route_rules`): for each service with a limit, by principal
        #: name, its service buckets then the principal's (the same bucket objects, so one
        #: principal has one bucket per limit whichever service it calls). Services without a
        #: limit use ``_by_principal`` itself; so the entries are bounded by the configured
        #: service limits times the principals kept, whatever services requesters name. A
        #: route cache entry holds its plan too.
        self._plans: dict[str, dict[str, tuple[Bucket, ...]]] = {}
        #: any limit configured: a request has a plan of buckets only then
        self.active = False
        #: live nodes sharing each limit (1 without a cluster)
        self.live_nodes = 1
        #: refusals by limit name, deadline expiries by service (for /metrics)
        self.refused: collections.Counter[str] = collections.Counter()
        self.timeouts: collections.Counter[str] = collections.Counter()
        #: requests watched for their deadline: one FIFO per duration (ms, ``state.queues``: a
        #: list, appended to by the hot path and cut at its head by :meth:`expire`), so each is
        #: in deadline order and appending is O(1); one timer armed for the earliest head
        #: (at ``state.timer_at``). A request's deadline is its ``opened_at`` plus the FIFO's
        #: duration: the stream alone is kept, no tuple per request. ``state.tracked`` counts the
        #: watched requests; at ``state.compact_at`` answered ones are swept out (amortised O(1)
        #: per request)
        self._timer: asyncio.TimerHandle | None = None

    # -- rate limits ------------------------------------------------------------------------

    def set_limits(self, limits: Mapping[str, RateLimit]) -> None:
        """Replace the config store's limits (laid over the config file's, as access rules are)."""
        merged = {**self.file_limits, **limits}
        self._limits = merged
        self._principal_limits = [lim for lim in merged.values() if lim.principal is not None]
        now = self.clock()
        # a changed limit starts full, at its new size
        by_service: dict[str, list[Bucket]] = {}
        for lim in merged.values():
            if lim.service is not None:
                by_service.setdefault(lim.service, []).append(_bucket(lim, self.live_nodes, now))
        self._by_service = {service: tuple(buckets) for service, buckets in by_service.items()}
        self._by_principal = {}
        self._plans = {service: {} for service in self._by_service}
        self.active = bool(merged)
        self._changed()

    def _changed(self) -> None:
        """The buckets requests spend were replaced: route cache entries holding them go."""
        for callback in self.on_change:
            callback()

    def set_live_nodes(self, count: int) -> None:
        """The cluster has ``count`` live nodes: each enforces 1/count of every limit."""
        count = max(1, count)
        if count == self.live_nodes:
            return
        self.live_nodes = count
        now = self.clock()
        for buckets in (*self._by_service.values(), *self._by_principal.values()):
            for bucket in buckets:  # changed in place: the plans and route caches hold these
                # keep how far ahead of now the bucket is in requests, at the new pace
                used = max(0.0, bucket.tat - now) / bucket.interval
                bucket.interval, bucket.tolerance = _shape(bucket.limit, count)
                bucket.tat = now + used * bucket.interval

    def admit(self, rules: RouteRules | None, principal: Any, service: str, now: float) -> str:
        """'' when a request of ``principal`` for ``service`` under ``rules`` (:meth:`route_rules`)
        may go on; else why not (spends a token of each bucket of its plan in turn, the
        service's first, up to the first that has none left). A repeat opened from the route
        cache spends its entry's plan in the hot path itself and asks only :meth:`refusal`."""
        if rules is None or rules.plan is None:
            return ""
        spent = spend(rules.plan, now)
        return "" if spent is None else self.refusal(spent.limit, principal, service)

    def _plan_of(self, name: str, service: str, now: float) -> tuple[Bucket, ...]:
        """The buckets a request of principal ``name`` for ``service`` spends, kept for the next."""
        plan = self._plans.get(service, self._by_principal).get(name)
        if plan is not None:
            return plan
        buckets = self._by_principal.get(name)
        if buckets is None:
            buckets = self._principal_buckets(name, now)
        plans = self._plans.get(service)
        if plans is None:
            return buckets
        plan = plans[name] = self._by_service[service] + buckets
        return plan

    def _principal_buckets(self, name: str, now: float) -> tuple[Bucket, ...]:
        """The buckets of principal ``name``: one per limit whose glob matches it (none for most
        when no principal limit is set), made on its first request."""
        if len(self._by_principal) >= MAX_BUCKETS:
            # a principal whose buckets have all refilled is the same as one never seen: forget
            # those, and the plans and route cache entries holding their buckets (rebuilt on the
            # next request), or a principal could spend an old bucket on one connection and a
            # new one on another
            kept = {n: b for n, b in self._by_principal.items() if any(x.tat > now for x in b)}
            if len(kept) < len(self._by_principal):
                self._by_principal = kept
                self._plans = {service: {} for service in self._plans}
                self._changed()
        buckets = tuple(
            _bucket(lim, self.live_nodes, now)
            for lim in self._principal_limits
            if lim.principal is not None and fnmatch.fnmatchcase(name, lim.principal)
        )
        self._by_principal[name] = buckets
        return buckets

    def refusal(self, lim: RateLimit, principal: Any, service: str) -> str:
        """The REJECTED message of a request of ``principal`` for ``service`` that ``lim`` refused,
        counted by limit name."""
        self.refused[lim.name] += 1
        share = self.live_nodes
        who = f"service '{service}'" if lim.service is not None else f"principal '{principal.name}'"
        return (
            f"rate limit '{lim.name}' exceeded by {who}: {lim.rate:g}/s, burst {lim.burst:g} across the cluster "
            f"({lim.rate / share:g}/s on this node of {share})"
        )

    def shares(self) -> dict[str, float]:
        """Each limit's per-node rate now, for /metrics."""
        return {name: lim.rate / self.live_nodes for name, lim in self._limits.items()}

    # -- per request: deadlines and retries --------------------------------------------------

    def set_service(self, service: str, deadline_ms: int | None, retries: int) -> None:
        """The deadline (None: none) and retries (0: none) of ``service``'s request-responses."""
        self.deadlines.pop(service, None)
        self.retries.pop(service, None)
        if deadline_ms is not None:
            self.deadlines[service] = deadline_ms
        if retries:
            self.retries[service] = retries

    def _deadline(self, service: str, metadata: bytes) -> int | None:
        """The deadline in ms of a request-response for ``service`` with ``metadata``: the
        service's, or the requester's entry when shorter; None when neither is set."""
        ms = self.deadlines.get(service)
        if len(metadata) >= DEADLINE_ENTRY_MIN and metadata.find(DEADLINE_TAG) >= 0:  # find: half the cost of ``in``
            asked = requested_deadline(metadata)
            if asked is not None and (ms is None or asked < ms):
                ms = asked
        return ms

    def route_rules(self, principal: Any, service: str, metadata: bytes, now: float) -> RouteRules | None:
        """What these rules do to a request of ``principal`` for ``service`` with ``metadata``,
        resolved at ``now``: the buckets it spends (:meth:`admit`), its deadline and its retries
        (``hotpath.watch`` marks a request-response with them); None when no rule applies. The
        relay resolves them once per request on its full path, and a route cache entry keeps
        them for the repeats it opens (``hotpath._open``; its key, the metadata without a trace
        entry's content, reads the same here). Valid until :attr:`on_change` is called or a
        service's policy changes, both of which drop the route caches."""
        plan = self._plan_of(principal.name, service, now) if self.active else ()
        ms = self._deadline(service, metadata)
        retries = self.retries.get(service, 0)
        if not plan and ms is None and not retries:
            return None
        return RouteRules(self.state, plan or None, ms, retries)

    def arm(self, when: float, now: float) -> None:
        """Arm the deadline timer for ``when`` (or a tick from ``now``): the hot path calls this
        when a request's deadline comes before the timer's."""
        if self._timer is not None:
            self._timer.cancel()
        self.state.timer_at = max(when, now + DEADLINE_TICK_S)
        self._timer = self.loop.call_at(self.state.timer_at, self.expire)

    def compact(self) -> None:
        """Drop answered requests from the queues once they have doubled: O(open requests) held,
        not O(rate x deadline), at an amortised O(1) per request. The hot path calls this when
        ``state.tracked`` passes ``state.compact_at``."""
        state = self.state
        queues = state.queues
        for ms, queue in queues.items():
            queues[ms] = sweep(queue)
        state.tracked = sum(len(queue) for queue in queues.values())
        state.compact_at = max(COMPACT_MIN, 2 * state.tracked)

    def expire(self) -> None:
        """End every request past its deadline; arm the timer for the next one."""
        now = self.clock()
        state = self.state
        self._timer, state.timer_at = None, math.inf
        earliest = math.inf
        for ms, queue in list(state.queues.items()):
            span = ms / 1000.0
            done = 0  # the requests at the head past their deadline, cut off at once
            while done < len(queue) and queue[done].opened_at + span <= now:
                st = queue[done]
                done += 1
                if not st.out_done and st.prov is not None:
                    self._end(st, st.prov, ms)
            del queue[:done]
            state.tracked -= done
            if queue:
                earliest = min(earliest, queue[0].opened_at + span)
            else:
                del state.queues[ms]
        if earliest < math.inf:
            self.arm(earliest, now)

    def _end(self, st: "Stream", prov: "Session", ms: int) -> None:
        """ERROR(CANCELED) to the requester, CANCEL to the provider, the stream forgotten."""
        service = md.service_of(st.route)
        st.in_done = st.out_done = True
        st.req.send_frame(error_frame(st.req_id, ErrorCode.CANCELED, f"deadline of {ms} ms exceeded for route '{st.route}' (service '{service}')"))
        prov.send_frame(cancel_frame(st.prov_id))
        st.req._finish(st, metering.TIMEOUT)
        self.timeouts[service] += 1
        now = self.clock()
        observe(prov, now - st.opened_at, now)  # at least this long: what p2c should weigh it by
        if ms == self.deadlines.get(service):
            # Outlier ejection counts it as an error (Envoy's consecutive gateway failures) when
            # the service's own deadline ran out, never a requester's shorter one: a requester
            # could otherwise eject any provider by asking for 1 ms.
            st.req.broker.provider_outcome(prov, st.route, False)


    # -- retries ----------------------------------------------------------------------------

    def retry_rejected(self, st: "Stream", buf: Any, off: int, end: int) -> bool:
        """The provider answered ERROR: send the request again if that was REJECTED (True when sent)."""
        if end - off < HEADER_LENGTH + 4 or int.from_bytes(buf[off + HEADER_LENGTH : off + HEADER_LENGTH + 4], "big") != ErrorCode.REJECTED:
            st.retry = st.kept = None
            return False
        return self.retry(st)

    def retry(self, st: "Stream") -> bool:
        """Send ``st``'s request to another provider; False when it may not or nobody can take it."""
        frame = st.kept  # kept by ``hotpath.keep`` once the request went out whole
        service = md.service_of(st.route)
        if frame is None:  # sends left, but no frame: a fragmented request is not kept
            st.retry = None
            return False
        state = self.state
        if state.marked:
            self.retry_budget = min(float(RETRY_CAP), self.retry_budget + RETRY_BUDGET * state.marked)
            state.marked = 0
        if frame is TOO_LARGE or self.retry_budget < 1.0:
            self.retries_refused[service, REFUSED_TOO_LARGE if frame is TOO_LARGE else REFUSED_BUDGET] += 1
            st.retry = st.kept = None
            return False
        failed = st.prov
        # the kept frame is the one the provider got: composite metadata if the requester sent bare routing
        mime = md.COMPOSITE_MIME if st.req.metadata_mime == md.ROUTING_MIME else st.req.metadata_mime
        provider, _ = self.registry.pick(service, self.clock(), st.req.is_link, request_metadata(frame, 0, len(frame))[0], mime)
        if provider is None or provider.target is failed:
            st.retry = st.kept = None
            return False
        self.retry_budget -= 1.0
        if failed is not None and failed.streams.pop(st.prov_id, None) is not None:
            failed.outstanding -= 1
        dest = provider.target
        pid = dest.allocate_local_id()
        st.prov, st.prov_id, st.prov_sid = dest, pid, pid.to_bytes(4, "big")
        if st.retry > 1:  # type: ignore[operator]  # sends left: set while a request may be sent again
            st.retry -= 1  # type: ignore[operator]
        else:
            st.retry = st.kept = None
        dest.streams[pid] = st
        dest.outstanding += 1
        forward(dest, st.prov_sid, frame, 0, len(frame))
        st.meter.bytes_in += len(frame)  # type: ignore[union-attr]
        self.retried[service] += 1
        return True


def requested_deadline(metadata: bytes) -> int | None:
    """The requester's deadline entry (ASCII decimal ms), None when absent or unreadable."""
    try:
        entry = md.find_entry(metadata, md.DEADLINE_MIME)
    except FrameError:
        return None
    if entry is None or not entry.isdigit() or len(entry) > 9:
        return None
    value = int(entry)
    if not 0 < value <= MAX_DEADLINE_MS:
        return None
    step = 10 ** max(0, len(str(value)) - 2)  # two significant digits, rounded down: never later
    return value - value % step
