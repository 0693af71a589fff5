"""The cluster routing table: which node serves which service, spread by gossip.

Rules of this module:

* Each node owns the entries of the providers connected to it, and only the owner
  changes them (:meth:`RoutingTable.set_local_service`). An entry is keyed by
  ``(owner, service, instance)`` and versioned by ``(epoch, seq)``: ``epoch`` is the
  owner's boot id (it grows across restarts; the node incarnation cannot serve, as it
  also grows on every refutation and restarts from 0), ``seq`` counts the owner's changes.
  A newer version wins; a removal is a tombstone kept ``route_tombstone_s`` so that a
  late copy of the old entry cannot bring it back.
* Work per change is O(change), never O(table): the owner queues its changes keyed by
  entry (a newer change to an entry replaces the queued one) and sends them, batched,
  once per gossip round straight to every live member - as a NATS server sends its RS+/RS-
  interest to every route and EMQX nodes batch their route syncs - instead of re-gossiping
  every entry through every node. A member that appears (joined, or came back) gets the
  owner's complete set, as a NATS route gets the full interest on connect.
* Anti-entropy by digest: push-pull carries one :class:`RouteDigest` per owner (epoch,
  live count, XOR of mixed sequence numbers, all kept up to date per change); only the
  owners whose digests differ have their entries sent back, so unchanged tables are not
  resent. An owner's own entries are authoritative: a ``complete`` batch from the owner
  replaces what we hold of it.
* A member declared dead or departed takes its entries with it, everywhere. If it comes
  back (refutation), whoever had declared it dead push-pulls with it and gets its entries
  back by digest; a restart is a new epoch, announced to everyone.
* Only entries every node can decode are announced: an entry whose route the gossip
  decoder would refuse (e.g. a service name over ``MAX_ROUTE_NAME``) is left out and
  logged, so one bad registration can never make peers drop this node's packets.
* Memory (issue 13: tens of thousands of device routes on every node): an entry as a device
  registers it (weight 1, no tags, load 0) is one ``bytes`` under its service name: its
  sequence number (8 bytes) and its instance name (UTF-8), about 50 bytes where a tuple, an
  int and a str took 140. Other entries are a tuple ``(instance, seq, weight, tags, load)``.
  The service name is the decoded string, the dict key, and the registry shares it when it
  holds providers of the service at all (``cluster.remote_routes`` makes them only for
  services that need more than the table says). No ``sys.intern``: its table would cost more
  per entry than sharing saves.
* Sans-IO: no sockets, no clock (``now`` is passed in), no threads.
"""

from __future__ import annotations

import collections
import heapq
import logging
import struct
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence, Union

from cluster.swim.config import Config
from cluster.swim.core import MemberChanged
from cluster.swim.messages import (
    DecodeError, MemberState, Message, Route, RouteBatch, RouteDigest, RouteGroup, RouteItem, decode_route_item,
)

__all__ = ["MAX_BATCH", "RemoteEntry", "RoutesChanged", "RoutingTable", "ServiceEntry"]

#: Most entries one delta batch carries; the rest wait for the next gossip round. 8192
#: entries are ~300 KB on the wire: one TCP frame that a peer decodes in tens of ms.
MAX_BATCH = 8192
_MASK = (1 << 64) - 1
#: Shared by every entry without tags (never mutated).
_NO_TAGS: dict[str, str] = {}

log = logging.getLogger("rsbroker.gossip")


@dataclass(frozen=True)
class ServiceEntry:
    """One provider instance serving one service, as its node announces it."""

    service: str
    instance: str
    weight: int = 1
    tags: Mapping[str, str] = field(default_factory=dict)
    #: Connection count or any load figure the balancer compares; higher is busier.
    load: int = 0


@dataclass(frozen=True)
class RemoteEntry:
    """A service entry and the node that serves it."""

    node: str
    entry: ServiceEntry


@dataclass(frozen=True)
class RoutesChanged:
    """Event: the entries of ``node`` for these ``services`` changed in our table."""

    node: str
    services: frozenset[str]


#: A live entry: for weight 1, no tags, load 0 (every device) ``bytes``: its seq packed in 8
#: bytes, then its instance in UTF-8 (``surrogatepass``: any str round-trips); else the tuple
#: ``(instance, seq, weight, tags, load)``. Several instances of one service at one owner
#: are a tuple of these (the rare case: one device, one instance).
_Rec = Union[bytes, tuple]
_Slot = Union[_Rec, tuple[_Rec, ...]]
_SEQ = struct.Struct(">Q")


