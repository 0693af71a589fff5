"""Load-aware routing across nodes (issue 16): one slow provider among four on two nodes,
round robin against power of two choices (``p2c``).

Run it standalone (a few minutes on a busy 2-core machine)::

    python -m benchmarks.balance_bench [--requests 3000] [--inflight 32] [--slow-ms 200] [--rounds 3] [--json FILE]
    python -m benchmarks.balance_bench --pick-cost     # in-process: what one pick costs per policy

Every part is a process of its own, as in a deployment: a fresh 2-node cluster of
``rsbroker serve`` on 127.0.0.1; one provider process per node
(``benchmarks.servers.who_provider``), n1's hosting ``a1`` and ``a2``, n2's ``b1`` (slow: it
``asyncio.sleep``s ``--slow-ms`` before answering) and ``b2``, all ``broker.client`` providers
of one service answering their instance name; and per measurement a requester process
(``benchmarks.balance_load``): ``--inflight`` tasks, half on a connection to n1 and half on
one to n2, each sending one request-response after the other until ``--requests`` are
answered, after a warm-up. This process only starts them and sets the policy: live through
the config store (``services/<service>``: ``{"policy": ..., "prefer_local": false}`` so that
every node uses the providers of both).

``--rounds`` rounds, each measuring both policies one after the other, alternating which goes
first, so that both see the same neighbours on a shared machine. Per policy and round:
requests/s, p50/p99/p99.9/max latency (ms) and each provider's share; ``p99_ratio`` is the
median over rounds of p2c's p99 / round robin's, and per policy the pooled figures of all
rounds.

Why the slow provider's share falls under ``p2c``: a pick compares two providers drawn at
random by peak-EWMA round trip x (open streams + 1) (``broker.latency``). A slow provider's
round trip is its delay, so it wins a comparison only while the other has about
delay / (its round trip) times as many open streams.

The brokers, providers and requesters still share the machine's cores: absolute figures are
upper bounds.

``--pick-cost`` times ``Registry.pick`` alone, in this process, for two providers (both with
a measured round trip) under each traffic policy (as the ``broker-1-*`` line-ups of the suite
configure them): the figure that a machine shared with other jobs moves least, to hold
against the broker's CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.procs import Processes
from tests.support.admin import services, wait_for
from tests.support.cluster import Cluster, ClusterFactory, put_config

SERVICE = "bench.balance"
#: provider instances per node; ``None``: the slow one (``--slow-ms``)
PROVIDERS: dict[str, tuple[int, float | None]] = {"a1": (0, 0.0), "a2": (0, 0.0), "b1": (1, None), "b2": (1, 0.0)}
SLOW = "b1"
POLICIES = ("round_robin", "p2c")
#: how long one requester process may take (the slowest case: round robin, 200 ms, 8 in flight)
_LOAD_TIMEOUT_S = 900.0


def start_providers(procs: Processes, cluster: Cluster, slow_ms: float) -> None:
    """One provider process per node, hosting that node's providers of :data:`PROVIDERS`."""
    for index, node in enumerate(cluster.running):
        args = ["--broker", str(node.tcp), "--service", SERVICE]
        for name, (at, delay_s) in PROVIDERS.items():
            if at == index:
                args += ["--instance", f"{name}:{slow_ms if delay_s is None else delay_s * 1000.0:g}"]
        procs.python(f"providers-{node.node_id}", "benchmarks.servers.who_provider", *args)


async def set_policy(cluster: Cluster, policy: str) -> None:
    """Put the policy in the config store and wait until every node applies it."""
    await put_config(cluster.running[0], f"services/{SERVICE}", {"policy": policy, "prefer_local": False})

    async def applied() -> bool:
        for node in cluster.running:
            if (await services(str(node.admin))).get(SERVICE, {}).get("policy") != policy:
                return False
        return True

    await wait_for(applied, message=f"every node to apply policy {policy}")


def run_load(procs: Processes, cluster: Cluster, requests: int, inflight: int, name: str) -> dict[str, Any]:
    """One requester process's closed loop (``benchmarks.balance_load``): raw latencies and answers."""
    args = ["--service", SERVICE, "--requests", str(requests), "--inflight", str(inflight)]
    for node in cluster.running:
        args += ["--node", str(node.tcp)]
    started = procs.python(name, "benchmarks.balance_load", *args, ready=r"^result (\{.*\})$", timeout_s=_LOAD_TIMEOUT_S)
    procs.stop(started.process)
    result: dict[str, Any] = json.loads(started.match.group(1))
    return result


