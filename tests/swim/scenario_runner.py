"""Text scenarios for the gossip simulator (in the manner of etcd-io/raft's interaction tests).

A scenario file is a list of blocks; each block is one or more commands, a line ``----``,
and the output they are expected to produce (every member state change and routing
change, with its virtual time). Run with ``REWRITE=1`` to regenerate the expected output
after an intended change, then review the diff.

Commands::

    start N [profile=NAME] [seed=S]      run until formed
    run SECONDS
    crash NODE | pause NODE | resume NODE
    restart NODE via SEED
    partition A,B | C,D [one-way]        heal
    loss P                               set loss on every link
    announce NODE SERVICE...             replace NODE's entries
    members NODE                         print NODE's view
    lookup NODE SERVICE                  print what NODE knows of SERVICE
"""

from __future__ import annotations

import shlex
from pathlib import Path

from cluster.routing_table import RoutesChanged, ServiceEntry
from cluster.swim.config import profile
from cluster.swim.core import MemberChanged, NameConflict
from cluster.swim.sim import Observed, Simulator


def _describe(o: Observed) -> str | None:
    e = o.event
    if isinstance(e, MemberChanged):
        prev = e.previous.name.lower() if e.previous is not None else "new"
        how = " (declared)" if e.declared else ""
        return (f"{o.at:8.3f} {o.observer}: {e.member.node} {prev} -> {e.member.state.name.lower()}"
                f" inc={e.member.incarnation}{how}")
    if isinstance(e, RoutesChanged):
        return f"{o.at:8.3f} {o.observer}: routes of {e.node} changed: {','.join(sorted(e.services))}"
    if isinstance(e, NameConflict):
        return f"{o.at:8.3f} {o.observer}: name conflict on {e.node}"
    return None


class Runner:
    def __init__(self) -> None:
        self.sim: Simulator | None = None
        self.lines: list[str] = []

    def _listen(self, o: Observed) -> None:
        text = _describe(o)
        if text:
            self.lines.append(text)

    def execute(self, command: str) -> None:
        words = shlex.split(command)
        op, args = words[0], words[1:]
        if op == "start":
            opts = dict(a.split("=", 1) for a in args[1:])
            self.sim = Simulator(profile(opts.get("profile", "local")), int(opts.get("seed", "1")))
            self.sim.listeners.append(self._listen)
            self.sim.start(int(args[0]))
            return
        sim = self.sim
        assert sim is not None, "start first"
        if op == "run":
            sim.run_for(float(args[0]))
        elif op in ("crash", "pause", "resume"):
            getattr(sim, op)(args[0])
        elif op == "restart":
            sim.restart(args[0], join=[args[2]])
        elif op == "partition":
            text = " ".join(a for a in args if a != "one-way")
            left, right = (side.strip().split(",") for side in text.split("|"))
            sim.partition(left, right, one_way="one-way" in args)
        elif op == "heal":
            sim.heal()
        elif op == "loss":
            sim.default_link.loss = float(args[0])
        elif op == "announce":
            sim.announce(args[0], [ServiceEntry(s, f"{args[0]}-{s}") for s in args[1:]])
        elif op == "members":
            for m in sim.nodes[args[0]].swim.members():
                self.lines.append(f"  {m.node} {m.state.name.lower()} inc={m.incarnation}")
        elif op == "lookup":
            found = sim.nodes[args[0]].table.lookup(args[1])
            self.lines.append(f"  {args[1]}: " + (", ".join(f"{r.node}/{r.entry.instance}" for r in found) or "none"))
        else:
            raise ValueError(f"unknown scenario command {op!r}")


def run_file(path: Path) -> tuple[str, str]:
    """(expected, actual) text of a scenario file."""
    text = path.read_text()
    runner = Runner()
    expected_blocks, actual_blocks = [], []
    for block in text.strip("\n").split("\n\n"):
        commands, _, expected = block.partition("\n----\n")
        if block.rstrip().endswith("----"):
            commands, expected = block.rstrip()[: -len("----")].rstrip("\n"), ""
        runner.lines = []
        for line in commands.splitlines():
            if line.strip() and not line.startswith("#"):
                runner.execute(line)
        expected_blocks.append(f"{commands}\n----\n{expected}".rstrip("\n"))
        actual_blocks.append(f"{commands}\n----\n" + "\n".join(runner.lines))
    return "\n\n".join(expected_blocks) + "\n", "\n\n".join(a.rstrip("\n") for a in actual_blocks) + "\n"
