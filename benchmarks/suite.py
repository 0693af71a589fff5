"""A benchmark run: which cells to measure, running every line-up, and collecting what came back.

Rules: one line-up at a time, its servers started fresh and stopped before the next (two
systems never share the two cores); each line-up's cells run in one load-generator process,
whose JSON lines drive the progress display on stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from benchmarks.procs import Processes, StartError
from benchmarks.ratios import CAPACITY_INFLIGHT, RATIOS, SMALL_PAYLOAD, Ratio, round_ratio
from benchmarks.resources import idle_memory
from benchmarks.stats import SCENARIOS, Cell
from benchmarks.systems import LINEUPS, Lineup, Target, Unavailable


@dataclass(frozen=True)
class Plan:
    """What a run measures; :data:`FULL` and :data:`QUICK` are the two named profiles."""

    inflights: tuple[int, ...]
    payloads: tuple[int, ...]
    #: in flight for request-stream and fire-and-forget (quick keeps only 64 there)
    stream_inflights: tuple[int, ...]
    warmup_s: float
    duration_s: float
    #: open-loop request-response for the fixed-rate latency figure (requests/s, seconds)
    fixed_rate: float
    fixed_rate_s: float
    idle: tuple[tuple[str, int], ...]
    #: paired phase: rounds of alternating cells per ratio, and each cell's window (seconds)
    pair_rounds: int
    pair_window_s: float
    #: names of the ratios to pair; None pairs every ratio
    pair_ratios: tuple[str, ...] | None = None


FULL = Plan(
    inflights=(1, 64, 512),
    payloads=(SMALL_PAYLOAD, 16 * 1024),
    stream_inflights=(1, 64, 512),
    warmup_s=0.5,
    duration_s=2.0,
    fixed_rate=5000.0,
    fixed_rate_s=4.0,
    idle=(("tcp", 1000), ("ws", 1000), ("tcp", 10_000), ("ws", 10_000)),
    pair_rounds=5,
    pair_window_s=1.0,
)
QUICK = Plan(
    inflights=(1, 64),
    payloads=(SMALL_PAYLOAD,),
    stream_inflights=(64,),
    warmup_s=0.1,
    duration_s=0.3,
    fixed_rate=2000.0,
    fixed_rate_s=0.5,
    idle=(("tcp", 1000),),
    pair_rounds=2,
    pair_window_s=0.3,
    pair_ratios=("issue3_rsocketpy_hop", "issue3_capacity", "py_vs_nats", "py_vs_aiohttp", "py_cross_node_vs_one_node",
                 "p2c_vs_round_robin", "outlier_vs_round_robin", "canary_vs_round_robin"),
)
#: the smallest configuration that still exercises every code path (the harness's smoke test)
TINY = Plan(
    inflights=(4,),
    payloads=(SMALL_PAYLOAD,),
    stream_inflights=(4,),
    warmup_s=0.05,
    duration_s=0.1,
    fixed_rate=200.0,
    fixed_rate_s=0.2,
    idle=(("tcp", 20), ("ws", 20)),
    pair_rounds=1,
    pair_window_s=0.1,
    pair_ratios=("issue3_capacity",),
)


def cells_for(lineup: Lineup, plan: Plan, scenarios: Iterable[str]) -> list[Cell]:
    """The cells of one line-up: every scenario it serves, plus the ratio and fixed-rate cells."""
    wanted = [s for s in SCENARIOS if s in scenarios and s in lineup.scenarios]
    cells = []
    for scenario in wanted:
        inflights = plan.inflights if scenario == "request-response" else plan.stream_inflights
        for inflight in inflights:
            for payload in plan.payloads:
                cells.append(Cell(scenario, inflight, payload, plan.warmup_s, plan.duration_s))
    if lineup.client == "frames" and "request-response" in wanted:
        if CAPACITY_INFLIGHT not in plan.inflights:
            cells.append(Cell("request-response", CAPACITY_INFLIGHT, SMALL_PAYLOAD, plan.warmup_s, plan.duration_s))
        cells.append(Cell("request-response", 1, SMALL_PAYLOAD, plan.warmup_s, plan.fixed_rate_s, rate=plan.fixed_rate))
    return cells


@dataclass
class Outcome:
    """Everything a run produced, in the shape the report needs."""

    results: list[dict[str, Any]] = field(default_factory=list)
    fixed_rate: list[dict[str, Any]] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    idle_memory: list[dict[str, Any]] = field(default_factory=list)
    #: ratio name -> per-round ratios of the paired phase
    paired: dict[str, list[float]] = field(default_factory=dict)


class Progress:
    """One line per event on stderr: ``[done/total] what: figure``."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self._stream = stream
        self._started = time.monotonic()

    def note(self, text: str) -> None:
        self._stream.write(f"[{self.done:>3}/{self.total}] {time.monotonic() - self._started:6.1f}s {text}\n")
        self._stream.flush()

    def step(self, text: str) -> None:
        self.done += 1
        self.note(text)


