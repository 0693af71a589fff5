"""What the cluster costs and how fast it heals, on real ``rsbroker serve`` processes.

Run it standalone (a few minutes on a busy 2-core machine)::

    python -m benchmarks.cluster_bench [--rounds 3] [--duration 5] [--inflight 64] [--payload 100]
                                       [--failover-rounds 3] [--fresh-rounds 5] [--json FILE]

**Throughput and latency** — request-response, ``--inflight`` requests outstanding on one
connection, ``--payload`` bytes, from the frame-speaking load generator
(``benchmarks.loadgen``, client ``frames``, its own process) to the frame-speaking responder
(``benchmarks.servers.responder provide``, its own process). Three rows, measured in
alternating order for ``--rounds`` rounds, the median of the rounds reported:

* ``one node`` — a lone broker (no ``--cluster``), load and responder on it;
* ``same-node`` — a 3-node cluster, load and responder both on n1 (the route stays local);
* ``cross-node`` — the same cluster, load on n3, responder on n1: one hop over a broker link.

The ratios to ``one node`` are the figures: what clustering costs a local route and what the
extra hop costs.

**Fail-over** — per round a fresh 3-node cluster, rsocket-py providers of one service on n1
and n2, eight requesters' worth of steady request-response load from n3, then SIGKILL of n2:

* ``detect_s`` — until both survivors list n2 as ``dead`` in ``GET /api/v1/members`` (the
  issue-5 check on real processes) and ``dropped_s`` until its provider left their
  ``/api/v1/services``;
* ``recover_s`` — from the kill to the end of the last failed request: from then on every
  request succeeded (the run waits for 200 successes in a row); ``failed`` is how many
  requests failed (those in flight at the crash).

**New service** — on the throughput cluster, a provider of a never-seen service connects to
n1 while a requester on each node keeps asking for it (each ask is REJECTED at once until
the node knows the service): ``fresh_s`` is from the provider's connect to the first answer
on the last node to get one.

Absolute numbers drift on a shared machine; the ratios of one run are what this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import frames
from benchmarks.procs import Processes
from tests.cluster.peers import SteadyLoad, ask_who, provider, requester
from tests.support.admin import service_instances, wait_for
from tests.support.brokerproc import BrokerProcess
from tests.support.cluster import Cluster, ClusterFactory

ROWS = ("one node", "same-node", "cross-node")
#: successes in a row after a crash that count as "back to 100%"
RECOVERED_STREAK = 200


# -- throughput -------------------------------------------------------------------------------


def _loadgen(target: str, args: argparse.Namespace, watch: dict[str, int]) -> dict[str, Any]:
    """One request-response cell in its own load-generator process; its summary line."""
    cell = {
        "scenario": "request-response",
        "inflight": args.inflight,
        "payload_bytes": args.payload,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
    }
    spec = {"client": "frames", "target": target, "cells": [cell], "watch": watch}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadgen", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,  # a failure is reported with the generator's stderr below
        timeout=args.duration + args.warmup + 120,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(lines[-1]))


async def _responder(procs: Processes, node: BrokerProcess, instance: str) -> None:
    await asyncio.to_thread(
        procs.python, f"responder-{instance}", "benchmarks.servers.responder", "provide", "--broker", str(node.tcp), "--instance", instance
    )
    await wait_for(lambda: service_instances(str(node.admin), frames.SERVICE), message=f"{instance} registered")


async def measure_throughput(
    args: argparse.Namespace, procs: Processes, solo: BrokerProcess, cluster: Cluster
) -> dict[str, dict[str, Any]]:
    await _responder(procs, solo, "solo")
    await _responder(procs, cluster["n1"], "n1")
    await cluster.wait_serves(frames.SERVICE, {"n1"})
    targets = {
        "one node": (str(solo.tcp), {"broker": solo.pid}),
        "same-node": (str(cluster["n1"].tcp), {"n1": cluster["n1"].pid}),
        "cross-node": (str(cluster["n3"].tcp), {"n1": cluster["n1"].pid, "n3": cluster["n3"].pid}),
    }
    samples: dict[str, list[dict[str, Any]]] = {row: [] for row in ROWS}
    for round_no in range(args.rounds):
        order = list(ROWS)
        random.shuffle(order)  # no row always runs right after another one's teardown
        for row in order:
            target, watch = targets[row]
            result = await asyncio.to_thread(_loadgen, target, args, watch)
            samples[row].append(result)
            print(f"  round {round_no + 1} {row:10} {result.get('ops_per_s', 0):>9.0f} req/s "
                  f"p50 {result.get('p50_ms')} ms p99 {result.get('p99_ms')} ms errors {result.get('errors')}", flush=True)
    out: dict[str, dict[str, Any]] = {}
    for row in ROWS:
        good = [s for s in samples[row] if "failed" not in s]
        out[row] = {
            "ops_per_s": statistics.median(s["ops_per_s"] for s in good) if good else None,
            "p50_ms": statistics.median(s["p50_ms"] for s in good) if good else None,
            "p99_ms": statistics.median(s["p99_ms"] for s in good) if good else None,
            "errors": sum(s.get("errors", 0) for s in samples[row]),
            "rounds": len(good),
        }
    return out


# -- a new service everywhere -----------------------------------------------------------------


async def _first_answer(node: BrokerProcess, service: str, ready: asyncio.Event) -> float:
    async with requester(node) as client:
        ready.set()
        while True:
            try:
                await ask_who(client, service)
                return time.monotonic()
            except Exception:  # noqa: BLE001 — REJECTED: this node does not know the service yet
                await asyncio.sleep(0.005)


async def measure_new_service(cluster: Cluster, rounds: int) -> list[float]:
    times = []
    for i in range(rounds):
        service = f"bench.fresh{i}"
        ready = [asyncio.Event() for _ in cluster]
        pollers = [asyncio.create_task(_first_answer(node, service, r)) for node, r in zip(cluster, ready)]
        await asyncio.gather(*(r.wait() for r in ready))
        started = time.monotonic()
        async with provider(cluster["n1"], service, f"fresh{i}"):
            answered = await asyncio.wait_for(asyncio.gather(*pollers), 60)
        times.append(max(answered) - started)
        print(f"  new service {service}: callable from every node after {times[-1] * 1000:.0f} ms", flush=True)
    return times


# -- fail-over --------------------------------------------------------------------------------


async def measure_failover_once(round_no: int) -> dict[str, Any]:
    service = f"bench.failover{round_no}"
    with ClusterFactory() as factory:
        cluster = await asyncio.to_thread(factory.start, 3)
        await cluster.wait_converged()
        async with provider(cluster["n1"], service, "survivor"), provider(cluster["n2"], service, "victim"):
            await cluster.wait_serves(service, {"survivor", "victim"})
            async with requester(cluster["n3"]) as client:
                load = SteadyLoad(client, service, workers=8, pause_s=0.0)
                async with load:
                    await wait_for(lambda: min(load.by_instance()[i] for i in ("survivor", "victim")) >= 20, message="both serving")
                    cluster["n2"].kill()
                    killed = time.monotonic()
                    await cluster.wait_member_state("n2", "dead")
                    detected = time.monotonic() - killed
                    await cluster.wait_serves(service, {"survivor"})
                    dropped = time.monotonic() - killed
                    await wait_for(lambda: load.ok_streak() >= RECOVERED_STREAK, timeout=60, message="recovery")
                failures = load.failures()
    recovered = max((f.ended for f in failures), default=killed) - killed
    result = {
        "detect_s": round(detected, 3),
        "dropped_s": round(dropped, 3),
        "recover_s": round(max(0.0, recovered), 3),
        "failed": len(failures),
        "hung": sum(f.result == "hung" for f in failures),
        "requests": len(load.outcomes),
    }
    print(f"  fail-over round {round_no + 1}: {result}", flush=True)
    return result


# -- the run ----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "json"}}
    # Processes (the responders) exits first, so no responder outlives its broker's drain.
    with (
        tempfile.TemporaryDirectory(prefix="rsbroker-cluster-bench-") as logs,
        ClusterFactory() as factory,
        Processes(Path(logs)) as procs,
    ):
        print("starting a lone node and a 3-node cluster", flush=True)
        solo = await asyncio.to_thread(factory.brokers.start, node_id="solo")
        cluster = await asyncio.to_thread(factory.start, 3)
        await cluster.wait_converged()
        print(f"throughput: request-response, {args.inflight} in flight, {args.payload} B", flush=True)
        result["throughput"] = await measure_throughput(args, procs, solo, cluster)
        fresh = await measure_new_service(cluster, args.fresh_rounds)
        result["new_service_s"] = {"median": statistics.median(fresh), "max": max(fresh), "samples": fresh}
    failover = [await measure_failover_once(i) for i in range(args.failover_rounds)]
    result["failover"] = {
        key: {"median": statistics.median(r[key] for r in failover), "max": max(r[key] for r in failover)}
        for key in ("detect_s", "dropped_s", "recover_s", "failed", "hung")
    }
    result["failover"]["rounds"] = failover
    return result


def _ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.2f}"


def render(result: dict[str, Any]) -> str:
    rows = result["throughput"]
    base = rows["one node"]
    lines = [f"{'route':12} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'tput ratio':>11} {'p50 ratio':>10} {'p99 ratio':>10}"]
    for name in ROWS:
        row = rows[name]
        ratios = [_ratio(row[key], base[key]) for key in ("ops_per_s", "p50_ms", "p99_ms")]
        lines.append(
            f"{name:12} {row['ops_per_s'] or 0:>10.0f} {row['p50_ms'] or 0:>8.2f} {row['p99_ms'] or 0:>8.2f} "
            f"{ratios[0]:>11} {ratios[1]:>10} {ratios[2]:>10}"
        )
    fresh = result["new_service_s"]
    lines.append(f"\nnew service callable from every node: median {fresh['median'] * 1000:.0f} ms, max {fresh['max'] * 1000:.0f} ms")
    fo = result["failover"]
    lines.append(
        f"SIGKILL of a provider's node ({len(fo['rounds'])} rounds, median / max):\n"
        f"  every survivor says dead      {fo['detect_s']['median']:.2f} / {fo['detect_s']['max']:.2f} s\n"
        f"  its services dropped          {fo['dropped_s']['median']:.2f} / {fo['dropped_s']['max']:.2f} s\n"
        f"  back to 100% success          {fo['recover_s']['median']:.2f} / {fo['recover_s']['max']:.2f} s\n"
        f"  failed requests (in flight)   {fo['failed']['median']} / {fo['failed']['max']}, hung: {fo['hung']['max']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per row (median taken)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per throughput cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per throughput cell")
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--payload", type=int, default=100, help="request and response data bytes")
    parser.add_argument("--failover-rounds", type=int, default=3)
    parser.add_argument("--fresh-rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    # The provider connected to the node a fail-over round kills loses its connection on
    # purpose; rsocket-py logs that with a traceback that would bury the figures.
    logging.getLogger("pyrsocket").setLevel(logging.CRITICAL)
    result = asyncio.run(run(args))
    print()
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
