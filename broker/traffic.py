"""Request-level traffic rules of the relay: rate limits and deadlines.

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
  to the provider. One heap of deadlines per node and one timer armed for its earliest
  entry, never a task or timer per request; answered requests leave the heap lazily.
* Requests that arrive over a broker link were held to these rules at their edge node and
  are not counted again.
"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from broker import metadata as md
from broker.frames import ErrorCode, FrameError, cancel_frame, error_frame

if TYPE_CHECKING:
    from broker.session import Stream

#: buckets kept before full ones (indistinguishable from absent ones) are dropped
MAX_BUCKETS = 10_000
#: the deadline entry's MIME type as it appears in composite metadata: a cheap pre-check
DEADLINE_TAG = md.DEADLINE_MIME.encode("ascii")
#: smallest heap worth sweeping for answered requests
COMPACT_MIN = 4096
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


class _Bucket:
    """Tokens left at ``stamp``; ``rate`` and ``burst`` are this node's share of its limit's."""

    __slots__ = ("tokens", "stamp", "rate", "burst")

    def __init__(self, lim: RateLimit, share: int, now: float) -> None:
        self.rate = lim.rate / share
        self.burst = lim.burst / share if lim.burst >= share else 1.0
        self.tokens = self.burst
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class TrafficRules:
    """Rate limits and deadlines of one node."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float]) -> None:
        self.loop = loop
        self.clock = clock
        self.file_limits: dict[str, RateLimit] = {}
        self._limits: dict[str, RateLimit] = {}
        #: deadline_ms of the services that have one (kept by Broker.set_policy)
        self.deadlines: dict[str, int] = {}
        self._principal_limits: list[RateLimit] = []
        self._service_limits: dict[str, list[RateLimit]] = {}
        #: any limit configured: the relay asks :meth:`admit` only then
        self.active = False
        #: live nodes sharing each limit (1 without a cluster)
        self.live_nodes = 1
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        #: refusals by limit name, deadline expiries by service (for /metrics)
        self.refused: collections.Counter[str] = collections.Counter()
        self.timeouts: collections.Counter[str] = collections.Counter()
        self._heap: list[tuple[float, int, Stream, int]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        #: heap size at which answered entries are swept out (amortised O(1) per request)
        self._compact_at = COMPACT_MIN

    # -- rate limits ------------------------------------------------------------------------

    def set_limits(self, limits: Mapping[str, RateLimit]) -> None:
        """Replace the config store's limits (laid over the config file's, as access rules are)."""
        merged = {**self.file_limits, **limits}
        self._limits = merged
        self._principal_limits = [lim for lim in merged.values() if lim.principal is not None]
        self._service_limits = {}
        for lim in merged.values():
            if lim.service is not None:
                self._service_limits.setdefault(lim.service, []).append(lim)
        self._buckets = {}  # a changed limit starts full, at its new size
        self.active = bool(merged)

    def set_live_nodes(self, count: int) -> None:
        """The cluster has ``count`` live nodes: each enforces 1/count of every limit."""
        count = max(1, count)
        if count != self.live_nodes:
            self.live_nodes = count
            now = self.clock()
            for (name, _), bucket in self._buckets.items():
                lim, full = self._limits[name], bucket.tokens >= bucket.burst
                share = _Bucket(lim, count, now)
                bucket.rate, bucket.burst = share.rate, share.burst
                bucket.tokens = share.burst if full else min(bucket.tokens, share.burst)

    def admit(self, principal: Any, service: str, now: float) -> str:
        """'' when a request of ``principal`` for ``service`` may go on; else why not (spends a token)."""
        limits = self._service_limits.get(service)
        if limits is not None:
            for lim in limits:
                if not self._bucket(lim, service, now).take(now):
                    return self._refusal(lim, f"service '{service}'")
        if self._principal_limits:
            name = getattr(principal, "name", "anonymous")
            for lim in self._principal_limits:
                if fnmatch.fnmatchcase(name, lim.principal) and not self._bucket(lim, name, now).take(now):  # type: ignore[arg-type]
                    return self._refusal(lim, f"principal '{name}'")
        return ""

    def _bucket(self, lim: RateLimit, key: str, now: float) -> _Bucket:
        bucket = self._buckets.get((lim.name, key))
        if bucket is None:
            if len(self._buckets) >= MAX_BUCKETS:
                # a bucket that has refilled is the same as none: drop those
                self._buckets = {k: b for k, b in self._buckets.items() if b.tokens + (now - b.stamp) * b.rate < b.burst}
            bucket = self._buckets[(lim.name, key)] = _Bucket(lim, self.live_nodes, now)
        return bucket

    def _refusal(self, lim: RateLimit, who: str) -> str:
        self.refused[lim.name] += 1
        share = self.live_nodes
        return (
            f"rate limit '{lim.name}' exceeded by {who}: {lim.rate:g}/s, burst {lim.burst:g} across the cluster "
            f"({lim.rate / share:g}/s on this node of {share})"
        )

    def shares(self) -> dict[str, float]:
        """Each limit's per-node rate now, for /metrics."""
        return {name: lim.rate / self.live_nodes for name, lim in self._limits.items()}

    # -- deadlines --------------------------------------------------------------------------

    def track(self, st: "Stream", service: str, metadata: bytes, now: float) -> None:
        """Watch a request-response: the deadline of its service, or the requester's if shorter."""
        deadline_ms = self.deadlines.get(service)
        if DEADLINE_TAG in metadata:
            asked = requested_deadline(metadata)
            if asked is not None and (deadline_ms is None or asked < deadline_ms):
                deadline_ms = asked
        if deadline_ms is None:
            return
        when = now + deadline_ms / 1000.0
        heap = self._heap
        # id(st) breaks ties: two entries of one live stream never exist, so no Stream is compared
        heapq.heappush(heap, (when, id(st), st, deadline_ms))
        if len(heap) > self._compact_at:
            # Answered requests stay in the heap until their deadline; sweep them out once it
            # has doubled, so it holds O(open requests), not O(rate x deadline).
            heap[:] = [entry for entry in heap if not entry[2].out_done]
            heapq.heapify(heap)
            self._compact_at = max(COMPACT_MIN, 2 * len(heap))
        if when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self.loop.call_at(when, self.expire)

    def expire(self) -> None:
        """End every request past its deadline; re-arm the timer for the next one."""
        now = self.clock()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, st, ms = heapq.heappop(heap)
            if st.out_done or st.prov is None:
                continue  # answered (or refused) in time
            service = md.service_of(st.route)
            st.in_done = st.out_done = True
            st.req.send_frame(
                error_frame(st.req_id, ErrorCode.CANCELED, f"deadline of {ms} ms exceeded for route '{st.route}' (service '{service}')")
            )
            st.prov.send_frame(cancel_frame(st.prov_id))
            st.req._finish(st)
            self.timeouts[service] += 1
        self._timer = None
        self._timer_at = math.inf
        if heap:
            self._timer_at = heap[0][0]
            self._timer = self.loop.call_at(self._timer_at, self.expire)


def requested_deadline(metadata: bytes) -> int | None:
    """The requester's deadline entry (ASCII decimal ms), None when absent or unreadable."""
    try:
        entry = md.find_entry(metadata, md.DEADLINE_MIME)
    except FrameError:
        return None
    if entry is None or not entry.isdigit() or len(entry) > 9:
        return None
    value = int(entry)
    return value if 0 < value <= MAX_DEADLINE_MS else None