def summary(latencies: list[float], answers: list[str], seconds: float) -> dict[str, Any]:
    """Requests/s, percentiles (ms) and each provider's share of one or more closed loops."""
    ordered = sorted(latencies)
    shares = collections.Counter(answers)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2)

    return {
        "requests": len(ordered),
        "rps": round(len(ordered) / seconds),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": round(ordered[-1], 2),
        "shares": {k: round(v / len(ordered), 4) for k, v in sorted(shares.items())},
        "slow_share": round(shares[SLOW] / len(ordered), 4),
    }


async def measure(requests: int, inflight: int, slow_ms: float, rounds: int = 3) -> dict[str, Any]:
    """``rounds`` rounds of both :data:`POLICIES` (alternating which goes first) on a fresh cluster."""
    out: dict[str, Any] = {"requests": requests, "inflight": inflight, "slow_ms": slow_ms, "rounds": []}
    pooled: dict[str, list[dict[str, Any]]] = {policy: [] for policy in POLICIES}
    with tempfile.TemporaryDirectory(prefix="balance-bench-") as logs, ClusterFactory() as factory, Processes(Path(logs)) as procs:
        cluster = factory.start(2)
        await cluster.wait_converged()
        start_providers(procs, cluster, slow_ms)
        await cluster.wait_serves(SERVICE, set(PROVIDERS))
        for index in range(rounds):
            row: dict[str, Any] = {}
            for policy in POLICIES if index % 2 == 0 else POLICIES[::-1]:
                await set_policy(cluster, policy)
                raw = run_load(procs, cluster, requests, inflight, f"load-{index}-{policy}")
                pooled[policy].append(raw)
                row[policy] = summary(raw["latencies_ms"], raw["answers"], raw["seconds"])
            row["p99_ratio"] = round(row["p2c"]["p99_ms"] / row["round_robin"]["p99_ms"], 3)
            out["rounds"].append(row)
            progress = {policy: {k: row[policy][k] for k in ("p99_ms", "slow_share", "rps")} for policy in POLICIES}
            print(json.dumps({"round": index, "p99_ratio": row["p99_ratio"], **progress}), file=sys.stderr, flush=True)
    for policy, runs in pooled.items():
        out[policy] = summary(
            [x for raw in runs for x in raw["latencies_ms"]],
            [x for raw in runs for x in raw["answers"]],
            sum(raw["seconds"] for raw in runs),
        )
    out["p99_ratio"] = round(statistics.median(row["p99_ratio"] for row in out["rounds"]), 3)
    out["p99_ratio_pooled"] = round(out["p2c"]["p99_ms"] / out["round_robin"]["p99_ms"], 3)
    return out


def pick_cost(picks: int = 200_000) -> dict[str, float]:
    """Nanoseconds per ``Registry.pick`` for two local providers, by traffic policy (best of 5)."""
    import timeit

    from benchmarks.systems import POLICY_CONFIGS
    from broker import metadata as md
    from broker.registry import Registry, ServicePolicy
    from tests.support.provider_record import ProviderRecord

    metadata = md.route_metadata("svc.m")
    out = {}
    for system, policy in POLICY_CONFIGS.items():
        registry = Registry()
        registry.set_policy("svc", ServicePolicy.from_obj(policy))
        # both measured (``p2c``'s whole cost: two round trips decayed since their last sample)
        registry.add("svc", ProviderRecord("a", tags={"version": "1"}, rtt=0.002, rtt_at=0.5))
        registry.add("svc", ProviderRecord("b", tags={"version": "2"}, rtt=0.003, rtt_at=0.5))
        timer = timeit.Timer(lambda: registry.pick("svc", 1.0, False, metadata, md.COMPOSITE_MIME))
        out[system] = round(min(timer.repeat(5, picks)) / picks * 1e9)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.balance_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="measured requests per policy and round (default 3000)")
    parser.add_argument("--inflight", type=int, default=32, help="requests in flight, over both nodes (default 32)")
    parser.add_argument("--slow-ms", type=float, default=200.0, help="how long the slow provider takes (default 200 ms)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both policies, alternating which goes first (default 3)")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--pick-cost", action="store_true", help="only time one pick per policy, in this process (ns)")
    args = parser.parse_args(argv)
    result = pick_cost() if args.pick_cost else asyncio.run(measure(args.requests, args.inflight, args.slow_ms, args.rounds))
    print(json.dumps(result, indent=2), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
