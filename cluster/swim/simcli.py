"""``rsbroker sim gossip``: run a seeded gossip scenario and print its figures.

Example: ``rsbroker sim gossip --nodes 50 --loss 0.1 --seed 7 --json``; with ``--routes
200000`` it runs the fleet scenario (:mod:`cluster.swim.fleet`) instead. The JSON keys
``nodes, loss, seed, detection_s{median,p99}, convergence_s{median,p99},
false_dead_per_node_hour, bytes_per_node_s`` are stable, so runs can be compared over time.
"""

from __future__ import annotations

import argparse
import json
import sys

from .config import PROFILES
from .fleet import run_fleet
from .scenarios import Scenario, run

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rsbroker sim gossip",
                                description="Deterministic SWIM/Lifeguard simulation (virtual time).")
    p.add_argument("--nodes", type=int, default=10, help="cluster size (default 10)")
    p.add_argument("--loss", type=float, default=0.0, help="packet loss on every link, 0..1 (default 0)")
    p.add_argument("--seed", type=int, default=1, help="random seed; same seed, same run (default 1)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="lan", help="gossip profile (default lan)")
    p.add_argument("--steady", type=float, default=60.0, help="virtual seconds of steady run (default 60)")
    p.add_argument("--trials", type=int, default=3, help="crash and announce trials (default 3)")
    p.add_argument("--pause", type=float, default=0.0, help="pause one node this long in the steady run")
    p.add_argument("--delay-ms", type=float, default=0.5, help="one-way link delay (default 0.5 ms)")
    p.add_argument("--jitter-ms", type=float, default=0.5, help="uniform extra delay (default 0.5 ms)")
    p.add_argument("--routes", type=int, default=0,
                   help="run the fleet scenario instead: this many device services spread over the nodes; "
                        "prints convergence time, bytes, CPU and memory per route (default: off)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not 0.0 <= args.loss < 1.0:
        print("--loss must be within [0, 1)", file=sys.stderr)
        return 2
    if args.nodes < 2 or args.trials < 1 or args.steady <= 0:
        print("--nodes must be >= 2, --trials >= 1, --steady > 0", file=sys.stderr)
        return 2
    if args.routes:
        if args.routes < args.nodes:
            print("--routes must be at least --nodes", file=sys.stderr)
            return 2
        figures = run_fleet(args.nodes, args.routes, seed=args.seed, profile_name=args.profile, loss=args.loss)
    else:
        figures = run(Scenario(nodes=args.nodes, loss=args.loss, seed=args.seed, profile=args.profile,
                               steady_s=args.steady, trials=args.trials, pause_s=args.pause,
                               delay_ms=args.delay_ms, jitter_ms=args.jitter_ms))
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        for key, value in figures.items():
            print(f"{key:26} {value}")
    return 0
