"""Deterministic gossip simulator: many nodes, one process, a virtual clock, seeded faults.

Rules of this module:

* Everything random comes from one ``random.Random(seed)``: the same seed gives the same
  run, message for message. Time is virtual (``Simulator.now``); nothing sleeps.
* Nodes are the real sans-IO :class:`~cluster.swim.core.Swim` cores with real
  :class:`~cluster.routing_table.RoutingTable` delegates, and every datagram goes through
  the real :class:`~cluster.swim.wire.PacketCodec` (msgpack encode and decode); byte
  counts add the AES-GCM seal overhead so they match a keyed cluster.
* The network model: per-link loss, delay and jitter; one-way and two-way partitions.
  UDP packets can be lost; TCP exchanges (push-pull, oversized messages) are not lost but
  fail across a partition or to a crashed node. Node faults: crash (silent), pause (like
  SIGSTOP: no ticks, datagrams buffered up to a limit and handled on resume), restart
  (a fresh core under the same name and address, with a new boot epoch).
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

import msgpack

from cluster.crypto import OVERHEAD as SEAL_OVERHEAD
from cluster.routing_table import RoutingTable, ServiceEntry

from .config import Config
from .core import Addr, PushPullTo, Send, Swim
from .messages import MemberState
from .wire import Dropped, PacketCodec

__all__ = ["Link", "SimNode", "Simulator"]

#: Datagrams a paused node's socket buffer holds before the kernel drops more (~200 KiB).
PAUSED_INBOX = 256


@dataclass
class Link:
    """Behaviour of the directed link src -> dst."""

    loss: float = 0.0
    delay_s: float = 0.0005
    jitter_s: float = 0.0005


@dataclass
class SimNode:
    """One simulated node: its core, its routing table and its fault status."""

    name: str
    addr: Addr
    swim: Swim
    table: RoutingTable
    codec: PacketCodec
    status: str = "up"  # up | paused | crashed
    inbox: list[Callable[[], None]] = field(default_factory=list)
    token: int = 0
    next_tick: float = float("inf")


@dataclass(frozen=True)
class Observed:
    """An event seen by ``observer`` at virtual time ``at``."""

    at: float
    observer: str
    event: object


class Simulator:
    """A cluster of simulated nodes on a simulated network."""

    def __init__(self, config: Config, seed: int, *, link: Link | None = None, sealed: bool = True,
                 record: bool = False) -> None:
        self.config = config.validate()
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.default_link = link or Link()
        self.links: dict[tuple[str, str], Link] = {}
        self.blocked: set[tuple[str, str]] = set()
        self.nodes: dict[str, SimNode] = {}
        self._by_addr: dict[Addr, str] = {}
        self._sealed = sealed
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self.bytes_sent: dict[str, int] = {}
        #: Every event of every node, when ``record`` (memory grows with the run: big
        #: scenarios use listeners instead).
        self.events: list[Observed] = []
        self._record = record
        self.listeners: list[Callable[[Observed], None]] = []

    # ---- building the cluster -------------------------------------------------------------

    def add_node(self, name: str, join: Iterable[str] = ()) -> SimNode:
        """Start a node (fresh core) and push-pull with the named seed nodes."""
        index = len(self._by_addr) if name not in self.nodes else None
        addr = self.nodes[name].addr if index is None else (f"10.{index // 65536}.{index // 256 % 256}.{index % 256}", 7946)
        epoch = int(self.now * 1000) + 1
        table = RoutingTable(name, epoch, self.config)
        swim = Swim(name, addr, config=self.config, rng=random.Random(self.rng.getrandbits(64)), now=self.now,
                    meta={"tcp": f"{addr[0]}:7000"}, delegate=table, sealed=self._sealed)
        codec = PacketCodec(None, max_clock_skew_s=self.config.max_clock_skew_s,
                            rand64=_rand64(random.Random(self.rng.getrandbits(64))))
        old = self.nodes.get(name)
        node = SimNode(name, addr, swim, table, codec, token=(old.token + 1) if old else 0)
        self.nodes[name] = node
        self._by_addr[addr] = name
        self.bytes_sent.setdefault(name, 0)
        for seed in join:
            self._handle(node, [PushPullTo(self.nodes[seed].addr, join=True)])
        self._reschedule(node)
        return node

    def start(self, n: int, *, settle_s: float = 60.0) -> None:
        """Start n nodes that join through the first one and wait until all agree."""
        self.add_node("n0")
        for i in range(1, n):
            self.add_node(f"n{i}", join=["n0"])
            self.run_for(0.01)
        self.run_until_true(self.converged, settle_s)

    # ---- faults -----------------------------------------------------------------------

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        node.status = "crashed"
        node.inbox.clear()
        node.token += 1

    def pause(self, name: str) -> None:
        node = self.nodes[name]
        node.status = "paused"
        node.token += 1

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        node.status = "up"
        inbox, node.inbox = node.inbox, []
        for deliver in inbox:
            deliver()
        node.next_tick = float("inf")
        self._reschedule(node)

    def restart(self, name: str, join: Iterable[str]) -> SimNode:
        """A crashed node comes back: new core, same name and address, new boot epoch."""
        return self.add_node(name, join=join)

    def partition(self, side_a: Iterable[str], side_b: Iterable[str], one_way: bool = False) -> None:
        """Block a -> b (and b -> a unless ``one_way``)."""
        for a in side_a:
            for b in side_b:
                self.blocked.add((a, b))
                if not one_way:
                    self.blocked.add((b, a))

    def heal(self) -> None:
        self.blocked.clear()

    def set_link(self, src: str, dst: str, link: Link) -> None:
        self.links[(src, dst)] = link

    # ---- running ------------------------------------------------------------------------

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._counter), action))

    def run_until(self, t: float) -> None:
        while self._heap and self._heap[0][0] <= t:
            when, _, action = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            action()
        self.now = max(self.now, t)

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def run_until_true(self, predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
        """Run in small steps until ``predicate()`` holds; False if ``timeout_s`` passed first."""
        deadline = self.now + timeout_s
        while not predicate():
            if self.now >= deadline:
                return False
            self.run_for(step_s)
        return True

    # ---- views ---------------------------------------------------------------------------

    def up(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.status != "crashed"]

    def state_of(self, observer: str, target: str) -> MemberState | None:
        view = self.nodes[observer].swim.member(target)
        return view.state if view else None

    def converged(self) -> bool:
        """Every running node sees exactly the running nodes alive and every crashed node gone."""
        running = {n.name for n in self.up()}
        for node in self.up():
            if node.swim.names_in(MemberState.ALIVE) != running:
                return False
        return True

    # ---- plumbing ------------------------------------------------------------------------

    def _link(self, src: str, dst: str) -> Link:
        return self.links.get((src, dst), self.default_link)

    def _reschedule(self, node: SimNode) -> None:
        if node.status != "up":
            return
        due = max(self.now, node.swim.next_deadline())
        if due < node.next_tick or node.next_tick < self.now:
            node.token += 1
            node.next_tick = due
            token = node.token
            self.at(due, lambda: self._tick(node, token))

    def _tick(self, node: SimNode, token: int) -> None:
        if node.token != token or node.status != "up" or self.nodes.get(node.name) is not node:
            return
        node.next_tick = float("inf")
        self._handle(node, node.swim.tick(self.now))

    def _handle(self, node: SimNode, outputs: list[object]) -> None:
        for out in outputs:
            if isinstance(out, Send):
                self._send(node, out)
            elif isinstance(out, PushPullTo):
                self._push_pull(node, out.addr, out.join)
            else:
                observed = Observed(self.now, node.name, out)
                if self._record:
                    self.events.append(observed)
                for listener in self.listeners:
                    listener(observed)
        self._reschedule(node)

    def _count(self, node: SimNode, size: int) -> None:
        self.bytes_sent[node.name] += size + (SEAL_OVERHEAD if self._sealed else 0)

    def _send(self, node: SimNode, send: Send) -> None:
        data = node.codec.seal(send.messages, self.now)
        self._count(node, len(data))
        dst_name = self._by_addr.get(send.addr)
        if dst_name is None or (node.name, dst_name) in self.blocked:
            return
        link = self._link(node.name, dst_name)
        if not send.reliable and link.loss and self.rng.random() < link.loss:
            return
        delay = link.delay_s + self.rng.random() * link.jitter_s
        src = node.addr
        self.at(self.now + delay, lambda: self._deliver(dst_name, lambda dst: self._receive(dst, src, data)))

    def _deliver(self, dst_name: str, action: Callable[[SimNode], None]) -> None:
        dst = self.nodes[dst_name]
        if dst.status == "crashed":
            return
        if dst.status == "paused":
            if len(dst.inbox) < PAUSED_INBOX:
                dst.inbox.append(lambda: action(self.nodes[dst_name]))
            return
        action(dst)

    def _receive(self, dst: SimNode, src: Addr, data: bytes) -> None:
        try:
            messages = dst.codec.open(data, self.now)
        except Dropped:
            return
        self._handle(dst, dst.swim.receive(src, messages, self.now))

    def _push_pull(self, node: SimNode, addr: Addr, join: bool) -> None:
        """A TCP state exchange: request and reply each take one link delay."""
        peer_name = self._by_addr.get(addr)
        if peer_name is None:
            return
        if (node.name, peer_name) in self.blocked or (peer_name, node.name) in self.blocked:
            return
        state = node.swim.local_state(join)
        self._count(node, len(msgpack.packb(state.to_wire())))
        delay = self._link(node.name, peer_name).delay_s
        me = node.name

        def at_peer(peer: SimNode) -> None:
            reply = peer.swim.local_state()
            self._count(peer, len(msgpack.packb(reply.to_wire())))
            self._handle(peer, peer.swim.merge_remote_state(state, self.now))
            self.at(self.now + delay, lambda: at_origin(reply))

        def at_origin(reply: object) -> None:
            origin = self.nodes[me]
            if origin.status == "up" and origin.swim is node.swim:
                self._handle(origin, origin.swim.merge_remote_state(reply, self.now))  # type: ignore[arg-type]

        self.at(self.now + delay, lambda: self._deliver(peer_name, at_peer))

    # ---- routing helpers ------------------------------------------------------------------

    def announce(self, name: str, entries: list[ServiceEntry]) -> None:
        node = self.nodes[name]
        node.table.set_local(entries, self.now)
        self._reschedule(node)


def _rand64(rng: random.Random) -> Callable[[], int]:
    return lambda: rng.getrandbits(64)
