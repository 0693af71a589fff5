"""``rsbroker sim raft``: run many seeded simulator schedules and report violations.

Example: ``rsbroker sim raft --nodes 5 --runs 1000 --seed 1 --json``. Run ``i`` uses seed
``seed + i``; replay a failing one with ``--runs 1 --seed <failing seed> --verbose``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from .sim import SimOptions, SimResult, simulate

__all__ = ["main", "run_batch"]


def run_batch(first_seed: int, runs: int, opts: SimOptions) -> list[SimResult]:
    return [simulate(seed, opts) for seed in range(first_seed, first_seed + runs)]


def _run_batch_args(args: tuple[int, int, SimOptions]) -> list[SimResult]:
    return run_batch(*args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsbroker sim raft", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5, help="Raft group size (default %(default)s)")
    parser.add_argument("--runs", type=int, default=100, help="simulated runs, each with its own seed (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first run; run i uses seed+i (default %(default)s)")
    parser.add_argument("--duration", type=float, default=SimOptions.duration, help="virtual ticks per run (default %(default)s)")
    parser.add_argument("--loss", type=float, default=SimOptions.loss, help="message loss probability, 0..1 (default %(default)s)")
    parser.add_argument(
        "--duplicate", type=float, default=SimOptions.duplicate, help="message duplication probability, 0..1 (default %(default)s)"
    )
    parser.add_argument("--clients", type=int, default=SimOptions.clients, help="concurrent simulated clients (default %(default)s)")
    parser.add_argument("--no-membership", action="store_true", help="no membership changes in the schedules")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--verbose", action="store_true", help="print every violation")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.runs < 1 or args.jobs < 1:
        parser.error("--nodes, --runs and --jobs must be >= 1")
    opts = replace(
        SimOptions(),
        nodes=args.nodes,
        duration=args.duration,
        loss=args.loss,
        duplicate=args.duplicate,
        clients=args.clients,
        membership_changes=not args.no_membership,
    )
    started = time.perf_counter()
    if args.jobs == 1:
        results = run_batch(args.seed, args.runs, opts)
    else:
        chunk = max(1, args.runs // (args.jobs * 4))
        work = [
            (s, min(chunk, args.seed + args.runs - s), opts) for s in range(args.seed, args.seed + args.runs, chunk)
        ]
        with ProcessPoolExecutor(args.jobs) as pool:
            results = [r for batch in pool.map(_run_batch_args, work) for r in batch]
    elapsed = time.perf_counter() - started
    failing = [r for r in results if r.violations]
    report = {
        "runs": len(results),
        "violations": sum(len(r.violations) for r in failing),
        "failing_seeds": [r.seed for r in failing],
        "ops_checked": sum(r.ops_checked for r in results),
        "ops_completed": sum(r.ops_ok for r in results),
        "elections": sum(r.leaders for r in results),
        "nodes": args.nodes,
        "first_seed": args.seed,
        "seconds": round(elapsed, 3),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['runs']} runs of {args.nodes} nodes in {elapsed:.1f}s: {report['violations']} violations, "
            f"{report['ops_checked']} client operations checked"
        )
        for r in failing:
            print(f"seed {r.seed}: {r.violations[0]}")
    if args.verbose:
        for r in failing:
            for v in r.violations:
                print(f"seed {r.seed}: {v}", file=sys.stderr)
    return 1 if failing else 0
