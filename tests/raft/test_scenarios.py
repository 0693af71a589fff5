"""Scenario tests as text, after etcd-io/raft's interaction tests.

Each file in ``testdata/`` is a list of commands (lines starting with ``> ``), each
followed by what happened: every message delivered, in order, then every node whose
role, term, commit or applied index changed. The test replays the commands and compares
the whole transcript. After an intended behaviour change, regenerate the files with
``RAFT_REWRITE_GOLDEN=1 pytest tests/raft/test_scenarios.py`` and review the diff.

Commands: ``cluster a b c [prevote] [checkquorum]``, ``campaign X``, ``propose X DATA``,
``tick X N``, ``isolate X``, ``heal``, ``transfer X Y`` (ask X to make Y leader),
``read X CTX``, ``compact X``, ``add-learner X Y``, ``promote X Y``, ``remove X Y``,
``restart X`` (from what X persisted), ``restart X empty`` (its data directory emptied),
``restart X keep N`` (its log cut after index N, as a damaged tail is).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.raft.config import RaftConfig
from cluster.raft.core import Raft
from cluster.raft.messages import ConfChange, ConfChangeOp, Entry, EntryType, Message, MsgType
from cluster.raft.storage import MemoryStorage

from .helpers import Network, new_raft

DATA = Path(__file__).with_name("testdata")
SCENARIOS = sorted(DATA.glob("*.txt"))


def fmt_entry(e: Entry) -> str:
    if e.type is EntryType.CONF_CHANGE:
        cc = ConfChange.decode(e.data)
        return f"{e.index}/{e.term}:{cc.op.name.lower()}({cc.node_id})"
    return f"{e.index}/{e.term}" + (f":{e.data.decode()}" if e.data else "")


def fmt(m: Message) -> str:
    parts = [f"{m.frm}->{m.to} {m.type.name} term={m.term}"]
    if m.type in (MsgType.APP, MsgType.VOTE, MsgType.PRE_VOTE):
        parts.append(f"prev={m.index}/{m.log_term}" if m.type is MsgType.APP else f"last={m.index}/{m.log_term}")
    elif m.type is MsgType.HEARTBEAT and m.index:
        parts.append(f"match={m.index}/{m.log_term}")
    elif m.index:
        parts.append(f"index={m.index}")
    if m.entries:
        parts.append("entries=[" + " ".join(fmt_entry(e) for e in m.entries) + "]")
    if m.commit:
        parts.append(f"commit={m.commit}")
    if m.reject:
        parts.append(f"reject hint={m.reject_hint}")
    if m.context:
        parts.append(f"ctx={m.context.decode()}")
    if m.snapshot is not None:
        parts.append(f"snapshot={m.snapshot.index}/{m.snapshot.term} voters={','.join(m.snapshot.voters)}")
    return " ".join(parts)


class Scenario:
    def __init__(self) -> None:
        self.net = Network()
        self.out: list[str] = []

    def state(self, r: Raft) -> tuple[str, int, int, int]:
        return (r.role.value, r.term, r.log.committed, r.log.applied)

    def run(self, *initial: Message, action: Callable[[], object] | None = None) -> None:
        """Do ``action``, deliver until quiet, and transcribe messages and state changes."""
        before = {n: self.state(r) for n, r in self.net.cores.items()}
        start = len(self.net.sent)
        if action is not None:
            action()
        self.net.run(*initial)
        self.out += [fmt(m) for m in self.net.sent[start:] if (m.frm, m.to) not in self.net.dropped]
        for n, r in self.net.cores.items():
            if self.state(r) != before.get(n):
                role, term, commit, applied = self.state(r)
                self.out.append(f"  {n}: {role} term={term} commit={commit} applied={applied} lead={r.lead}")
        for n, states in self.net.read_states.items():
            for rs in states:
                self.out.append(f"  {n}: read ctx={rs.context.decode()} index={rs.index}")
            states.clear()

    def restart(self, node: str, damage: list[str]) -> None:
        """Recover ``node`` from its storage, after emptying it or cutting its log if asked."""
        old = self.net.cores[node]
        storage = self.net.storage[node]
        if damage == ["empty"]:
            storage = self.net.storage[node] = MemoryStorage()
        elif damage[:1] == ["keep"]:
            storage.entries = [e for e in storage.entries if e.index <= int(damage[1])]
        elif damage:
            raise ValueError(f"unknown damage {damage!r}")
        rec = storage.load()
        r = Raft(
            node, old.cfg, random.Random(7), hard_state=rec.hard_state, snapshot=rec.snapshot, entries=rec.entries
        )
        self.net.cores[node] = r
        self.out.append(
            f"  {node}: restarted term={r.term} last={r.log.last_index()} commit={r.log.committed}"
        )

    def command(self, line: str) -> None:
        cmd, *args = line.split()
        cores = self.net.cores
        if cmd == "cluster":
            names = [a for a in args if a not in ("prevote", "checkquorum")]
            cfg = RaftConfig(
                election_tick=10, heartbeat_tick=1, pre_vote="prevote" in args, check_quorum="checkquorum" in args
            )
            self.net = Network(*[new_raft(n, names, cfg, seed=i) for i, n in enumerate(names)])
        elif cmd == "campaign":
            self.run(Message(MsgType.HUP, args[0], args[0]))
        elif cmd == "propose":
            self.run(action=lambda: cores[args[0]].propose(args[1].encode()))
        elif cmd == "tick":
            for _ in range(int(args[1])):
                self.run(action=cores[args[0]].tick)
        elif cmd == "isolate":
            self.net.isolate(args[0])
        elif cmd == "heal":
            self.net.heal()
        elif cmd == "transfer":
            self.run(Message(MsgType.TRANSFER_LEADER, args[0], args[1]))
        elif cmd == "read":
            self.run(action=lambda: cores[args[0]].read_index(args[1].encode()))
        elif cmd == "compact":
            snap = cores[args[0]].compact(b"")
            self.out.append(f"  {args[0]}: snapshot at {snap.index}/{snap.term}")
        elif cmd == "restart":
            self.restart(args[0], args[1:])
        elif cmd in ("add-learner", "promote", "remove"):
            if args[1] not in cores:
                cores[args[1]] = Raft(args[1], next(iter(cores.values())).cfg, random.Random(99))
                self.net.storage[args[1]] = MemoryStorage()
                self.net.read_states[args[1]] = []
            op = {
                "add-learner": ConfChangeOp.ADD_LEARNER,
                "promote": ConfChangeOp.ADD_VOTER,
                "remove": ConfChangeOp.REMOVE,
            }[cmd]
            self.run(action=lambda: cores[args[0]].propose_conf_change(ConfChange(op, args[1])))
        else:
            raise ValueError(f"unknown scenario command {cmd!r}")


def transcript(path: Path) -> tuple[str, str]:
    """(expected file text, transcript produced by replaying its commands)."""
    text = path.read_text()
    sc = Scenario()
    produced: list[str] = []
    for line in text.splitlines():
        if line.startswith("#") or (not line.strip() and not produced):
            produced.append(line)
        elif line.startswith("> "):
            if produced and produced[-1] != "" and not produced[-1].startswith("#"):
                produced.append("")
            produced.append(line)
            sc.out = []
            sc.command(line[2:])
            produced += sc.out
    return text, "\n".join(produced).rstrip("\n") + "\n"


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path) -> None:
    expected, produced = transcript(path)
    if os.environ.get("RAFT_REWRITE_GOLDEN"):
        path.write_text(produced)
        return
    assert produced == expected


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 4
