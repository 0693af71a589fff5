"""Load-aware routing across nodes (issue 16): one slow provider among four on two nodes,
round robin against power of two choices (``p2c``).

Run it standalone (about a minute on a busy 2-core machine)::

    python -m benchmarks.balance_bench [--requests 4000] [--inflight 32] [--slow-ms 200] [--json FILE]
    python -m benchmarks.balance_bench --pick-cost     # in-process: what one pick costs per policy

A fresh 2-node cluster on 127.0.0.1; providers ``a1``, ``a2`` on n1 and ``b1`` (slow: it
sleeps ``--slow-ms`` before answering), ``b2`` on n2, all ``broker.client`` providers of one
service answering their instance name. ``--inflight`` requester tasks, half on a connection
to n1 and half on one to n2, each send one request-response after the other until
``--requests`` are answered. The service's policy is set live through the config store
(``services/<service>``: ``{"policy": ..., "prefer_local": false}`` so that every node
uses the providers of both), first ``round_robin``, then ``p2c``. Per policy: requests/s,
p50/p99/max latency (ms) and each provider's share of the requests.

Why the slow provider's share falls under ``p2c``: a pick compares two providers drawn at
random by peak-EWMA round trip x (open streams + 1) (``broker.latency``). A slow provider's
round trip is its delay, so it wins a comparison only while the other has about
delay / (its round trip) times as many open streams; at a few in flight per provider that
never happens. What is left is the fast providers' own tail: providers, requesters and
both brokers share two cores, so at 32 in flight ``p2c``, which about doubles the
throughput, queues the fast answers too (their peak round trips reach ~10 ms), and a
provider only ten times slower than the median is not that much slower than their peaks.

Providers, requesters and both brokers share the 2 cores: absolute figures are upper bounds.

``--pick-cost`` times ``Registry.pick`` alone, in this process, for two providers (both with
a measured round trip) under each traffic policy (as the ``broker-1-*`` line-ups of the suite
configure them): the figure that a machine shared with other jobs moves least, to hold
against the broker's CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
import time
from typing import Any

from broker.client import Connection, Router, connect
from tests.support.admin import services, wait_for
from tests.support.cluster import Cluster, ClusterFactory, put_config

SERVICE = "bench.balance"
#: provider instance -> (node index, seconds it takes to answer)
PROVIDERS = {"a1": (0, 0.0), "a2": (0, 0.0), "b1": (1, None), "b2": (1, 0.0)}
SLOW = "b1"


def _router(instance: str, delay: float) -> Router:
    router = Router()

    @router.response(f"{SERVICE}.who")
    async def who(data: bytes) -> bytes:
        if delay:
            await asyncio.sleep(delay)
        return instance.encode()

    return router


@contextlib.asynccontextmanager
async def providers(cluster: Cluster, slow_s: float) -> Any:
    """The four providers, registered and listed by both nodes."""
    nodes = cluster.running
    async with contextlib.AsyncExitStack() as stack:
        for instance, (index, delay) in PROVIDERS.items():
            router = _router(instance, slow_s if delay is None else delay)
            await stack.enter_async_context(
                connect(str(nodes[index].tcp), services=[SERVICE], router=router, instance=instance)
            )
        await cluster.wait_serves(SERVICE, set(PROVIDERS))
        yield


async def set_policy(cluster: Cluster, policy: str) -> None:
    """Put the policy in the config store and wait until every node applies it."""
    await put_config(cluster.running[0], f"services/{SERVICE}", {"policy": policy, "prefer_local": False})

    async def applied() -> bool:
        for node in cluster.running:
            if (await services(str(node.admin))).get(SERVICE, {}).get("policy") != policy:
                return False
        return True

    await wait_for(applied, message=f"every node to apply policy {policy}")


async def run_load(cluster: Cluster, requests: int, inflight: int) -> dict[str, Any]:
    """``requests`` request-responses from ``inflight`` tasks spread over both nodes."""
    latencies: list[float] = []
    shares: collections.Counter[str] = collections.Counter()
    left = requests

    async def worker(client: Connection) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            start = time.perf_counter()
            who = await client.request_response(f"{SERVICE}.who", b"")
            latencies.append((time.perf_counter() - start) * 1000.0)
            shares[who.decode()] += 1

    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect(str(n.tcp))) for n in cluster.running]
        started = time.perf_counter()
        await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(inflight)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))], 2)

    return {
        "requests": len(ordered),
        "rps": round(len(ordered) / elapsed),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(ordered[-1], 2),
        "shares": {k: round(v / len(ordered), 4) for k, v in sorted(shares.items())},
        "slow_share": round(shares[SLOW] / len(ordered), 4),
    }


async def measure(requests: int, inflight: int, slow_ms: float, policies: tuple[str, ...] = ("round_robin", "p2c")) -> dict[str, Any]:
    with ClusterFactory() as factory:
        cluster = factory.start(2)
        await cluster.wait_converged()
        async with providers(cluster, slow_ms / 1000.0):
            out: dict[str, Any] = {"requests": requests, "inflight": inflight, "slow_ms": slow_ms}
            for policy in policies:
                await set_policy(cluster, policy)
                await run_load(cluster, max(inflight, requests // 20), inflight)  # warm-up
                out[policy] = await run_load(cluster, requests, inflight)
            if "round_robin" in out and "p2c" in out:
                out["p99_ratio"] = round(out["p2c"]["p99_ms"] / out["round_robin"]["p99_ms"], 3)
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
    parser.add_argument("--requests", type=int, default=4000, help="measured requests per policy (default 4000)")
    parser.add_argument("--inflight", type=int, default=32, help="requests in flight, over both nodes (default 32)")
    parser.add_argument("--slow-ms", type=float, default=200.0, help="how long the slow provider takes (default 200 ms)")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--pick-cost", action="store_true", help="only time one pick per policy, in this process (ns)")
    args = parser.parse_args(argv)
    result = pick_cost() if args.pick_cost else asyncio.run(measure(args.requests, args.inflight, args.slow_ms))
    print(json.dumps(result, indent=2), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
