"""Small harness for driving sans-IO Raft cores by hand, as etcd-io/raft's tests do."""

from __future__ import annotations

import random
from dataclasses import replace

from cluster.raft.config import RaftConfig
from cluster.raft.core import Raft, Ready
from cluster.raft.messages import Entry, Message, MsgType, ReadState
from cluster.raft.storage import MemoryStorage

#: Plain Raft as the paper describes it: no pre-vote, no check-quorum.
PAPER = RaftConfig(election_tick=10, heartbeat_tick=1, pre_vote=False, check_quorum=False)


def new_raft(node_id: str, voters: list[str], config: RaftConfig = PAPER, seed: int = 0) -> Raft:
    """A core with a bootstrapped membership, its bootstrap Ready already handled."""
    r = Raft(node_id, config, random.Random(seed))
    r.bootstrap(voters)
    drain(r)
    return r


def drain(r: Raft) -> list[Ready]:
    """Handle every pending Ready without sending anything; return them."""
    out = []
    while r.has_ready():
        rd = r.ready()
        r.advance(rd)
        out.append(rd)
    return out


def take_messages(r: Raft) -> list[Message]:
    return [m for rd in drain(r) for m in rd.messages]


def entries(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(t, start + i) for i, t in enumerate(terms)]


class Network:
    """Cores wired together in memory; ``run`` delivers until nothing is left to say."""

    def __init__(self, *cores: Raft) -> None:
        self.cores = {r.id: r for r in cores}
        self.storage = {r.id: MemoryStorage() for r in cores}
        for r in cores:
            self.storage[r.id].save(r.hard_state(), list(r.log.entries), None)
        self.dropped: set[tuple[str, str]] = set()
        self.sent: list[Message] = []
        self.read_states: dict[str, list[ReadState]] = {r.id: [] for r in cores}

    def isolate(self, node: str) -> None:
        for other in self.cores:
            if other != node:
                self.dropped |= {(node, other), (other, node)}

    def heal(self) -> None:
        self.dropped.clear()

    def run(self, *initial: Message, max_rounds: int = 1000) -> None:
        pending = list(initial)
        for _ in range(max_rounds):
            for r in self.cores.values():
                while r.has_ready():
                    rd = r.ready()
                    self.storage[r.id].save(rd.hard_state, rd.entries, rd.snapshot)
                    pending.extend(rd.messages)
                    self.read_states.setdefault(r.id, []).extend(rd.read_states)
                    r.advance(rd)
            if not pending:
                return
            batch, pending = pending, []
            for m in batch:
                self.sent.append(m)
                if (m.frm, m.to) not in self.dropped and m.to in self.cores:
                    self.cores[m.to].step(replace(m))
        raise AssertionError("network did not quiesce")

    def campaign(self, node: str) -> None:
        self.run(Message(MsgType.HUP, node, node))

    def tick(self, node: str, n: int = 1) -> None:
        for _ in range(n):
            self.cores[node].tick()
        self.run()
