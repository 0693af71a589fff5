"""Correctness checks for the simulator: Raft's safety properties and linearizability.

- ``SafetyMonitor`` watches a running cluster and records violations of Figure 3's
  properties: election safety (one leader per term), leader completeness (a new leader
  holds every committed entry), state-machine safety (no two nodes apply different
  entries at one index); ``check_log_matching`` compares final logs.
- ``check_linearizable`` is a Wing & Gong search with Lowe's memoisation (as in
  Porcupine) over a key-value history. The history is split by key first (P-compositionality:
  a KV history is linearizable iff each key's is), which keeps each search small.

Operations that never returned (the client timed out, its node crashed) have
``ret = inf``: they may have taken effect at any point after their call, or never.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .messages import Entry

__all__ = ["KVOp", "SafetyMonitor", "check_linearizable", "check_log_matching"]

INF = math.inf


@dataclass(frozen=True, slots=True)
class KVOp:
    """One client operation: ``kind`` is "put", "delete" or "get"; for get, ``value`` is what was read."""

    client: int
    kind: str
    key: str
    value: Any
    call: float
    ret: float = INF


class _Event:
    __slots__ = ("is_call", "match", "next", "op", "prev")

    def __init__(self, op: int, is_call: bool) -> None:
        self.op = op
        self.is_call = is_call
        self.match: _Event | None = None
        self.prev: _Event | None = None
        self.next: _Event | None = None


def _step(state: Any, op: KVOp) -> tuple[bool, Any]:
    """The sequential specification of one register."""
    if op.kind == "put":
        return True, op.value
    if op.kind == "delete":
        return True, None
    return op.value == state, state


def _check_register(ops: list[KVOp]) -> bool:
    """Wing-Gong-Lowe search for one key's history (initial value None)."""
    timed: list[tuple[float, int, int, bool]] = []
    for i, op in enumerate(ops):
        # At equal times a return precedes a call (strict real-time order), except an
        # operation's own return, which must follow its call.
        timed.append((op.call, 1, i, True))
        timed.append((op.ret, 0 if op.ret > op.call else 2, i, False))
    timed.sort()
    head = _Event(-1, False)
    calls: dict[int, _Event] = {}
    prev = head
    for _, _, i, is_call in timed:
        ev = _Event(i, is_call)
        if is_call:
            calls[i] = ev
        else:
            calls[i].match = ev
        ev.prev, prev.next = prev, ev
        prev = ev

    def lift(ev: _Event) -> None:
        for e in (ev, ev.match):
            assert e is not None and e.prev is not None
            e.prev.next = e.next
            if e.next is not None:
                e.next.prev = e.prev

    def unlift(ev: _Event) -> None:
        for e in (ev.match, ev):
            assert e is not None and e.prev is not None
            e.prev.next = e
            if e.next is not None:
                e.next.prev = e

    state: Any = None
    linearized = 0
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[_Event, Any]] = []
    entry = head.next
    while head.next is not None:
        assert entry is not None
        if entry.is_call:
            ok, new_state = _step(state, ops[entry.op])
            if ok:
                new_lin = linearized | (1 << entry.op)
                key = (new_lin, _freeze(new_state))
                if key not in seen:
                    seen.add(key)
                    stack.append((entry, state))
                    state, linearized = new_state, new_lin
                    lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return False
            top, state = stack.pop()
            linearized &= ~(1 << top.op)
            unlift(top)
            entry = top.next
    return True


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def check_linearizable(history: Iterable[KVOp]) -> tuple[bool, str | None]:
    """(True, None) if the history is linearizable, else (False, the first offending key)."""
    by_key: dict[str, list[KVOp]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    for key in sorted(by_key):
        if not _check_register(by_key[key]):
            return False, key
    return True, None


class SafetyMonitor:
    """Records what it is shown and collects violation messages."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, Entry] = {}

    def on_leader(self, term: int, node: str, term_of: Any) -> None:
        """``node`` leads ``term``; ``term_of(index)`` reads its log (None if compacted)."""
        other = self.leaders.setdefault(term, node)
        if other != node:
            self.violations.append(f"election safety: {other} and {node} both lead term {term}")
            return
        for index, entry in self.committed.items():
            have = term_of(index)
            if have is not None and have != entry.term:
                self.violations.append(
                    f"leader completeness: {node} leads term {term} without committed entry {index} "
                    f"(term {entry.term}, it has term {have})"
                )

    def on_apply(self, node: str, entry: Entry) -> None:
        seen = self.committed.setdefault(entry.index, entry)
        if seen != entry:
            self.violations.append(
                f"state machine safety: {node} applied {entry.index}/{entry.term} but another node applied "
                f"{seen.index}/{seen.term} with other data"
            )


def check_log_matching(logs: dict[str, tuple[int, list[Entry]]]) -> list[str]:
    """Log matching: if two logs hold an entry with equal index and term, they agree up to it.

    ``logs`` maps node -> (snapshot index, entries after it).
    """
    problems: list[str] = []
    names = sorted(logs)
    for a_pos, a in enumerate(names):
        for b in names[a_pos + 1 :]:
            a_base, a_ents = logs[a]
            b_base, b_ents = logs[b]
            lo = max(a_base, b_base) + 1
            hi = min(a_base + len(a_ents), b_base + len(b_ents))
            agreed = False
            for index in range(hi, lo - 1, -1):
                ea, eb = a_ents[index - a_base - 1], b_ents[index - b_base - 1]
                if agreed and ea != eb:
                    problems.append(f"log matching: {a} and {b} agree at a later index but differ at {index}")
                    break
                if not agreed and ea.term == eb.term:
                    agreed = True
                    if ea != eb:
                        problems.append(f"log matching: {a} and {b} hold different entries {index}/{ea.term}")
                        break
    return problems
