"""Fleet routing on real ``rsbroker serve`` processes (issue 13): how long until every node
routes to N new devices, and what the gossip costs meanwhile.

Run it standalone (about a minute per size on a busy 2-core machine)::

    python -m benchmarks.fleet_bench [--sizes 1000,5000,10000] [--calls 200] [--transport tcp]
                                     [--per-connection 1] [--json FILE]

Per size, a fresh 3-node cluster on 127.0.0.1; N devices (``tests.support.fleet``: raw
RSocket connections from this one process, each registering its own service
``device.<n>``) connect round-robin to the nodes, and:

* ``connected_s`` — from the first connect to the last SETUP sent;
* ``routed_s`` — from the first connect until every node's ``/api/v1/services?prefix=device.``
  counts N (polled every 0.1 s: the figure is rounded up to the poll);
* ``calls`` — request-response to ``--calls`` random devices, each from a node the device
  is not on: successes and p50/p99 latency (ms) through two brokers;
* ``gossip_bytes_per_node_s`` — gossip bytes sent per node per second between the first
  connect and ``routed_s`` (this node's counters in ``/api/v1/members``);
* ``cpu_s`` / ``rss_mib`` per node over the same window / at its end;
* ``admin_s`` — seconds each list endpoint of n1's admin API takes, default page.

The devices and this driver share the 2 cores with the brokers, so the times are upper
bounds of what the brokers need; sizes stay modest for that reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from typing import Any

from benchmarks.procstat import cpu_seconds, rss_bytes
from tests.support.admin import get_json
from tests.support.cluster import ClusterFactory
from tests.support.fleet import call_device, close_devices, connect_devices, wait_routes_everywhere
from tests.support.rawclient import RawClient

#: Longest wait for one size to spread before the run is reported as not converged.
SPREAD_TIMEOUT_S = 600.0


async def _gossip_bytes(admin: str, node_id: str) -> int:
    status, body = await get_json(admin, f"/api/v1/members?node={node_id}&limit=1")
    return int(body["members"][0]["gossip"].get("bytes_out", 0)) if status == 200 else 0


async def measure(size: int, calls: int, transport: str, per_connection: int) -> dict[str, Any]:
    with ClusterFactory() as factory:
        cluster = factory.start(3)
        await cluster.wait_converged()
        nodes = cluster.running
        pids = {n.node_id: n.pid for n in nodes}
        bytes0 = {n.node_id: await _gossip_bytes(str(n.admin), n.node_id) for n in nodes}
        cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
        t0 = time.perf_counter()
        devices = await connect_devices(nodes, range(size), transport, per_connection)
        connected_s = time.perf_counter() - t0
        converged = True
        try:
            await wait_routes_everywhere(nodes, size, SPREAD_TIMEOUT_S)
        except TimeoutError:
            converged = False
        routed_s = time.perf_counter() - t0
        cpu = {name: round(cpu_seconds(pid) - cpu0[name], 2) for name, pid in pids.items()}
        sent = {n.node_id: await _gossip_bytes(str(n.admin), n.node_id) - bytes0[n.node_id] for n in nodes}
        rss = {name: round(rss_bytes(pid) / 2**20, 1) for name, pid in pids.items()}
        admin_s = await _admin_times(str(nodes[0].admin))
        requesters = {}
        latencies: list[float] = []
        failures = 0
        try:
            for node in nodes:
                requesters[node.node_id] = client = await RawClient.tcp(node.tcp)
                await client.setup()
            rng = random.Random(size)
            for device in rng.sample(devices, min(calls, size)):
                caller = rng.choice([n for n in nodes if n is not device.node])
                start = time.perf_counter()
                try:
                    ok = await call_device(requesters[caller.node_id], device, timeout=10.0) == device.service.encode()
                except (AssertionError, TimeoutError):
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - start) * 1000)
                else:
                    failures += 1
        finally:
            for client in requesters.values():
                await client.close()
            await close_devices(devices)
        ordered = sorted(latencies)
        return {
            "devices": size, "per_connection": per_connection, "transport": transport, "converged": converged,
            "connected_s": round(connected_s, 2), "routed_s": round(routed_s, 2),
            "calls": {"ok": len(latencies), "failed": failures,
                      "p50_ms": round(statistics.median(ordered), 2) if ordered else None,
                      "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2) if ordered else None},
            "gossip_bytes_per_node_s": {k: round(v / routed_s) for k, v in sent.items()},
            "cpu_s": cpu, "rss_mib": rss, "admin_s": admin_s,
        }


async def _admin_times(admin: str) -> dict[str, float]:
    """Seconds each list endpoint takes on n1 with the whole fleet routed (default page)."""
    out = {}
    for path in ("/api/v1/services", "/api/v1/services?prefix=device.&node=n2", "/api/v1/connections",
                 "/api/v1/members", "/api/v1/topology"):
        start = time.perf_counter()
        status, _ = await get_json(admin, path)
        out[path] = round(time.perf_counter() - start, 3) if status == 200 else -1.0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000,10000", help="comma-separated device counts (default 1000,5000,10000)")
    parser.add_argument("--calls", type=int, default=200, help="calls to random devices on other nodes per size (default 200)")
    parser.add_argument("--transport", choices=("tcp", "ws"), default="tcp", help="device transport (default tcp)")
    parser.add_argument("--per-connection", type=int, default=1,
                        help="devices sharing one connection, like a gateway (default 1; 5 fits 50,000 devices "
                             "under a 20,000-file limit)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        row = asyncio.run(measure(size, args.calls, args.transport, args.per_connection))
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