def _row(lineup: Lineup, result: dict[str, Any]) -> dict[str, Any]:
    cell = result["cell"]
    row = {
        "system": lineup.system,
        "scenario": cell["scenario"],
        "inflight": cell["inflight"],
        "payload_bytes": cell["payload_bytes"],
        "ops_per_s": result.get("ops_per_s"),
        "p50_ms": result.get("p50_ms"),
        "p99_ms": result.get("p99_ms"),
        "client": lineup.client,
        "path": lineup.path,
    }
    for extra in ("p999_ms", "errors", "window_s", "cpu_s", "failed"):
        if extra in result:
            row[extra] = result[extra]
    return row


def _describe(lineup: Lineup, cell: dict[str, Any], result: dict[str, Any]) -> str:
    what = f"{lineup.key} {cell['scenario']} {cell['inflight']}x{cell['payload_bytes']}B"
    if cell.get("rate"):
        what = f"{lineup.key} fixed rate {cell['rate']:.0f}/s"
    if "failed" in result:
        return f"{what}: FAILED {result['failed']}"
    latency = f" p50 {result['p50_ms']} ms p99 {result['p99_ms']} ms" if result.get("p50_ms") is not None else ""
    return f"{what}: {result['ops_per_s']:,.0f} ops/s{latency}"


def _loadgen(lineup: Lineup, target: Target, cells: list[Cell], procs: Processes, tag: str = "") -> Iterator[dict[str, Any]]:
    """Run ``cells`` in one generator process; yield each cell's result as it arrives.

    A generator that dies early yields fewer results; the caller compares counts.
    """
    name = f"loadgen-{lineup.system}-{lineup.client}{tag}"
    spec = {"client": lineup.client, "target": target.address, "watch": target.watch, "cells": [asdict(c) for c in cells]}
    process = procs.spawn_reader(name, [sys.executable, "-m", "benchmarks.loadgen", json.dumps(spec)])
    assert process.stdout is not None
    for line in process.stdout:
        yield json.loads(line)
    process.wait()


def _run_lineup(lineup: Lineup, target: Target, cells: list[Cell], procs: Processes, progress: Progress, outcome: Outcome) -> None:
    received = 0
    for result in _loadgen(lineup, target, cells, procs):
        received += 1
        cell = result["cell"]
        progress.step(_describe(lineup, cell, result))
        if cell.get("rate"):
            outcome.fixed_rate.append({
                "system": lineup.system, "client": lineup.client, "rate_per_s": cell["rate"],
                "achieved_per_s": result.get("ops_per_s"), "p50_ms": result.get("p50_ms"),
                "p99_ms": result.get("p99_ms"), "p999_ms": result.get("p999_ms"),
            })  # fmt: skip
        else:
            outcome.results.append(_row(lineup, result))
    if received < len(cells):
        outcome.unavailable[f"{lineup.key} (partial)"] = (
            f"load generator stopped after {received}/{len(cells)} cells; "
            f"see {procs.log_dir}/loadgen-{lineup.system}-{lineup.client}.log"
        )
        progress.done += len(cells) - received


def _pair_lineups(ratio: Ratio, selected: list[Lineup]) -> list[Lineup] | None:
    by_key = {(l.system, l.client): l for l in selected}
    wanted = [ratio.numerator, *ratio.denominators]
    lineups = [by_key[k] for k in wanted if k in by_key]
    has_denominator = any(k in by_key for k in ratio.denominators)
    return lineups if ratio.numerator in by_key and has_denominator else None


