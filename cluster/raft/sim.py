"""A deterministic cluster simulator: many Raft cores, one process, a virtual clock.

Everything random comes from one seed: tick phases, message delay (which reorders),
loss, duplication, partitions, crashes and restarts (from ``MemoryStorage``, exactly
what the node had persisted), membership changes, and the clients' operations. A run
replays bit for bit from its seed, so a failing seed is a bug report.

The simulator drives each core the way ``RaftNode`` does (persist, send, apply,
advance), with the real ``ConfigStateMachine`` as the application, and records a
client history for the linearizability checker plus safety violations.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field, replace
from typing import Any

from .checker import INF, KVOp, SafetyMonitor, check_linearizable, check_log_matching
from .config import RaftConfig
from .core import ProposalDropped, Raft, Role
from .messages import ConfChange, ConfChangeOp, EntryType, Message
from .statemachine import Command, ConfigStateMachine
from .storage import MemoryStorage

__all__ = ["SimOptions", "SimResult", "simulate"]

_TICK, _DELIVER, _CLIENT, _FAULT, _TIMEOUT, _RETRY = range(6)


@dataclass(frozen=True)
class SimOptions:
    nodes: int = 5
    #: Virtual time of one run, in ticks; clients stop issuing at 80% of it.
    duration: float = 240.0
    clients: int = 3
    keys: int = 3
    loss: float = 0.03
    duplicate: float = 0.02
    min_delay: float = 0.05
    max_delay: float = 1.2
    #: Mean ticks between faults (crash, restart, partition, heal, membership change).
    fault_every: float = 15.0
    #: A client gives up on an operation after this many ticks (its outcome stays unknown).
    op_timeout: float = 25.0
    #: A pending write is proposed again this often (ticks), as RaftNode does; the state
    #: machine must drop the repeats or linearizability breaks.
    write_retry: float = 6.0
    #: Applied entries beyond the last snapshot before a node compacts its log.
    snapshot_every: int = 12
    membership_changes: bool = True
    #: Draw batch size and in-flight limit per run, so that small batches (which expose
    #: commit-rule bugs, Figure 8) and deep pipelines both get exercised.
    vary_flow_control: bool = True
    raft: RaftConfig = field(
        default_factory=lambda: RaftConfig(election_tick=10, heartbeat_tick=2, max_inflight_msgs=8)
    )


@dataclass
class SimResult:
    seed: int
    violations: list[str]
    ops_checked: int
    ops_ok: int
    leaders: int


class _Node:
    __slots__ = ("alive", "disk", "id", "raft", "ready_reads", "sm", "waiting_reads", "waiting_writes")

    def __init__(self, node_id: str) -> None:
        self.id = node_id
        self.disk = MemoryStorage()
        self.alive = True
        self.raft: Raft
        self.sm = ConfigStateMachine()
        self.waiting_writes: dict[int, int] = {}  # rid -> history slot
        self.waiting_reads: dict[bytes, int] = {}  # context -> history slot
        self.ready_reads: list[tuple[int, bytes]] = []  # (read index, context) waiting for apply


class _Sim:
    def __init__(self, seed: int, opts: SimOptions) -> None:
        self.seed = seed
        self.opts = opts
        self.rng = random.Random(seed)
        self.now = 0.0
        self.queue: list[tuple[float, int, int, Any]] = []
        self.seq = itertools.count()
        self.monitor = SafetyMonitor()
        self.ids = [f"n{i + 1}" for i in range(opts.nodes)]
        self.nodes = {n: _Node(n) for n in self.ids}
        self.cut: set[tuple[str, str]] = set()
        self.history: list[KVOp | None] = []
        self.client_busy: dict[int, int] = {}  # client -> history slot in flight
        self.rid = itertools.count(1)
        self.leader_seen: set[tuple[int, str]] = set()
        self.raft_config = opts.raft
        if opts.vary_flow_control:
            self.raft_config = replace(
                opts.raft,
                max_entries_per_msg=self.rng.choice((1, 2, 4, 64)),
                max_inflight_msgs=self.rng.choice((1, 2, 8)),
            )
        for n in self.ids:
            node = self.nodes[n]
            node.raft = self._new_core(n, node)
            node.raft.bootstrap(self.ids)
            self._push(self.rng.random(), _TICK, n)
        for c in range(opts.clients):
            self._push(self.rng.uniform(5, 15), _CLIENT, c)
        self._push(self.rng.expovariate(1 / opts.fault_every), _FAULT, None)

    # ------------------------------------------------------------------ plumbing

    def _new_core(self, node_id: str, node: _Node) -> Raft:
        rec = node.disk.load()
        core = Raft(
            node_id,
            self.raft_config,
            random.Random(self.rng.getrandbits(32)),
            hard_state=rec.hard_state,
            snapshot=rec.snapshot,
            entries=rec.entries,
        )
        node.sm = ConfigStateMachine()
        if rec.snapshot is not None:
            node.sm.restore(rec.snapshot.data, rec.snapshot.index)
        return core

    def _push(self, at: float, kind: int, payload: Any) -> None:
        heapq.heappush(self.queue, (at, next(self.seq), kind, payload))

    def _send(self, m: Message) -> None:
        if (m.frm, m.to) in self.cut or self.rng.random() < self.opts.loss:
            return
        copies = 2 if self.rng.random() < self.opts.duplicate else 1
        for _ in range(copies):
            self._push(self.now + self.rng.uniform(self.opts.min_delay, self.opts.max_delay), _DELIVER, m)

    # ------------------------------------------------------------------ the Ready loop

    def _process(self, node: _Node) -> None:
        raft = node.raft
        while raft.has_ready():
            rd = raft.ready()
            node.disk.save(rd.hard_state, rd.entries, rd.snapshot)
            for m in rd.messages:
                self._send(m)
            if rd.snapshot is not None:
                node.sm.restore(rd.snapshot.data, rd.snapshot.index)
            for e in rd.committed_entries:
                self.monitor.on_apply(node.id, e)
                if e.type is EntryType.NORMAL and e.data:
                    cmd, _ = node.sm.apply(e.index, e.data)
                    if cmd is not None and cmd.origin == node.id:
                        slot = node.waiting_writes.pop(cmd.rid, None)
                        if slot is not None:
                            self._complete(slot, None)
            node.ready_reads.extend((rs.index, rs.context) for rs in rd.read_states)
            raft.advance(rd)
            self._serve_reads(node)
            if raft.role is Role.LEADER and (raft.term, node.id) not in self.leader_seen:
                self.leader_seen.add((raft.term, node.id))
                self.monitor.on_leader(raft.term, node.id, raft.log.term)
            if raft.log.applied - raft.log.snap_index >= self.opts.snapshot_every:
                snap = raft.compact(node.sm.snapshot())
                node.disk.compact(snap, list(raft.log.entries))

    def _serve_reads(self, node: _Node) -> None:
        still = []
        for index, ctx in node.ready_reads:
            if node.raft.log.applied >= index:
                slot = node.waiting_reads.pop(ctx, None)
                if slot is not None:
                    op = self.history[slot]
                    assert op is not None
                    self._complete(slot, node.sm.get(op.key))
            else:
                still.append((index, ctx))
        node.ready_reads = still

    # ------------------------------------------------------------------ clients

    def _complete(self, slot: int, read_value: Any) -> None:
        op = self.history[slot]
        if op is None or op.ret != INF:
            return
        value = read_value if op.kind == "get" else op.value
        self.history[slot] = KVOp(op.client, op.kind, op.key, value, op.call, self.now)
        if self.client_busy.get(op.client) == slot:
            del self.client_busy[op.client]
            if self.now < self.opts.duration * 0.8:
                self._push(self.now + self.rng.uniform(0.1, 3), _CLIENT, op.client)

    def _client(self, client: int) -> None:
        alive = [n for n in self.ids if self.nodes[n].alive]
        if not alive or self.now >= self.opts.duration * 0.8:
            return
        node = self.nodes[self.rng.choice(alive)]
        key = f"app/k{self.rng.randrange(self.opts.keys)}"
        r = self.rng.random()
        slot = len(self.history)
        rid = next(self.rid)
        if r < 0.5:
            op = KVOp(client, "put", key, rid, self.now)
            cmd = Command("put", key, rid, node.id, rid)
        elif r < 0.6:
            op = KVOp(client, "delete", key, None, self.now)
            cmd = Command("delete", key, None, node.id, rid)
        else:
            op, cmd = KVOp(client, "get", key, None, self.now), None
        self.history.append(op)
        self.client_busy[client] = slot
        try:
            if cmd is None:
                ctx = f"{node.id}:{rid}".encode()
                node.waiting_reads[ctx] = slot
                node.raft.read_index(ctx)
            else:
                node.waiting_writes[rid] = slot
                node.raft.propose(cmd.encode())
        except ProposalDropped:
            node.waiting_writes.pop(rid, None)
            self.history[slot] = None  # refused outright: it never entered any log
            del self.client_busy[client]
            self._push(self.now + self.rng.uniform(0.5, 3), _CLIENT, client)
            return
        self._push(self.now + self.opts.op_timeout, _TIMEOUT, (client, slot))
        if cmd is not None:
            self._push(self.now + self.opts.write_retry, _RETRY, (node.id, rid, cmd.encode()))
        self._process(node)

    def _timeout(self, client: int, slot: int) -> None:
        if self.client_busy.get(client) != slot:
            return
        del self.client_busy[client]
        op = self.history[slot]
        if op is not None and op.kind == "get":
            self.history[slot] = None  # an unanswered read has no effect
        for node in self.nodes.values():
            node.waiting_writes = {r: s for r, s in node.waiting_writes.items() if s != slot}
            node.waiting_reads = {c: s for c, s in node.waiting_reads.items() if s != slot}
        self._push(self.now + self.rng.uniform(0.1, 2), _CLIENT, client)

    def _retry(self, node_id: str, rid: int, data: bytes) -> None:
        node = self.nodes[node_id]
        if not node.alive or rid not in node.waiting_writes:
            return  # answered, timed out, or lost with a crash
        try:
            node.raft.propose(data)
        except ProposalDropped:
            pass
        self._push(self.now + self.opts.write_retry, _RETRY, (node_id, rid, data))
        self._process(node)

    # ------------------------------------------------------------------ faults

    def _fault(self) -> None:
        rng = self.rng
        ending = self.now >= self.opts.duration * 0.75
        if ending:  # let the cluster settle so the last operations can finish
            self.cut.clear()
            for n in self.ids:
                if not self.nodes[n].alive:
                    self._restart(n)
            return
        choice = rng.random()
        if choice < 0.25:
            self._crash(rng.choice(self.ids))
        elif choice < 0.45:
            down = [n for n in self.ids if not self.nodes[n].alive]
            if down:
                self._restart(rng.choice(down))
        elif choice < 0.65:
            side = set(rng.sample(self.ids, rng.randrange(1, len(self.ids) // 2 + 1)))
            self.cut = {(a, b) for a in self.ids for b in self.ids if (a in side) != (b in side)}
        elif choice < 0.78:
            self.cut.clear()
        elif choice < 0.88:
            self._transfer_leadership()
        elif self.opts.membership_changes:
            self._membership_change()
        self._push(self.now + rng.expovariate(1 / self.opts.fault_every), _FAULT, None)

    def _crash(self, n: str) -> None:
        node = self.nodes[n]
        if not node.alive:
            return
        node.alive = False
        node.waiting_writes.clear()  # their outcome is unknown: they stay open in the history
        for slot in node.waiting_reads.values():
            self.history[slot] = None
        node.waiting_reads.clear()
        node.ready_reads.clear()

    def _restart(self, n: str) -> None:
        node = self.nodes[n]
        node.alive = True
        node.raft = self._new_core(n, node)
        self._process(node)

    def _leader(self) -> _Node | None:
        return next(
            (self.nodes[n] for n in self.ids if self.nodes[n].alive and self.nodes[n].raft.role is Role.LEADER), None
        )

    def _transfer_leadership(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        leader.raft.transfer_leadership(self.rng.choice(sorted(leader.raft.voters)))
        self._process(leader)

    def _membership_change(self) -> None:
        leader = self._leader()
        if leader is None:
            return
        raft = leader.raft
        target = self.rng.choice(self.ids)
        if target in raft.voters:
            if len(raft.voters) <= 3 or target == raft.id:
                return
            change = ConfChange(ConfChangeOp.REMOVE, target)
        elif target in raft.learners:
            change = ConfChange(ConfChangeOp.ADD_VOTER, target)
        else:
            change = ConfChange(ConfChangeOp.ADD_LEARNER, target)
        try:
            raft.propose_conf_change(change)
        except ProposalDropped:
            return
        self._process(leader)

    # ------------------------------------------------------------------ main loop

    def run(self) -> SimResult:
        end = self.opts.duration
        while self.queue:
            at, _, kind, payload = heapq.heappop(self.queue)
            if at > end:
                break
            self.now = at
            if kind == _DELIVER:
                node = self.nodes[payload.to]
                if node.alive:
                    node.raft.step(payload)
                    self._process(node)
            elif kind == _TICK:
                node = self.nodes[payload]
                if node.alive:
                    node.raft.tick()
                    self._process(node)
                self._push(at + 1.0, _TICK, payload)
            elif kind == _CLIENT:
                self._client(payload)
            elif kind == _RETRY:
                self._retry(*payload)
            elif kind == _TIMEOUT:
                self._timeout(*payload)
            else:
                self._fault()
        history = [op for op in self.history if op is not None]
        violations = list(self.monitor.violations)
        violations += check_log_matching(
            {n: (node.raft.log.snap_index, node.raft.log.entries) for n, node in self.nodes.items()}
        )
        ok, key = check_linearizable(history)
        if not ok:
            violations.append(f"linearizability: the history of {key} has no linearization")
        return SimResult(
            self.seed, violations, len(history), sum(1 for op in history if op.ret != INF), len(self.monitor.leaders)
        )


def simulate(seed: int, opts: SimOptions | None = None) -> SimResult:
    """Run one seeded schedule and check it."""
    return _Sim(seed, opts or SimOptions()).run()
