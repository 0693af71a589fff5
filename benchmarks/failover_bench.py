"""Fail-over of a device fleet (issue 13): N WebSocket devices on one node of three, that node
SIGKILLed, until every device is registered on a survivor.

Run it standalone (the machine is shared; each run starts a fresh cluster)::

    python -m benchmarks.failover_bench [--devices 10000] [--runs 3] [--rate 3000] [--json FILE]

Per run:

* ``all_back_s`` — from the SIGKILL to the last device's SETUP answered on a survivor (the
  simulator's per-device timestamps; same machine, same clock), and ``back_s``, its
  p50/p90/p99/max over the devices;
* ``phases_s`` — where the way back went, per device: when it saw the loss, the backoff it
  drew, loss → the attempt that succeeded (backoff plus failed attempts), TCP connect,
  WebSocket upgrade, SETUP until answered (``rsbroker devices``' ``failover`` summary);
* ``per_survivor`` — devices on n2 and n3 at the end (admin API), ``failures`` — failed
  attempts by reason;
* ``cpu_s`` — CPU seconds of each survivor and of the simulator (its worker processes
  together) from the kill until all were back;
* ``listen_drops`` — the kernel's ``ListenDrops`` counter over the same time: SYNs dropped
  because an accept queue was full, machine-wide (other work on the machine counts too).

The devices learn n2 and n3 from topology pushes and reconnect with the simulator's
defaults: full-jitter backoff from ``--backoff-base`` (a storm is spread, never a herd).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from benchmarks.procstat import process_tree, total_cpu_seconds
from tests.support.admin import get_json
from tests.support.brokerproc import rsbroker_command
from tests.support.cluster import ClusterFactory


def listen_drops() -> int:
    """The kernel's TcpExt ListenDrops counter (machine-wide), from /proc/net/netstat."""
    with open("/proc/net/netstat") as f:
        lines = [line.split() for line in f if line.startswith("TcpExt:")]
    names, values = lines[0], lines[1]
    return int(values[names.index("ListenDrops")])


async def _devices_on(admin: str) -> int:
    """Connections registering a ``device.`` service on a node (one admin page, counts first)."""
    status, body = await get_json(admin, "/api/v1/connections?prefix=device.&limit=1")
    return int(body.get("total", -1)) if status == 200 else -1


async def _node_connections(admin: str) -> int:
    """Every connection of a node, links too: cheap enough to poll during the storm."""
    status, body = await get_json(admin, "/api/v1/node")
    return int(body.get("connections", 0)) if status == 200 else 0


async def _wait(predicate: Any, timeout: float, every: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(every)
    return False


async def one_run(devices: int, rate: float, backoff_base: float | None) -> dict[str, Any]:
    with ClusterFactory() as factory:
        cluster = factory.start(3, "--max-connections-per-source", "100000")
        await cluster.wait_converged()
        n1, n2, n3 = cluster["n1"], cluster["n2"], cluster["n3"]
        assert n1.ws and n1.admin and n2.admin and n3.admin
        args = [*rsbroker_command(), "devices", "--nodes", f"ws://{n1.ws}/rsocket", "--count", str(devices),
                "--rate", str(rate), "--duration", "100000", "--keepalive", "30", "--lifetime", "120"]
        if backoff_base is not None:
            args += ["--backoff-base", str(backoff_base)]
        sim = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            admin1 = n1.admin
            if not await _wait(lambda: _devices_on_at_least(admin1, devices), devices / rate + 120, 0.5):
                raise RuntimeError(f"only {await _devices_on(n1.admin)} of {devices} devices reached n1")
            await asyncio.sleep(2.0)  # the last topology pushes and route gossip settle
            pids = {"n2": [n2.pid], "n3": [n3.pid], "simulator": process_tree(sim.pid)}
            cpu0 = {name: total_cpu_seconds(p) for name, p in pids.items()}
            drops0 = listen_drops()
            n1.kill()
            killed_at = time.time()

            admin2, admin3 = n2.admin, n3.admin

            async def all_moved() -> bool:
                if await _node_connections(admin2) + await _node_connections(admin3) < devices:
                    return False  # cheap check first; the exact count scans every connection
                return await _devices_on(admin2) + await _devices_on(admin3) >= devices

            moved = await _wait(all_moved, 120.0)
            cpu = {name: round(total_cpu_seconds(p) - cpu0[name], 2) for name, p in pids.items()}
            drops = listen_drops() - drops0
            split = [await _devices_on(admin2), await _devices_on(admin3)]
        finally:
            sim.send_signal(signal.SIGINT)
            out, _ = sim.communicate(timeout=120)
    summary = json.loads(out) if out.strip() else {}
    timeline = summary.get("failover", {})
    result: dict[str, Any] = {"devices": devices, "all_moved": moved, "per_survivor": split, "cpu_s": cpu,
                              "listen_drops": drops, "failures": summary.get("failures")}
    if timeline:
        offset = timeline["first_loss_at"] - killed_at  # the kill → the first device saw it
        result["all_back_s"] = round(timeline["last_back_at"] - killed_at, 2)
        result["back_s"] = {k: round(v + offset, 2) for k, v in timeline["back_after_first_loss_s"].items()}
        result["phases_s"] = timeline["phases_s"]
        result["moved_devices"] = timeline["moved"]
    return result


async def _devices_on_at_least(admin: str, count: int) -> bool:
    return await _devices_on(admin) >= count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10000, help="devices on the node that is killed (default: 10000)")
    parser.add_argument("--runs", type=int, default=3, help="fresh clusters, one kill each (default: 3)")
    parser.add_argument("--rate", type=float, default=3000.0, help="connects per second while the fleet is built (default: 3000)")
    parser.add_argument("--backoff-base", type=float, help="the simulator's --backoff-base (default: its own)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    runs = []
    for _ in range(args.runs):
        result = asyncio.run(one_run(args.devices, args.rate, args.backoff_base))
        print(json.dumps(result), flush=True)
        runs.append(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}, "runs": runs}, f, indent=2)
    return 0 if all(r["all_moved"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
