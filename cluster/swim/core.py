"""The SWIM state machine with Lifeguard: messages and ticks in, packets and events out.

Rules of this module:

* Sans-IO. No sockets, no asyncio, no wall clock, no global random: every entry point
  takes ``now`` (seconds on any monotonic clock) and the random source is injected, so a
  simulator can run thousands of nodes deterministically in one process.
* Entry points (:meth:`Swim.tick`, :meth:`Swim.receive`, :meth:`Swim.merge_remote_state`,
  :meth:`Swim.leave`) return an ordered list of outputs: :class:`Send` (packets for the
  shell to deliver), :class:`PushPullTo` (a TCP state exchange for the shell to perform),
  and events (:class:`MemberChanged`, :class:`NameConflict`, plus whatever the delegate
  emits). :meth:`Swim.next_deadline` says when ``tick`` has work next.
* Every change of a member's state goes through :meth:`Swim._transition`, checked against
  :data:`TRANSITIONS`.

Protocol (SWIM, Das et al. 2002; Lifeguard, Dadgar et al. 2018; memberlist state.go):
each probe interval one member is pinged in round-robin order; without an ack within the
probe timeout, ``indirect_checks`` members ping it for us and relay the ack or a nack;
without any ack by the end of the interval it becomes *suspect*. A suspect that hears of
it refutes with a higher incarnation; otherwise, when its suspicion timer expires, it is
declared *dead*. Lifeguard: timeouts scale with our own health score (awareness), the
suspicion timer shrinks with independent confirmations, and a ping to a suspect carries
the suspicion so the suspect learns of it directly (buddy system).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from cluster.crypto import OVERHEAD as SEAL_OVERHEAD

from .awareness import Awareness
from .broadcast import BroadcastQueue
from .config import Config
from .messages import (
    Ack, Alive, Dead, IndirectPing, MemberRecord, MemberState, Message, Nack, Ping, PushPull, Route,
    RouteBatch, RouteDigest, Suspect, wire_size,
)
from .suspicion import Suspicion
from .wire import ENVELOPE_OVERHEAD

__all__ = [
    "Addr", "Delegate", "MemberChanged", "MemberView", "NameConflict", "PushPullTo", "Send",
    "Swim", "TRANSITIONS",
]

Addr = tuple[str, int]

#: Allowed member state changes (previous state, or None for a new member -> new state).
#: dead/left -> alive is a rejoin or a refutation with a higher incarnation.
TRANSITIONS: frozenset[tuple[MemberState | None, MemberState]] = frozenset({
    (None, MemberState.ALIVE),
    (MemberState.ALIVE, MemberState.SUSPECT),
    (MemberState.ALIVE, MemberState.DEAD),
    (MemberState.ALIVE, MemberState.LEFT),
    (MemberState.SUSPECT, MemberState.ALIVE),
    (MemberState.SUSPECT, MemberState.DEAD),
    (MemberState.SUSPECT, MemberState.LEFT),
    (MemberState.DEAD, MemberState.ALIVE),
    (MemberState.LEFT, MemberState.ALIVE),
})


# ---- outputs ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Send:
    """Deliver ``messages`` to ``addr``: one UDP packet, or over TCP when ``reliable``
    (a message too large for a datagram)."""

    addr: Addr
    messages: tuple[Message, ...]
    reliable: bool = False


@dataclass(frozen=True, slots=True)
class PushPullTo:
    """Exchange full state with ``addr`` over TCP: send :meth:`Swim.local_state`, feed the
    answer to :meth:`Swim.merge_remote_state`."""

    addr: Addr
    join: bool = False


@dataclass(frozen=True, slots=True)
class MemberView:
    """A member as this node sees it."""

    node: str
    host: str
    port: int
    state: MemberState
    incarnation: int
    meta: dict[str, str]

    @property
    def addr(self) -> Addr:
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class MemberChanged:
    """A member joined or changed state. ``declared`` is True when this node's own suspicion
    timer made the verdict (as opposed to hearing it)."""

    member: MemberView
    previous: MemberState | None
    declared: bool = False


@dataclass(frozen=True, slots=True)
class NameConflict:
    """Two addresses claim one node name; the one we knew first is kept."""

    node: str
    known: Addr
    other: Addr


class Delegate(Protocol):
    """What a layer above membership (the routing table) plugs in: batches it sends
    straight to every live member each gossip round, its complete set for a member that
    appears, digests for push-pull and the answer to a peer's digests, and reactions to
    membership changes."""

    def take_direct(self, now: float) -> list[Message]: ...

    def greeting(self) -> list[Message]: ...

    def on_route(self, route: Route, now: float) -> list[object]: ...

    def on_batch(self, batch: RouteBatch, now: float) -> list[object]: ...

    def digests(self) -> tuple[RouteDigest, ...]: ...

    def answer_digests(self, source: str, digests: Sequence[RouteDigest]) -> list[Message]: ...

    def merge_state(self, source: str, routes: Sequence[Route], now: float) -> list[object]: ...

    def on_member(self, change: MemberChanged, now: float) -> list[object]: ...



# ---- internal records ------------------------------------------------------------------

@dataclass(slots=True)
class _Member:
    node: str
    host: str
    port: int
    inc: int
    meta: dict[str, str]
    state: MemberState
    since: float
    suspicion: Suspicion | None = None

    def view(self) -> MemberView:
        return MemberView(self.node, self.host, self.port, self.state, self.inc, dict(self.meta))


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    direct_deadline: float
    end: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    origin: Addr
    origin_seq: int
    nack: bool
    deadline: float


@dataclass(slots=True)
class _Out:
    """Accumulates the outputs of one entry point."""

    items: list[object] = field(default_factory=list)
    #: routing greetings sent to members that appeared, by member name
    greetings: dict[str, Send] = field(default_factory=dict)


# ---- the state machine -----------------------------------------------------------------

class Swim:
    """One node's view of the cluster and its part in the protocol."""

    def __init__(
        self,
        name: str,
        addr: Addr,
        *,
        config: Config,
        rng: random.Random,
        now: float,
        meta: dict[str, str] | None = None,
        incarnation: int = 0,
        delegate: Delegate | None = None,
        sealed: bool = True,
    ) -> None:
        config.validate()
        self.name = name
        self.config = config
        self._rng = rng
        self.delegate = delegate
        self.awareness = Awareness(config.awareness_max_multiplier)
        #: Bytes of messages that fit in one datagram once enveloped (and sealed).
        self.budget = config.packet_size - ENVELOPE_OVERHEAD - (SEAL_OVERHEAD if sealed else 0)
        self._check_meta(meta or {})
        self._self = _Member(name, addr[0], addr[1], incarnation, dict(meta or {}), MemberState.ALIVE, now)
        self._members: dict[str, _Member] = {name: self._self}
        self._order: list[str] = []
        self._order_index = 0
        self._live: list[str] | None = None
        #: Members in state SUSPECT (each has a suspicion timer), and dead/left members
        #: with the time they became so; both kept by _transition to avoid scans.
        self._suspects: dict[str, _Member] = {}
        self._recently_dead: dict[str, float] = {}
        #: Suspects we have not probed ourselves since their suspicion began (ordered set).
        self._unprobed_suspects: dict[str, None] = {}
        self._queue = BroadcastQueue(config.retransmit_limit)
        #: probes started, suspicions raised, refutations of our own suspicion (for metrics)
        self.counts: Counter[str] = Counter()
        self._seq = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._leaving = False
        self._next_probe = now + rng.uniform(0, config.probe_interval_s)
        self._next_gossip = now + rng.uniform(0, config.gossip_interval_s)
        self._next_push_pull = now + rng.uniform(0.5, 1.0) * config.push_pull_interval_s
        self._next_reconnect = now + rng.uniform(0.5, 1.0) * config.reconnect_interval_s
        self._queue_alive()

    # ---- read side ----------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._self.inc

    @property
    def addr(self) -> Addr:
        return (self._self.host, self._self.port)

    @property
    def leaving(self) -> bool:
        return self._leaving

    def members(self) -> list[MemberView]:
        """Every member still listed (self included), sorted by name."""
        return [self._members[n].view() for n in sorted(self._members)]

    def member(self, node: str) -> MemberView | None:
        m = self._members.get(node)
        return m.view() if m else None

    def names_in(self, state: MemberState) -> set[str]:
        """Names of the members in ``state`` (self included), without building views."""
        return {n for n, m in self._members.items() if m.state == state}

    def num_live(self) -> int:
        """Members alive or suspect, self included: the N of every log(N) formula."""
        return len(self._live_names()) + 1

    def leave_pending(self) -> bool:
        """True while our leave announcement is still queued for (re)transmission."""
        return self._leaving and ("member", self.name) in self._queue and self.num_live() > 1

    def next_deadline(self) -> float:
        """The earliest ``now`` at which :meth:`tick` has something to do."""
        deadlines = [self._next_gossip, self._next_push_pull, self._next_reconnect]
        if not self._leaving:
            deadlines.append(self._next_probe)
        if self._probe:
            deadlines.append(self._probe.end if self._probe.indirect_sent else self._probe.direct_deadline)
        deadlines.extend(r.deadline for r in self._relays.values())
        deadlines.extend(m.suspicion.deadline for m in self._suspects.values() if m.suspicion)
        return min(deadlines)

    def local_state(self, join: bool = False) -> PushPull:
        """Our full membership and the digests of our routing entries for a push-pull
        exchange (entries follow, as a batch, only for owners whose digests differ)."""
        records = tuple(
            MemberRecord(m.node, m.host, m.port, m.inc, m.state, dict(m.meta)) for m in self._members.values()
        )
        digests = self.delegate.digests() if self.delegate else ()
        return PushPull(self.name, join, records, (), digests)

    # ---- write side ---------------------------------------------------------------------

    def tick(self, now: float) -> list[object]:
        """Advance timers to ``now``: probes, relays, suspicions, gossip, push-pull."""
        out = _Out()
        probe = self._probe
        if probe and not probe.indirect_sent and now >= probe.direct_deadline:
            self._probe_indirect(probe, now, out)
        if probe and now >= probe.end:
            self._probe_failed(probe, now, out)
        for seq in [s for s, r in self._relays.items() if now >= r.deadline]:
            relay = self._relays.pop(seq)
            if relay.nack:
                self._send(relay.origin, [Nack(relay.origin_seq)], out)
        for m in [m for m in self._suspects.values() if m.suspicion and now >= m.suspicion.deadline]:
            self._declare_dead(m, now, out)
        if not self._leaving and now >= self._next_probe:
            self._start_probe(now, out)
        if now >= self._next_gossip:
            self._next_gossip = now + self.config.gossip_interval_s
            self._gossip(now, out)
        if now >= self._next_push_pull:
            self._next_push_pull = now + self.config.push_pull_interval_for(self.num_live())
            live = self._live_names()
            if live and not self._leaving:
                target = self._members[self._rng.choice(live)]
                out.items.append(PushPullTo((target.host, target.port)))
        if now >= self._next_reconnect:
            self._next_reconnect = now + self.config.reconnect_interval_s
            dead = [m for m in self._members.values() if m.state == MemberState.DEAD]
            if dead and not self._leaving:
                target = self._rng.choice(dead)
                out.items.append(PushPullTo((target.host, target.port)))
        return out.items

    def receive(self, src: Addr, messages: Sequence[Message], now: float) -> list[object]:
        """Handle the messages of one packet that came from ``src``."""
        out = _Out()
        # Membership news first, requests last: a refutation or an update carried in this
        # packet then rides on our answer (e.g. the buddy system's suspect + ping).
        for msg in sorted(messages, key=lambda m: isinstance(m, (Ping, IndirectPing))):
            if isinstance(msg, Ping):
                if msg.target in ("", self.name):
                    self._send(src, [Ack(msg.seq)], out)
            elif isinstance(msg, Ack):
                self._on_ack(msg, now, out)
            elif isinstance(msg, Nack):
                if self._probe and self._probe.seq == msg.seq:
                    self._probe.nacks += 1
            elif isinstance(msg, IndirectPing):
                self._on_indirect_ping(src, msg, now, out)
            elif isinstance(msg, Alive):
                self._on_alive(msg, now, out)
            elif isinstance(msg, Suspect):
                self._on_suspect(msg, now, out, src)
            elif isinstance(msg, Dead):
                self._on_dead(msg, now, out, src)
            elif isinstance(msg, RouteBatch):
                if self.delegate:
                    out.items.extend(self.delegate.on_batch(msg, now))
            elif isinstance(msg, Route):
                if self.delegate:
                    out.items.extend(self.delegate.on_route(msg, now))
            # A PushPull is only valid as the body of a TCP exchange (see merge_remote_state).
        return out.items

    def merge_remote_state(self, remote: PushPull, now: float) -> list[object]:
        """Fold a peer's full state into ours (memberlist mergeState): alive and left are
        taken as said; dead is only suspected, so the accused still gets its chance to refute."""
        out = _Out()
        for r in remote.members:
            if r.state == MemberState.ALIVE:
                self._on_alive(Alive(r.inc, r.node, r.host, r.port, r.meta), now, out)
            elif r.state == MemberState.LEFT:
                self._on_dead(Dead(r.inc, r.node, r.node), now, out)
            elif r.node not in self._members:
                continue  # never heard of it and already suspected: nothing to learn
            else:
                self._on_suspect(Suspect(r.inc, r.node, self.name), now, out)
        if self.delegate:
            if remote.routes:
                out.items.extend(self.delegate.merge_state(remote.source, remote.routes, now))
            peer = self._members.get(remote.source)
            if peer is not None and peer is not self._self:
                answer = self.delegate.answer_digests(remote.source, remote.digests)
                if answer:
                    greeting = out.greetings.get(remote.source)
                    if greeting is not None:
                        out.items.remove(greeting)  # the answer holds our complete set too
                    out.items.append(Send((peer.host, peer.port), tuple(answer), reliable=True))
        return out.items

    def leave(self, now: float) -> list[object]:
        """Announce a graceful leave; the shell then waits while :meth:`leave_pending`."""
        out = _Out()
        self._leaving = True
        self._on_dead(Dead(self._self.inc, self.name, self.name), now, out)
        return out.items

    def set_meta(self, meta: dict[str, str]) -> None:
        """Change our metadata; announced with a new incarnation."""
        self._check_meta(meta)
        self._self.meta = dict(meta)
        self._self.inc += 1
        self._queue_alive()

    # ---- probing ------------------------------------------------------------------------

    def _start_probe(self, now: float, out: _Out) -> None:
        interval = self.awareness.scale(self.config.probe_interval_s)
        self._next_probe = now + interval
        target = self._next_target(now)
        if target is None:
            return
        self._seq += 1
        self.counts["probes"] += 1
        self._probe = _Probe(self._seq, target.node, now + self.awareness.scale(self.config.probe_timeout_s),
                             now + interval)
        msgs: list[Message] = [Ping(self._seq, target.node, self.name)]
        if target.state == MemberState.SUSPECT:
            # Buddy system: tell the suspect directly, so it can refute at once.
            msgs.append(Suspect(target.inc, target.node, self.name))
        self._send((target.host, target.port), msgs, out)

    def _next_target(self, now: float) -> _Member | None:
        """A suspect not probed since its suspicion began comes first: our probe is an
        independent confirmation (or not), and its buddy message lets the suspect correct
        us if we hold a stale suspicion; then round-robin over a shuffled list, as in SWIM."""
        while self._unprobed_suspects:
            node = next(iter(self._unprobed_suspects))
            del self._unprobed_suspects[node]
            m = self._members.get(node)
            if m and m.state == MemberState.SUSPECT:
                return m
        for _ in range(len(self._order) + 1):
            if self._order_index >= len(self._order):
                self._reshuffle(now)
                if not self._order:
                    return None
            node = self._order[self._order_index]
            self._order_index += 1
            m = self._members.get(node)
            if m and m.state in (MemberState.ALIVE, MemberState.SUSPECT):
                return m
        return None

    def _reshuffle(self, now: float) -> None:
        """At the end of a round: forget long-dead members, shuffle the probe order."""
        retention = self.config.dead_retention_s
        for node in [n for n, m in self._members.items()
                     if m.state in (MemberState.DEAD, MemberState.LEFT) and now - m.since > retention
                     and n != self.name]:
            del self._members[node]
        self._order = [n for n in self._members if n != self.name]
        self._rng.shuffle(self._order)
        self._order_index = 0
        self._live = None

    def _probe_indirect(self, probe: _Probe, now: float, out: _Out) -> None:
        probe.indirect_sent = True
        target = self._members.get(probe.target)
        if target is None:
            return
        helpers = [n for n in self._live_names()
                   if n != probe.target and self._members[n].state == MemberState.ALIVE]
        chosen = self._rng.sample(helpers, min(self.config.indirect_checks, len(helpers)))
        probe.expected_nacks = len(chosen)
        for node in chosen:
            helper = self._members[node]
            self._send((helper.host, helper.port),
                       [IndirectPing(probe.seq, target.node, target.host, target.port, True, self.name)], out)

    def _probe_failed(self, probe: _Probe, now: float, out: _Out) -> None:
        self._probe = None
        # Lifeguard LHA-Probe: missing nacks mean *we* may be the problem; with nobody to
        # send nacks, any failed probe counts against our own health.
        missed = probe.expected_nacks - probe.nacks if probe.expected_nacks else 1
        self.awareness.apply(max(0, missed))
        target = self._members.get(probe.target)
        if target and target.state in (MemberState.ALIVE, MemberState.SUSPECT):
            # On a suspect this counts as our independent confirmation (Lifeguard).
            self._on_suspect(Suspect(target.inc, target.node, self.name), now, out)

    def _on_ack(self, msg: Ack, now: float, out: _Out) -> None:
        if self._probe and self._probe.seq == msg.seq:
            self._probe = None
            self.awareness.apply(-1)
            return
        relay = self._relays.pop(msg.seq, None)
        if relay:
            self._send(relay.origin, [Ack(relay.origin_seq)], out)

    def _on_indirect_ping(self, src: Addr, msg: IndirectPing, now: float, out: _Out) -> None:
        self._seq += 1
        self._relays[self._seq] = _Relay(src, msg.seq, msg.nack, now + self.config.probe_timeout_s)
        self._send((msg.host, msg.port), [Ping(self._seq, msg.target, self.name)], out)

    # ---- membership rules (memberlist aliveNode / suspectNode / deadNode) ------------------

    def _on_alive(self, a: Alive, now: float, out: _Out) -> None:
        if a.node == self.name:
            # Someone speaks for us. An older or equal word is an echo; anything newer, or a
            # different address or metadata, must be refuted with a higher incarnation.
            if (a.host, a.port) != self.addr:
                out.items.append(NameConflict(self.name, self.addr, (a.host, a.port)))
            if a.inc > self._self.inc or (a.inc == self._self.inc and
                                          ((a.host, a.port) != self.addr or a.meta != self._self.meta)):
                if not self._leaving:
                    self._refute(a.inc, now, out)
            return
        m = self._members.get(a.node)
        if a.meta and (m is None or a.meta != m.meta) and not self._meta_fits(a.meta):
            return
        if m is None:
            m = _Member(a.node, a.host, a.port, a.inc, dict(a.meta), MemberState.ALIVE, now)
            self._members[a.node] = m
            self._order.insert(self._rng.randint(0, len(self._order)), a.node)
            self._live = None
            self._queue.queue(("member", a.node), a)
            self._emit(m, None, now, out)
            return
        moved = (a.host, a.port) != (m.host, m.port)
        if moved:
            reclaim = self.config.dead_node_reclaim_s
            if not (m.state in (MemberState.DEAD, MemberState.LEFT) and reclaim is not None
                    and now - m.since >= reclaim):
                out.items.append(NameConflict(a.node, (m.host, m.port), (a.host, a.port)))
                return
        elif a.inc <= m.inc:
            return
        meta_changed = a.meta != m.meta
        m.inc = max(m.inc, a.inc)
        m.host, m.port, m.meta = a.host, a.port, dict(a.meta)
        m.suspicion = None
        self._queue.queue(("member", a.node), a)
        if m.state == MemberState.ALIVE:
            if meta_changed:
                self._emit(m, MemberState.ALIVE, now, out)
        else:
            self._transition(m, MemberState.ALIVE, now, out)

    def _on_suspect(self, s: Suspect, now: float, out: _Out, src: Addr | None = None) -> None:
        m = self._members.get(s.node)
        if m is None:
            return
        if s.inc < m.inc:
            self._correct(src, m, out)
            return
        if m.suspicion is not None:
            if m.suspicion.confirm(s.source):
                self._queue.queue(("member", s.node), s)
            return
        if m.state != MemberState.ALIVE:
            return
        if m is self._self:
            if not self._leaving:
                self._refute(s.inc, now, out)
            return
        n = self.num_live()
        k = self.config.suspicion_confirmations(n)
        min_s = self.config.suspicion_min_s(n)
        m.inc = s.inc
        m.suspicion = Suspicion(s.source, k, min_s, min_s * self.config.suspicion_max_timeout_mult, now)
        # Probe it next, even when we are the accuser: a live suspect answers the buddy
        # message with its refutation, which may have missed us in the gossip.
        self._unprobed_suspects[s.node] = None
        self._queue.queue(("member", s.node), s)
        self.counts["suspicions"] += 1
        self._transition(m, MemberState.SUSPECT, now, out)

    def _on_dead(self, d: Dead, now: float, out: _Out, src: Addr | None = None) -> None:
        m = self._members.get(d.node)
        if m is None or m.state in (MemberState.DEAD, MemberState.LEFT):
            return
        if d.inc < m.inc:
            self._correct(src, m, out)
            return
        if m is self._self and not self._leaving:
            self._refute(d.inc, now, out)
            return
        m.inc = d.inc
        m.suspicion = None
        self._queue.queue(("member", d.node), d)
        self._transition(m, MemberState.LEFT if d.source == d.node else MemberState.DEAD, now, out)

    def _correct(self, src: Addr | None, m: _Member, out: _Out) -> None:
        """The sender gossips an accusation that a newer alive already refuted; the refutation
        may have finished its retransmits before reaching it, so tell it directly. (Not in
        memberlist: without it, a late accuser can declare a refuted member dead.)"""
        if src is not None and m.state == MemberState.ALIVE:
            self._send(src, [Alive(m.inc, m.node, m.host, m.port, dict(m.meta))], out)

    def _declare_dead(self, m: _Member, now: float, out: _Out) -> None:
        m.suspicion = None
        d = Dead(m.inc, m.node, self.name)
        self._queue.queue(("member", m.node), d)
        self._transition(m, MemberState.DEAD, now, out, declared=True)

    def _refute(self, accused_inc: int, now: float, out: _Out) -> None:
        self._self.inc = max(self._self.inc, accused_inc) + 1
        self.counts["refutations"] += 1
        self._queue_alive()
        # Lifeguard: being accused hints that we are slow to answer; slow down accusing others.
        self.awareness.apply(1)

    def _transition(self, m: _Member, state: MemberState, now: float, out: _Out, declared: bool = False) -> None:
        previous = m.state
        if previous == state:
            return
        if (previous, state) not in TRANSITIONS:
            raise AssertionError(f"illegal member transition {previous.name} -> {state.name} for {m.node}")
        m.state = state
        m.since = now
        self._live = None
        if state == MemberState.SUSPECT:
            self._suspects[m.node] = m
        else:
            self._suspects.pop(m.node, None)
        if state in (MemberState.DEAD, MemberState.LEFT):
            self._recently_dead[m.node] = now
        else:
            self._recently_dead.pop(m.node, None)
        self._emit(m, previous, now, out, declared)

    def _emit(self, m: _Member, previous: MemberState | None, now: float, out: _Out, declared: bool = False) -> None:
        change = MemberChanged(m.view(), previous, declared)
        out.items.append(change)
        if self.delegate:
            out.items.extend(self.delegate.on_member(change, now))
            if m.state == MemberState.ALIVE and m is not self._self and not self._leaving:
                if previous is None:
                    # A member appeared: it gets our complete routing set straight away.
                    greeting = self.delegate.greeting()
                    if greeting:
                        out.greetings[m.node] = Send((m.host, m.port), tuple(greeting), reliable=True)
                        out.items.append(out.greetings[m.node])
                elif previous in (MemberState.DEAD, MemberState.LEFT):
                    # Back from the dead (a refutation, a healed partition): we dropped its
                    # entries and it may have missed our changes; digests settle both ways.
                    out.items.append(PushPullTo((m.host, m.port)))

    # ---- dissemination ----------------------------------------------------------------

    def _gossip(self, now: float, out: _Out) -> None:
        """Send queued broadcasts to a few random members (recently dead ones included, so
        that a wrongly declared member hears of it and refutes)."""
        window = self.config.gossip_to_the_dead_s
        for node in [n for n, t in self._recently_dead.items() if now - t >= window or n == self.name]:
            del self._recently_dead[node]
        if self.delegate:
            batches = self.delegate.take_direct(now)
            if batches:
                for node in self._live_names():
                    m = self._members[node]
                    out.items.append(Send((m.host, m.port), tuple(batches), reliable=True))
        candidates = self._live_names() + list(self._recently_dead)
        n_live = self.num_live()
        for node in self._rng.sample(candidates, min(self.config.gossip_nodes, len(candidates))):
            m = self._members[node]
            msgs = self._piggyback(self.budget, n_live, spill=True)
            if msgs:
                self._pack_and_send((m.host, m.port), msgs, out)

    def _piggyback(self, budget: int, n_live: int, spill: bool = False) -> list[Message]:
        """Queued broadcasts for ``budget`` bytes; with ``spill`` (gossip rounds) also those
        too large for any datagram, which _pack_and_send then sends over TCP."""
        return self._queue.take(budget, 0, n_live, spill)[0]

    def _send(self, addr: Addr, msgs: list[Message], out: _Out) -> None:
        """Send ``msgs`` with as much piggybacked gossip as fits in the datagram."""
        used = sum(wire_size(m) for m in msgs)
        extra = self._piggyback(self.budget - used, self.num_live()) if used < self.budget else []
        self._pack_and_send(addr, msgs + extra, out)

    def _pack_and_send(self, addr: Addr, msgs: list[Message], out: _Out) -> None:
        """Split into datagrams of at most ``budget`` bytes; a message larger than a
        datagram goes over TCP on its own."""
        packet: list[Message] = []
        used = 0
        for msg in msgs:
            size = wire_size(msg)
            if size > self.budget:
                out.items.append(Send(addr, (msg,), reliable=True))
                continue
            if used + size > self.budget:
                out.items.append(Send(addr, tuple(packet)))
                packet, used = [], 0
            packet.append(msg)
            used += size
        if packet:
            out.items.append(Send(addr, tuple(packet)))

    # ---- helpers ------------------------------------------------------------------------

    def _live_names(self) -> list[str]:
        if self._live is None:
            self._live = [n for n, m in self._members.items()
                          if n != self.name and m.state in (MemberState.ALIVE, MemberState.SUSPECT)]
        return self._live

    def _queue_alive(self) -> None:
        s = self._self
        self._queue.queue(("member", self.name), Alive(s.inc, s.node, s.host, s.port, dict(s.meta)))

    def _meta_fits(self, meta: dict[str, str]) -> bool:
        return sum(len(k) + len(v) + 2 for k, v in meta.items()) <= self.config.meta_max_bytes

    def _check_meta(self, meta: dict[str, str]) -> None:
        if not self._meta_fits(meta):
            raise ValueError(f"node metadata larger than meta_max_bytes ({self.config.meta_max_bytes})")