def _mix(seq: int) -> int:
    """splitmix64 finaliser: spreads sequence numbers so that XOR-ing them is a set digest."""
    z = (seq + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _rec(instance: str, seq: int, weight: int, tags: dict, load: int) -> _Rec:
    if weight == 1 and not tags and not load:
        return _SEQ.pack(seq) + instance.encode("utf-8", "surrogatepass")
    return (instance, seq, weight, tags, load)


def _seq(rec: _Rec) -> int:
    return _SEQ.unpack_from(rec)[0] if type(rec) is bytes else rec[1]  # type: ignore[no-any-return]


def _instance(rec: _Rec) -> str:
    return rec[8:].decode("utf-8", "surrogatepass") if type(rec) is bytes else rec[0]  # type: ignore[return-value]


def _fields(rec: _Rec) -> tuple[str, int, int, dict, int]:
    """``(instance, seq, weight, tags, load)`` of a packed or full record."""
    if type(rec) is bytes:
        return rec[8:].decode("utf-8", "surrogatepass"), _SEQ.unpack_from(rec)[0], 1, _NO_TAGS, 0
    return rec  # type: ignore[return-value]


def _recs(slot: _Slot) -> tuple[_Rec, ...]:
    return (slot,) if type(slot) is bytes or type(slot[0]) is str else slot  # type: ignore[return-value]


def _tags(tags: Mapping[str, str]) -> dict[str, str]:
    return dict(tags) if tags else _NO_TAGS


class _Owner:
    """What we hold of one owner's entries at one epoch, with its running digest."""

    __slots__ = ("epoch", "top", "forgot", "routes", "tombs", "count", "mix")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        #: the highest change (seq) of the owner we applied
        self.top = 0
        #: the highest change whose tombstone we forgot: changes since an older one cannot
        #: be told as a delta any more (a removal would be missing), only as a whole copy
        self.forgot = 0
        self.routes: dict[str, _Slot] = {}
        #: removed entries: (service, instance) -> (seq, removed at)
        self.tombs: dict[tuple[str, str], tuple[int, float]] = {}
        self.count = 0
        self.mix = 0

    def get(self, service: str, instance: str) -> _Rec | None:
        slot = self.routes.get(service)
        if slot is None:
            return None
        for rec in _recs(slot):
            if _instance(rec) == instance:
                return rec
        return None

    def put(self, service: str, rec: _Rec) -> _Rec | None:
        """Store ``rec`` (replacing its instance's entry); the replaced entry, if any."""
        slot = self.routes.get(service)
        old: _Rec | None = None
        if slot is None:
            self.routes[service] = rec
        else:
            recs = _recs(slot)
            instance = _instance(rec)
            kept = tuple(r for r in recs if _instance(r) != instance)
            old = next((r for r in recs if _instance(r) == instance), None)
            self.routes[service] = rec if not kept else kept + (rec,)
        if old is not None:
            self.mix ^= _mix(_seq(old))
        else:
            self.count += 1
        self.mix ^= _mix(_seq(rec))
        return old

    def delete(self, service: str, instance: str) -> _Rec | None:
        slot = self.routes.get(service)
        if slot is None:
            return None
        recs = _recs(slot)
        old = next((r for r in recs if _instance(r) == instance), None)
        if old is None:
            return None
        kept = tuple(r for r in recs if _instance(r) != instance)
        if not kept:
            del self.routes[service]
        else:
            self.routes[service] = kept[0] if len(kept) == 1 else kept
        self.count -= 1
        self.mix ^= _mix(_seq(old))
        return old

    def digest(self, owner: str) -> RouteDigest:
        return RouteDigest(owner, self.epoch, self.top, self.count, self.mix)

    def items(self, since: int = 0) -> list[RouteItem]:
        """Every entry and tombstone newer than change ``since``, as they travel."""
        out: list[RouteItem] = [
            (seq, service, instance, weight, load, tags, False)
            for service, slot in self.routes.items() for instance, seq, weight, tags, load in map(_fields, _recs(slot))
            if seq > since
        ]
        out.extend((seq, service, instance, 0, 0, _NO_TAGS, True)
                   for (service, instance), (seq, _) in self.tombs.items() if seq > since)
        return out

    def group(self, owner: str, since: int = 0) -> RouteGroup:
        """Our copy of the owner's entries newer than ``since`` (all of them: complete)."""
        return RouteGroup(owner, self.epoch, since == 0, self.top, tuple(self.items(since)))


class RoutingTable:
    """Local entries to announce, remote entries learned; the gossip delegate of one node."""

    def __init__(self, node: str, epoch: int, config: Config) -> None:
        self.node = node
        self.epoch = epoch
        self._config = config
        self._seq = 0
        self._mine = _Owner(epoch)
        self._remote: dict[str, _Owner] = {}
        #: Owners declared dead or departed -> the epoch whose entries we dropped.
        self._gone: dict[str, int] = {}
        #: Our changes not sent yet, by entry: a newer change replaces the queued one.
        self._pending: dict[tuple[str, str], RouteItem] = {}
        #: Our epoch still has to be announced (a boot with no entries must still make
        #: peers drop the previous life's entries at once).
        self._announce_epoch = True
        #: Tombstones in the order they expire: (removed at, owner, epoch, service, instance).
        self._expiry: collections.deque[tuple[float, str, int, str, str]] = collections.deque()
        #: Work counters (entries applied from the network, entries put into messages):
        #: instrumented proof that one change costs O(change), whatever the table size.
        self.stats: collections.Counter[str] = collections.Counter()
        #: local entries left out because peers could not decode them (see _carriable)
        self.not_announced = 0

    # ---- the owner's side ---------------------------------------------------------------

    def set_local(self, entries: Iterable[ServiceEntry], now: float) -> None:
        """Replace all of this node's announced entries; only the differences are sent."""
        wanted: dict[str, list[ServiceEntry]] = {}
        for e in entries:
            wanted.setdefault(e.service, []).append(e)
        for service in set(self._mine.routes) | set(wanted):
            self.set_local_service(service, wanted.get(service, ()), now)

    def set_local_service(self, service: str, entries: Iterable[ServiceEntry], now: float) -> None:
        """Replace this node's entries of one ``service``: O(instances of it), the path a
        registration takes."""
        mine = self._mine
        wanted = {e.instance: e for e in entries if e.service == service and self._carriable(e)}
        current = {_instance(rec): rec for rec in _recs(mine.routes[service])} if service in mine.routes else {}
        for instance, e in wanted.items():
            old = current.get(instance)
            tags = _tags(e.tags)
            if old is not None and _fields(old)[2:] == (e.weight, tags, e.load):
                continue
            seq = self._next_seq()
            mine.put(service, _rec(instance, seq, e.weight, tags, e.load))
            mine.tombs.pop((service, instance), None)
            self._pending[(service, instance)] = (seq, service, instance, e.weight, e.load, tags, False)
        for instance in current.keys() - wanted.keys():
            seq = self._next_seq()
            mine.delete(service, instance)
            self._tombstone(self.node, mine, service, instance, seq, now)
            self._pending[(service, instance)] = (seq, service, instance, 0, 0, _NO_TAGS, True)

    def _carriable(self, e: ServiceEntry) -> bool:
        """Whether every node decodes ``e``'s route item; checked with the decoder itself, so
        one bad registration can never make peers drop this node's batches."""
        try:
            decode_route_item([0, e.service, e.instance, e.weight, e.load, dict(e.tags), False])
        except DecodeError as exc:
            self.not_announced += 1
            log.warning("not announcing instance %.64r of service %.64r to the cluster: %s", e.instance, e.service, exc)
            return False
        return True

    def local_entries(self) -> list[ServiceEntry]:
        return self._entries_of(self._mine)

    # ---- the reader's side --------------------------------------------------------------

    def lookup(self, service: str) -> list[RemoteEntry]:
        """Entries of other nodes for ``service``, sorted by node and instance: O(members)."""
        found: list[RemoteEntry] = []
        for owner, o in self._remote.items():
            slot = o.routes.get(service)
            if slot is not None:
                found.extend(RemoteEntry(owner, _entry(service, rec)) for rec in _recs(slot))
        return sorted(found, key=lambda x: (x.node, x.entry.instance))

    def entries(self, node: str, service: str) -> list[ServiceEntry]:
        """What ``node`` announces for ``service``: O(its instances)."""
        o = self._owner(node)
        slot = o.routes.get(service) if o else None
        return [] if slot is None else sorted((_entry(service, r) for r in _recs(slot)), key=lambda e: e.instance)

    def services_of(self, node: str) -> list[ServiceEntry]:
        """Everything ``node`` announces (our own entries for our own name): O(its table),
        for views, never on the gossip path."""
        o = self._owner(node)
        return self._entries_of(o) if o else []

    def count(self, node: str) -> int:
        """How many live entries ``node`` announces: O(1)."""
        o = self._owner(node)
        return o.count if o else 0

    def service_names(self, node: str, prefix: str = "", limit: int | None = None) -> tuple[int, list[str]]:
        """How many services of ``node`` start with ``prefix``, and the first ``limit`` of
        them in order (all when None): O(its services), for views."""
        o = self._owner(node)
        if o is None:
            return 0, []
        names = [s for s in o.routes if s.startswith(prefix)] if prefix else list(o.routes)
        return len(names), sorted(names) if limit is None else heapq.nsmallest(limit, names)

    def sole_entry(self, service: str) -> tuple[str, str] | None:
        """``(node, instance)`` of the one entry of ``service`` on other nodes, when it is the
        only one and as a device registers it (weight 1, no tags, load 0); else None.
        O(members): the relay's pick of a service it keeps no provider object for
        (``cluster.remote_routes``)."""
        found = None
        for owner, o in self._remote.items():
            slot = o.routes.get(service)
            if slot is not None:
                if found is not None or type(slot) is not bytes:
                    return None
                found = (owner, slot)
        return None if found is None else (found[0], _instance(found[1]))

    def remote_services(self) -> Iterator[str]:
        """The services other nodes announce (one held by several nodes comes once per node):
        O(table), for views."""
        for o in self._remote.values():
            yield from o.routes

    def holds(self, node: str, service: str) -> bool:
        """Whether ``node`` announces ``service``: O(1)."""
        o = self._owner(node)
        return o is not None and service in o.routes

    def knows(self, owner: str, service: str, instance: str) -> bool:
        """True if we hold a live entry of ``owner`` for this service instance."""
        o = self._owner(owner)
        return o is not None and o.get(service, instance) is not None

    # ---- Delegate of the SWIM core ---------------------------------------------------------

    def take_direct(self, now: float) -> list[Message]:
        """Our queued changes, batched, for the core to send to every live member (and
        tombstones past their time forgotten). Called once per gossip round."""
        self._collect(now)
        if not self._pending and not self._announce_epoch:
            return []
        self._announce_epoch = False
        items: list[RouteItem] = []
        pending = self._pending
        while pending and len(items) < MAX_BATCH:
            key = next(iter(pending))
            items.append(pending.pop(key))
        self.stats["entries_serialized"] += len(items)
        upto = max((item[0] for item in items), default=0)
        return [RouteBatch(self.node, (RouteGroup(self.node, self.epoch, False, upto, tuple(items)),))]

    def greeting(self) -> list[Message]:
        """Our complete set, for a member that just appeared (or everyone, after we were
        declared dead): O(our table), once per member life, as NATS on a new route."""
        group = self._mine.group(self.node)
        self.stats["entries_serialized"] += len(group.items)
        return [RouteBatch(self.node, (group,))]

    def on_route(self, route: Route, now: float) -> list[object]:
        """A single entry (the message of nodes before batches)."""
        group = RouteGroup(route.owner, route.epoch, False, route.seq, ((route.seq, route.service, route.instance,
                                                                         route.weight, route.load, route.tags,
                                                                         route.removed),))
        return self._events({route.owner: self._apply_group(group, False, now)})

    def on_batch(self, batch: RouteBatch, now: float) -> list[object]:
        changed: dict[str, set[str]] = {}
        for group in batch.groups:
            services = self._apply_group(group, group.complete and group.owner == batch.source, now)
            if services:
                changed.setdefault(group.owner, set()).update(services)
        return self._events(changed)

    def digests(self) -> tuple[RouteDigest, ...]:
        """One digest per owner we hold (ourselves first): O(members)."""
        return (self._mine.digest(self.node),) + tuple(o.digest(n) for n, o in self._remote.items())

    def answer_digests(self, source: str, digests: Sequence[RouteDigest]) -> list[Message]:
        """What ``source`` lacks, by its digests (Scuttlebutt): nothing for an owner whose
        entry set equals ours or that it knows a newer state of; the changes newer than its
        watermark when it is behind; our whole copy when the sets differ at the same
        watermark (ours complete). ``source``'s own entries are its to send."""
        theirs = {d.owner: d for d in digests}
        groups = []
        for owner, o in ((self.node, self._mine), *self._remote.items()):
            if owner == source:
                continue
            t = theirs.get(owner)
            since = 0
            if t is not None and t.epoch >= o.epoch:
                if t.epoch > o.epoch or (t.count, t.mix) == (o.count, o.mix) or t.seq > o.top:
                    continue
                if o.forgot <= t.seq < o.top:
                    since = t.seq
            group = o.group(owner, since)
            self.stats["entries_serialized"] += len(group.items)
            groups.append(group)
        return [RouteBatch(self.node, tuple(groups))] if groups else []

    def merge_state(self, source: str, routes: Sequence[Route], now: float) -> list[object]:
        """A full dump in the older push-pull form: entries one by one, the source's own
        being its complete set."""
        by_owner: dict[tuple[str, int], list[RouteItem]] = {}
        for r in routes:
            by_owner.setdefault((r.owner, r.epoch), []).append(
                (r.seq, r.service, r.instance, r.weight, r.load, r.tags, r.removed))
        groups = tuple(RouteGroup(owner, epoch, owner == source, max(i[0] for i in items), tuple(items))
                       for (owner, epoch), items in by_owner.items())
        return self.on_batch(RouteBatch(source, groups), now)

    def on_member(self, change: MemberChanged, now: float) -> list[object]:
        node = change.member.node
        if node == self.node:
            return []
        if change.member.state in (MemberState.DEAD, MemberState.LEFT):
            o = self._remote.pop(node, None)
            self._gone[node] = o.epoch if o else 0
            return [RoutesChanged(node, frozenset(o.routes))] if o and o.routes else []
        if change.member.state == MemberState.ALIVE and change.previous in (MemberState.DEAD, MemberState.LEFT):
            self._gone.pop(node, None)
        return []

    # ---- internals ---------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        self._mine.top = self._seq
        return self._seq

    def _owner(self, node: str) -> _Owner | None:
        return self._mine if node == self.node else self._remote.get(node)

    @staticmethod
    def _entries_of(o: _Owner) -> list[ServiceEntry]:
        return sorted((_entry(s, r) for s, slot in o.routes.items() for r in _recs(slot)),
                      key=lambda e: (e.service, e.instance))

    @staticmethod
    def _events(changed: Mapping[str, set[str]]) -> list[object]:
        return [RoutesChanged(node, frozenset(s)) for node, s in sorted(changed.items()) if s]

    def _apply_group(self, group: RouteGroup, complete: bool, now: float) -> set[str]:
        """Store the entries of ``group`` that are newer than ours; the services whose
        live entries changed. O(entries in the group), plus O(our copy) when ``complete``."""
        owner = group.owner
        if owner == self.node:
            return set()  # we are the authority on our own entries
        gone = self._gone.get(owner)
        if gone is not None and group.epoch <= gone:
            return set()  # a straggler from a dead member's last life
        o = self._remote.get(owner)
        changed: set[str] = set()
        if o is None or group.epoch > o.epoch:
            if o is not None:
                changed.update(o.routes)
            o = self._remote[owner] = _Owner(group.epoch)
        elif group.epoch < o.epoch:
            return changed
        self.stats["entries_applied"] += len(group.items)
        o.top = max(o.top, group.upto, max((item[0] for item in group.items), default=0))
        for seq, service, instance, weight, load, tags, removed in group.items:
            rec = o.get(service, instance)
            tomb = o.tombs.get((service, instance))
            if (rec is not None and _seq(rec) >= seq) or (tomb is not None and tomb[0] >= seq):
                continue
            if removed:
                if rec is not None:
                    o.delete(service, instance)
                    changed.add(service)
                self._tombstone(owner, o, service, instance, seq, now)
            else:
                o.put(service, _rec(instance, seq, weight, _tags(tags), load))
                if tomb is not None:
                    del o.tombs[(service, instance)]
                changed.add(service)
        if complete:
            sent = {(item[1], item[2]) for item in group.items}
            for service in list(o.routes):
                for rec in _recs(o.routes[service]):
                    instance = _instance(rec)
                    if _seq(rec) <= group.upto and (service, instance) not in sent:
                        o.delete(service, instance)
                        changed.add(service)
        return changed

    def _tombstone(self, owner: str, o: _Owner, service: str, instance: str, seq: int, now: float) -> None:
        o.tombs[(service, instance)] = (seq, now)
        self._expiry.append((now, owner, o.epoch, service, instance))

    def _collect(self, now: float) -> None:
        """Forget tombstones older than ``route_tombstone_s``: O(tombstones expired)."""
        ttl = self._config.route_tombstone_s
        expiry = self._expiry
        while expiry and now - expiry[0][0] > ttl:
            at, owner, epoch, service, instance = expiry.popleft()
            o = self._owner(owner)
            if o is None or o.epoch != epoch:
                continue
            tomb = o.tombs.get((service, instance))
            if tomb is not None and tomb[1] == at:
                del o.tombs[(service, instance)]
                o.forgot = max(o.forgot, tomb[0])


def _entry(service: str, rec: _Rec) -> ServiceEntry:
    instance, _, weight, tags, load = _fields(rec)
    return ServiceEntry(service, instance, weight, tags, load)
