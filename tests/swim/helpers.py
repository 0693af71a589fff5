"""Helpers to drive one sans-IO Swim core by hand: members, packets, clock."""

from __future__ import annotations

import random

from cluster.swim.config import Config, profile
from cluster.swim.core import MemberChanged, Send, Swim
from cluster.swim.messages import Ack, MemberRecord, MemberState, Message, Ping, PushPull

CFG = profile("lan")


def addr(i: int) -> tuple[str, int]:
    return (f"10.0.0.{i}", 7946)


def make(n_peers: int, config: Config = CFG, seed: int = 1, name: str = "n0") -> Swim:
    """Node n0 at 10.0.0.0 that already knows alive peers n1..n<n_peers>."""
    swim = Swim(name, addr(0), config=config, rng=random.Random(seed), now=0.0)
    peers = tuple(MemberRecord(f"n{i}", *addr(i), 0, MemberState.ALIVE, {}) for i in range(1, n_peers + 1))
    swim.merge_remote_state(PushPull("n1", True, peers, ()), 0.0)
    return swim


def sends(outputs: list[object]) -> list[Send]:
    return [o for o in outputs if isinstance(o, Send)]


def changes(outputs: list[object]) -> list[MemberChanged]:
    return [o for o in outputs if isinstance(o, MemberChanged)]


def messages_to(outputs: list[object], to: tuple[str, int]) -> list[Message]:
    return [m for s in sends(outputs) if s.addr == to for m in s.messages]


def run(swim: Swim, until: float, start: float = 0.0) -> list[object]:
    """Tick at every deadline up to ``until`` with nobody answering; all outputs."""
    out: list[object] = []
    now = start
    while True:
        now = max(now, swim.next_deadline())
        if now > until:
            return out
        out.extend(swim.tick(now))


def run_answered(swim: Swim, until: float, start: float = 0.0) -> list[object]:
    """Like :func:`run`, but every member answers every ping at once (a healthy network)."""
    out: list[object] = []
    now = start
    while True:
        now = max(now, swim.next_deadline())
        if now > until:
            return out
        step = swim.tick(now)
        out.extend(step)
        for s in sends(step):
            for m in s.messages:
                if isinstance(m, Ping):
                    out.extend(swim.receive(s.addr, [Ack(m.seq)], now))
