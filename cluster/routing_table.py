"""The cluster routing table: which node serves which service, spread by gossip.

Rules of this module:

* Each node owns the entries of the providers connected to it, and only the owner
  changes them (:meth:`RoutingTable.set_local`). An entry is keyed by
  ``(owner, service, instance)`` and versioned by ``(epoch, seq)``: ``epoch`` is the
  owner's boot id (it grows across restarts; the node incarnation cannot serve, as it
  also grows on every refutation and restarts from 0), ``seq`` counts the owner's changes.
  A newer version wins; a removal is a tombstone kept ``route_tombstone_s`` so that a
  late copy of the old entry cannot bring it back.
* Deltas ride the SWIM piggyback (this class is the core's :class:`~cluster.swim.core.Delegate`
  and keeps its own transmit-limited queue); full state travels on push-pull, where the
  sender's own entries are authoritative (anything of it we hold and it did not send is gone).
* A member declared dead or departed takes its entries with it, everywhere. If it comes
  back (refutation or restart), it announces its entries again.
* Only entries every node can decode are announced: an entry whose route the gossip
  decoder would refuse (e.g. a service name over ``MAX_ROUTE_NAME``) is left out and
  logged, so one bad registration can never make peers drop this node's packets.
* Sans-IO: no sockets, no clock (``now`` is passed in), no threads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from cluster.swim.broadcast import BroadcastQueue
from cluster.swim.config import Config
from cluster.swim.core import MemberChanged
from cluster.swim.messages import DecodeError, MemberState, Message, Route

__all__ = ["RemoteEntry", "RoutesChanged", "RoutingTable", "ServiceEntry"]

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


def _entry(route: Route) -> ServiceEntry:
    return ServiceEntry(route.service, route.instance, route.weight, dict(route.tags), route.load)


@dataclass
class _Owner:
    epoch: int
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    removed_at: dict[tuple[str, str], float] = field(default_factory=dict)


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
        self._queue = BroadcastQueue(config.retransmit_limit)
        #: local entries left out because peers could not decode them (see _carriable)
        self.not_announced = 0
        # A boot marker (an empty tombstone) announces the new epoch even when this boot has
        # no entries yet, so that a quick restart makes every peer drop the old life's
        # entries at once instead of at the next push-pull with us.
        self._announce(Route(node, epoch, self._next_seq(), "", "", 0, {}, 0, True))

    # ---- the owner's side ---------------------------------------------------------------

    def set_local(self, entries: Iterable[ServiceEntry], now: float) -> None:
        """Replace this node's announced entries; only the differences are gossiped."""
        wanted = {(e.service, e.instance): e for e in entries if self._carriable(e)}
        current = {k: r for k, r in self._mine.routes.items() if not r.removed}
        for key, e in wanted.items():
            old = current.get(key)
            if old and (old.weight, dict(old.tags), old.load) == (e.weight, dict(e.tags), e.load):
                continue
            self._announce(Route(self.node, self.epoch, self._next_seq(), e.service, e.instance,
                                 e.weight, dict(e.tags), e.load, False))
            self._mine.removed_at.pop(key, None)
        for key, old in current.items():
            if key not in wanted:
                self._announce(Route(self.node, self.epoch, self._next_seq(), old.service, old.instance,
                                     0, {}, 0, True))
                self._mine.removed_at[key] = now
        self._collect(self._mine, now)

    def _carriable(self, e: ServiceEntry) -> bool:
        """Whether every node decodes ``e``'s route; checked with the decoder itself."""
        route = Route(self.node, self.epoch, 0, e.service, e.instance, e.weight, dict(e.tags), e.load, False)
        try:
            Route.from_wire(route.to_wire())
        except DecodeError as exc:
            self.not_announced += 1
            log.warning("not announcing instance %.64r of service %.64r to the cluster: %s", e.instance, e.service, exc)
            return False
        return True

    def local_entries(self) -> list[ServiceEntry]:
        return sorted((_entry(r) for r in self._mine.routes.values() if not r.removed),
                      key=lambda e: (e.service, e.instance))

    # ---- the reader's side --------------------------------------------------------------

    def lookup(self, service: str) -> list[RemoteEntry]:
        """Entries of other nodes for ``service``, sorted by node and instance."""
        found = [RemoteEntry(owner, _entry(r)) for owner, o in self._remote.items()
                 for r in o.routes.values() if r.service == service and not r.removed]
        return sorted(found, key=lambda x: (x.node, x.entry.instance))

    def services_of(self, node: str) -> list[ServiceEntry]:
        """What ``node`` announces (our own entries for our own name)."""
        o = self._mine if node == self.node else self._remote.get(node)
        if o is None:
            return []
        return sorted((_entry(r) for r in o.routes.values() if not r.removed),
                      key=lambda e: (e.service, e.instance))

    def knows(self, owner: str, service: str, instance: str) -> bool:
        """True if we hold a live entry of ``owner`` for this service instance."""
        o = self._mine if owner == self.node else self._remote.get(owner)
        r = o.routes.get((service, instance)) if o else None
        return r is not None and not r.removed

    # ---- Delegate of the SWIM core ---------------------------------------------------------

    def take_broadcasts(self, budget: int, num_nodes: int, spill: bool = False) -> list[Message]:
        return self._queue.take(budget, 0, num_nodes, spill)[0]

    def on_route(self, route: Route, now: float) -> list[object]:
        changed = self._apply(route, now)
        return [RoutesChanged(route.owner, frozenset({route.service}))] if changed else []

    def full_state(self) -> tuple[Route, ...]:
        routes = list(self._mine.routes.values())
        for o in self._remote.values():
            routes.extend(o.routes.values())
        return tuple(routes)

    def merge_state(self, source: str, routes: Sequence[Route], now: float) -> list[object]:
        changed: dict[str, set[str]] = {}
        for route in routes:
            if self._apply(route, now, rebroadcast=False):
                changed.setdefault(route.owner, set()).add(route.service)
        # The source's own entries are its complete set: drop what it no longer has.
        o = self._remote.get(source)
        if o is not None and source not in self._gone:
            sent = {(r.service, r.instance) for r in routes if r.owner == source and r.epoch == o.epoch}
            for key in [k for k in o.routes if k not in sent]:
                changed.setdefault(source, set()).add(o.routes.pop(key).service)
                o.removed_at.pop(key, None)
        for o in self._remote.values():
            self._collect(o, now)
        return [RoutesChanged(node, frozenset(s)) for node, s in sorted(changed.items())]

    def on_member(self, change: MemberChanged, now: float) -> list[object]:
        node = change.member.node
        if node == self.node:
            return []
        if change.member.state in (MemberState.DEAD, MemberState.LEFT):
            o = self._remote.pop(node, None)
            self._gone[node] = o.epoch if o else 0
            for service, instance in (o.routes if o else ()):
                self._queue.drop((node, service, instance))
            live = {r.service for r in o.routes.values() if not r.removed} if o else set()
            return [RoutesChanged(node, frozenset(live))] if live else []
        if change.member.state == MemberState.ALIVE and change.previous in (MemberState.DEAD, MemberState.LEFT):
            self._gone.pop(node, None)
        return []

    def on_refute(self, now: float) -> list[object]:
        """We were suspected or declared dead: peers may have dropped our entries, so
        announce them all again with fresh sequence numbers."""
        for key, r in list(self._mine.routes.items()):
            self._announce(Route(r.owner, r.epoch, self._next_seq(), r.service, r.instance,
                                 r.weight, dict(r.tags), r.load, r.removed))
        return []

    # ---- internals ---------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _announce(self, route: Route) -> None:
        self._mine.routes[(route.service, route.instance)] = route
        self._queue.queue(route.key, route)

    def _apply(self, route: Route, now: float, rebroadcast: bool = True) -> bool:
        """Store ``route`` if it is newer than what we hold; True if a live entry changed."""
        if route.owner == self.node:
            return False  # we are the authority on our own entries
        gone = self._gone.get(route.owner)
        if gone is not None and route.epoch <= gone:
            return False  # a straggler from a dead member's last life
        o = self._remote.get(route.owner)
        changed = False
        if o is None or route.epoch > o.epoch:
            changed = o is not None and any(not r.removed for r in o.routes.values())
            o = self._remote[route.owner] = _Owner(route.epoch)
        elif route.epoch < o.epoch:
            return False
        key = (route.service, route.instance)
        current = o.routes.get(key)
        if current is not None and current.seq >= route.seq:
            return changed
        o.routes[key] = route
        if route.removed:
            o.removed_at[key] = now
        else:
            o.removed_at.pop(key, None)
        if rebroadcast:
            self._queue.queue(route.key, route)
        return changed or not (route.removed and (current is None or current.removed))

    def _collect(self, o: _Owner, now: float) -> None:
        """Forget tombstones older than ``route_tombstone_s``."""
        ttl = self._config.route_tombstone_s
        for key in [k for k, t in o.removed_at.items() if now - t > ttl]:
            del o.removed_at[key]
            o.routes.pop(key, None)