def _paired_ratios(plan: Plan) -> list[Ratio]:
    return [r for r in RATIOS if plan.pair_ratios is None or r.name in plan.pair_ratios]


def run_pairs(plan: Plan, selected: list[Lineup], log_dir: Path, progress: Progress, outcome: Outcome) -> None:
    """The paired phase: for each ratio, all its systems up at once, cells alternating round by round.

    Neighbours' load on a shared machine changes over minutes; cells seconds apart, in an
    order reversed every round, see nearly the same machine, so their ratio holds.
    """
    for ratio in _paired_ratios(plan):
        lineups = _pair_lineups(ratio, selected)
        if lineups is None or any(l.key in outcome.unavailable for l in lineups):
            continue
        cell = Cell("request-response", ratio.inflight, SMALL_PAYLOAD, plan.warmup_s, plan.pair_window_s)
        with Processes(log_dir / f"pair-{ratio.name}") as procs:
            try:
                targets = {l.key: l.start(procs) for l in lineups}
            except (Unavailable, StartError) as exc:
                outcome.unavailable[f"pair {ratio.name}"] = f"not available: {exc}"
                progress.done += plan.pair_rounds * len(lineups)
                continue
            rounds: list[float] = []
            for index in range(plan.pair_rounds):
                order = lineups if index % 2 == 0 else lineups[::-1]
                ops: dict[tuple[str, str], float] = {}
                for lineup in order:
                    results = list(_loadgen(lineup, targets[lineup.key], [cell], procs, tag=f"-pair-{ratio.name}"))
                    ops[(lineup.system, lineup.client)] = results[0].get("ops_per_s", 0.0) if results else 0.0
                    progress.step(f"pair {ratio.name} round {index + 1}: {lineup.key} {ops[(lineup.system, lineup.client)]:,.0f} ops/s")
                value = round_ratio(ratio, ops)
                if value is not None:
                    rounds.append(value)
            if rounds:
                outcome.paired[ratio.name] = rounds


def select(only: set[str] | None) -> list[Lineup]:
    """The line-ups ``--only`` names: whole systems (``nats``) or single ones (``nats[nats-py]``)."""
    return [l for l in LINEUPS if (only is None and not l.opt_in) or (only is not None and (l.system in only or l.key in only))]


def run(plan: Plan, only: set[str] | None, scenarios: set[str], log_dir: Path, resources: bool = True) -> Outcome:
    """Measure every selected line-up, then the paired ratios, then the broker's idle-connection memory."""
    lineups = select(only)
    planned = {l.key: cells_for(l, plan, scenarios) for l in lineups}
    idle = plan.idle if resources and (only is None or "broker-1" in only) else ()
    pairs = [p for p in (_pair_lineups(r, lineups) for r in _paired_ratios(plan)) if p] if "request-response" in scenarios else []
    pair_cells = plan.pair_rounds * sum(len(p) for p in pairs)
    progress = Progress(sum(len(c) for c in planned.values()) + pair_cells + len(idle))
    outcome = Outcome()
    for lineup in lineups:
        cells = planned[lineup.key]
        if not cells:
            continue
        with Processes(log_dir / lineup.key.replace("[", "-").rstrip("]")) as procs:
            progress.note(f"{lineup.key}: starting servers ({lineup.path})")
            try:
                target = lineup.start(procs)
            except (Unavailable, StartError) as exc:
                outcome.unavailable[lineup.key] = f"not available: {exc}"
                progress.done += len(cells)
                progress.note(f"{lineup.key}: not available: {exc}")
                continue
            _run_lineup(lineup, target, cells, procs, progress, outcome)
    if pairs:
        run_pairs(plan, lineups, log_dir, progress, outcome)
    for transport, connections in idle:
        with Processes(log_dir / f"idle-{transport}-{connections}") as procs:
            try:
                figure = idle_memory(procs, transport, connections)
            except (Unavailable, StartError) as exc:
                outcome.unavailable[f"idle-{transport}-{connections}"] = f"not available: {exc}"
                progress.step(f"idle {transport} x{connections}: not available: {exc}")
                continue
            outcome.idle_memory.append(figure.as_dict())
            progress.step(f"idle {transport} x{connections}: {figure.bytes_per_connection:,.0f} B per connection")
    return outcome
