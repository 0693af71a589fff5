"""Idle WebSocket devices on one real ``rsbroker serve`` node (issue 13): memory, idle CPU,
connect rate, telemetry to a two-provider backend.

Run it standalone (the machine is shared: sizes are what it allows)::

    python -m benchmarks.devices_bench [--sizes 1000,10000,19000] [--rate 5000] [--idle-s 20]
                                       [--telemetry-s 20] [--jwt [--jwt-cache-size N]] [--json FILE]

Per size, a fresh node (default settings but ``--max-connections-per-source``: every device
comes from 127.0.0.1) and:

* ``rss_per_device_kib`` — (node RSS with N devices connected and idle − RSS before) / N,
  "connected" meaning SETUP accepted and service registered;
* ``idle_cpu_pct`` — the node's CPU over ``--idle-s`` seconds with N idle devices (30 s
  keepalives), as % of one core;
* ``connect`` — the simulator's summary (``rsbroker devices``: connected, connect rate,
  failures by reason); the simulator shares the cores with the node, so the rate is a
  lower bound of what the node accepts;
* ``peak_accept_rate_per_s`` — the node's connection count read every 0.25 s; the most it
  gained over any second of the storm (the average, ``connect.connect_rate_per_s``, includes
  the ramp and the tail);
* ``simulator_cpu_ms_per_device`` — the simulator's CPU (its workers) per connect;
* ``connect_cpu_ms_per_device`` — the node's CPU from the first connect to the last device
  seen connected (WebSocket upgrade, SETUP, registration, admin polls) per device, and
  ``accept_capacity_per_core_s`` = its inverse: the connect rate one core of the node
  sustains when the clients run elsewhere;
* ``auth`` — ``jwt`` with ``--jwt``: the node authenticates (``--jwt-keys``, a fresh Ed25519
  key) and every device and backend sends a bearer token valid for an hour, so idle CPU
  includes what credential expiry costs; else ``none``. All devices share one token (the
  simulator sends one ``--token``): with the verified-token cache on (the node's default; ``0``
  turns it off) the signature is verified once, and ``jwt_cache`` gives the node's hits and misses;
* ``telemetry`` (``--telemetry-s`` > 0) — two providers of ``telemetry`` count the
  fire-and-forgets each device sends once a second; ``lost`` = sent − received.

Fail-over (a node of three SIGKILLed under its devices) is ``benchmarks.failover_bench``.

The simulator is driven as a user would: ``rsbroker devices`` in a subprocess, stopped
with SIGINT after the readings, its JSON summary read from stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.procstat import cpu_seconds, process_tree, rss_bytes, total_cpu_seconds
from broker.auth.certs import write_keypair
from broker.auth.tokens import load_private_key, mint_token
from broker.client import Router, connect
from tests.support.admin import Admin, get_json, get_text
from tests.support.brokerproc import BrokerProcess, rsbroker_command

#: the device count stopped growing this long (s): the rest failed. SETUPs retried after a
#: refusal or a timeout on a busy 2-core machine can take 10 s and more to come back
STALL_S = 30.0
#: what the issue measured on this machine for comparison, KB per idle connection
REFERENCE_KB = {"aiohttp WebSocket server": 14.7, "nats-server": 48.6}


async def _connections(admin: Admin, others: int | None = None) -> int:
    """Device connections on the node: its connection count less ``others`` (cheap, for a lone
    node), else those registering a ``device.`` service (a scan of every connection)."""
    if others is not None:
        status, body = await get_json(admin, "/api/v1/node")
        return int(body.get("connections", 0)) - others if status == 200 else -1
    status, body = await get_json(admin, "/api/v1/connections?prefix=device.&limit=1")
    return int(body.get("total", -1)) if status == 200 else -1


async def _wait_connections(
    admin: Admin, count: int, timeout: float, others: int | None = None, samples: list[tuple[float, int]] | None = None
) -> tuple[float, int]:
    """Seconds until ``count`` devices are connected, or until their number stopped growing for
    STALL_S (some failed: the simulator's summary says why); and how many there are. Each reading
    (monotonic time, count) is appended to ``samples`` when given."""
    started = time.monotonic()
    last, since = -1, started
    while time.monotonic() - started < timeout:
        now_count = await _connections(admin, others)
        if samples is not None:
            samples.append((time.monotonic(), now_count))
        if now_count >= count:
            return time.monotonic() - started, now_count
        if now_count != last:
            last, since = now_count, time.monotonic()
        elif now_count > 0 and time.monotonic() - since > STALL_S:
            return since - started, now_count
        await asyncio.sleep(0.25)
    raise TimeoutError(f"{count} connections not reached in {timeout:g} s (have {await _connections(admin)})")


def peak_rate(samples: list[tuple[float, int]], window_s: float = 1.0) -> float | None:
    """The most connections the node gained over any ``window_s`` (or longer) between two
    readings, per second: its accept rate at the storm's height, without the ramp and tail."""
    best = None
    for i, (t0, c0) in enumerate(samples):
        for t1, c1 in samples[i + 1 :]:
            if t1 - t0 >= window_s:
                rate = (c1 - c0) / (t1 - t0)
                best = rate if best is None or rate > best else best
                break
    return round(best, 1) if best is not None else None


def _simulator(ws: str, count: int, rate: float, telemetry: bool, token: str | None = None) -> subprocess.Popen[str]:
    args = [*rsbroker_command(), "devices", "--nodes", f"ws://{ws}/rsocket", "--count", str(count), "--rate", str(rate),
            "--duration", "100000", "--keepalive", "30", "--lifetime", "120"]
    if token is not None:
        args += ["--token", token]
    if telemetry:
        args += ["--telemetry", "1/s", "--telemetry-route", "telemetry.ingest"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _stop_simulator(sim: subprocess.Popen[str]) -> dict[str, Any]:
    sim.send_signal(signal.SIGINT)
    out, _ = sim.communicate(timeout=120)
    return json.loads(out) if out.strip() else {}


def _counting_router(received: list[int], index: int) -> Router:
    """A telemetry backend: counts the fire-and-forgets it gets in ``received[index]``."""
    router = Router()

    @router.fire_and_forget("telemetry.ingest")
    async def ingest(data: bytes) -> None:
        received[index] += 1

    return router


async def measure(size: int, rate: float, idle_s: float, telemetry_s: float, jwt: bool = False,
                  jwt_cache_size: int | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as keys:
        auth: list[str] = []
        token = None
        if jwt:  # one token for all (role admin: no access rules to write), valid for an hour
            files = write_keypair("ed25519", keys)
            token = mint_token(load_private_key(files.key), sub="bench-device", roles=("admin",), ttl=3600)
            auth = ["--jwt-keys", str(files.cert)]
            if jwt_cache_size is not None:
                auth += ["--jwt-cache-size", str(jwt_cache_size)]
        return await _measure(size, rate, idle_s, telemetry_s, auth, token)


async def _measure(size: int, rate: float, idle_s: float, telemetry_s: float, auth: list[str],
                   token: str | None) -> dict[str, Any]:
    # every simulated device comes from 127.0.0.1: lift the per-source cap (10,000 by default)
    node = BrokerProcess([*rsbroker_command(), "serve", "--node-id", "d1", "--tcp", "127.0.0.1:0",
                          "--ws", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                          "--max-connections-per-source", "100000", *auth]).wait_ready()
    node.admin_token = token
    try:
        assert node.ws and node.admin and node.tcp
        await asyncio.sleep(1.0)
        base = rss_bytes(node.pid)
        received = [0, 0]
        routers = []
        for i in range(2):
            routers.append(_counting_router(received, i))
        result: dict[str, Any] = {"devices": size, "auth": "jwt" if token else "none"}
        async with connect(node.tcp, services=["telemetry"], router=routers[0], instance="backend-1", token=token), \
                connect(node.tcp, services=["telemetry"], router=routers[1], instance="backend-2", token=token):
            cpu_start = cpu_seconds(node.pid)
            sim = _simulator(node.ws, size, rate, telemetry=False, token=token)
            try:
                await asyncio.sleep(0.5)  # the simulator's workers are started
                sim_pids = process_tree(sim.pid)
                sim_cpu_start = total_cpu_seconds(sim_pids)
                # devices whose SETUP was accepted (registered): a token's check is part of the
                # connect, and the idle window must not start while SETUPs still queue
                samples: list[tuple[float, int]] = []
                seconds, connected = await _wait_connections(node, size, size / rate + 120, samples=samples)
                result["connected_after_s"], result["connected"] = round(seconds, 1), connected
                result["peak_accept_rate_per_s"] = peak_rate(samples)
                connect_cpu = cpu_seconds(node.pid) - cpu_start
                result["connect_cpu_ms_per_device"] = round(1000 * connect_cpu / connected, 3)
                # the load generator's side of each connect (its start-up, before the first, excluded)
                result["simulator_cpu_ms_per_device"] = round(1000 * (total_cpu_seconds(sim_pids) - sim_cpu_start) / connected, 3)
                # what one core of the node could accept if the clients were elsewhere
                result["accept_capacity_per_core_s"] = round(connected / connect_cpu) if connect_cpu else None
                await asyncio.sleep(2.0)  # let the last SETUPs' garbage go
                rss = rss_bytes(node.pid)
                cpu0, t0 = cpu_seconds(node.pid), time.monotonic()
                await asyncio.sleep(idle_s)
                cpu1, t1 = cpu_seconds(node.pid), time.monotonic()
                result["rss_mib"] = round(rss / 2**20, 1)
                result["rss_per_device_kib"] = round((rss - base) / connected / 1024, 2)
                result["idle_cpu_pct"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 1)
                if token:
                    result["jwt_cache"] = await _jwt_cache(node)
            finally:
                result["connect"] = _stop_simulator(sim)
            if telemetry_s > 0:
                result["telemetry"] = await _telemetry(node, size, rate, telemetry_s, received, token)
        return result
    finally:
        node.stop()


async def _jwt_cache(node: BrokerProcess) -> dict[str, float]:
    """The node's ``rsbroker_jwt_cache_total`` by result (the admin API's own token lookups included)."""
    status, text = await get_text(node, "/metrics")
    assert status == 200, text
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rsbroker_jwt_cache_total"
    }


async def _telemetry(node: BrokerProcess, size: int, rate: float, seconds: float, received: list[int],
                     token: str | None) -> dict[str, Any]:
    assert node.ws and node.admin
    while await _connections(node, others=2) > 0:  # the first fleet has left
        await asyncio.sleep(0.5)
    received[:] = [0, 0]
    sim = _simulator(node.ws, size, rate, telemetry=True, token=token)
    try:
        connected = (await _wait_connections(node, size, size / rate + 120, others=2))[1]
        await asyncio.sleep(seconds)
    finally:
        summary = _stop_simulator(sim)
    await asyncio.sleep(2.0)  # the last fire-and-forgets in flight
    sent = summary.get("telemetry", {}).get("sent", 0)
    return {"devices": connected, "seconds": seconds, "sent": sent, "received": sum(received), "per_provider": list(received),
            "lost": sent - sum(received), "per_s": round(sent / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="devices per run, comma-separated (default: 1000,10000)")
    parser.add_argument("--rate", type=float, default=5000.0, help="connects per second asked of the simulator (default: 5000)")
    parser.add_argument("--idle-s", type=float, default=20.0, help="idle CPU window, seconds (default: 20)")
    parser.add_argument("--telemetry-s", type=float, default=0.0, help="telemetry run length, seconds (default: none)")
    parser.add_argument("--jwt", action="store_true",
                        help="the node authenticates (--jwt-keys) and every device sends a bearer token (default: no auth)")
    parser.add_argument("--jwt-cache-size", type=int, default=None,
                        help="with --jwt: the node's --jwt-cache-size (default: the node's default; 0: every token verified)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        result = asyncio.run(measure(size, args.rate, args.idle_s, args.telemetry_s, args.jwt, args.jwt_cache_size))
        print(json.dumps(result), flush=True)
        results.append(result)
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "reference_kb_per_connection": REFERENCE_KB, "runs": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
