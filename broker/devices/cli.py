"""``rsbroker devices``: a fleet of simulated devices against a cluster, and what it measured.

::

    rsbroker devices --nodes ws://127.0.0.1:7001/rsocket,ws://127.0.0.1:7101/rsocket \\
        --count 10000 --rate 2000 --register 'device.{id}' --telemetry 1/s --calls 200

The devices are spread over worker processes (each holds at most ``--per-process``
connections, under the usual 20,000 open-file limit); this process draws a progress bar on
stderr when it is a terminal, makes the ``--calls`` request-responses to random devices
(``device.<id>.ping``) through the cluster, holds the fleet ``--duration`` seconds, then
prints one JSON summary on stdout:

``devices, connected, failed, connect_s, connect_rate_per_s, reconnects, failures`` (failed
connection attempts by reason, e.g. ``setup_rate_limited``), ``telemetry`` (sent, skipped
while reconnecting), ``calls`` (sent, ok, failed by reason, p50_ms, p99_ms) and, when devices
lost their node and came back, ``failover``: how many moved, when the last was back after the
first loss, and p50/p90/p99/max of each phase of the way back (loss seen, backoff, loss to the
attempt that worked, TCP connect, upgrade, SETUP answered).
The exit code is 0 when every device connected and every call succeeded.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import multiprocessing
import queue as queue_module
import random
import signal
import sys
import threading
import time
from typing import Any, TextIO

from broker.client import ClusterClient, RejectedError, RSocketError
from broker.client.transport import parse_address
from broker.devices.fleet import FleetSpec, Move, worker_main

#: connections per worker process by default: well under the 20,000 open-file limit, and
#: small enough that several processes share the connect work on a multi-core machine
DEFAULT_PER_PROCESS = 5000
#: request-responses to devices in flight at once
CALL_CONCURRENCY = 32


def _rate(text: str) -> float:
    """``1/s``, ``0.5/s``, ``10/min`` or a bare number per second → per second."""
    number, _, unit = text.partition("/")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a rate like 1/s or 10/min") from None
    per = {"": 1.0, "s": 1.0, "min": 60.0, "h": 3600.0}.get(unit.strip())
    if per is None or value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a rate like 1/s or 10/min")
    return value / per


def _nodes(text: str) -> list[str]:
    nodes = [n.strip() for n in text.split(",") if n.strip()]
    for node in nodes:
        try:
            parse_address(node)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not nodes:
        raise argparse.ArgumentTypeError("give at least one node address")
    return nodes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsbroker devices", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--nodes", type=_nodes, required=True, help="comma-separated node addresses (ws://HOST:PORT/rsocket, wss://..., or HOST:PORT for TCP)")
    add("--count", type=int, default=1000, help="devices to simulate (default: 1000)")
    add("--rate", type=float, default=1000.0, help="connections started per second, all processes together (default: 1000)")
    add("--register", default="device.{id}", help="service each device registers; {id} is its number (default: device.{id})")
    add("--first-id", type=int, default=0, help="number of the first device (default: 0)")
    add("--telemetry", type=_rate, default=0.0, help="fire-and-forget per device, e.g. 1/s (default: none)")
    add("--telemetry-route", default="telemetry.ingest", help="route the telemetry goes to (default: telemetry.ingest)")
    add("--calls", type=int, default=0, help="request-responses to random devices once connected (default: 0)")
    add("--route-wait", type=float, default=30.0, help="seconds a call may wait for its device's route to reach the node (default: 30)")
    add("--duration", type=float, default=0.0, help="seconds to hold the fleet after connecting and calling (default: 0)")
    add("--keepalive", type=float, default=30.0, help="device keepalive interval, seconds (default: 30)")
    add("--lifetime", type=float, default=90.0, help="device max lifetime, seconds (default: 90)")
    add("--connect-timeout", type=float, default=60.0, help="seconds a device may take to connect (default: 60)")
    add("--backoff-base", type=float, default=0.1,
        help="first reconnect wait after losing a node, drawn from [0, this] seconds, doubling per failed "
             "attempt up to --backoff-max (default: 0.1)")
    add("--backoff-max", type=float, default=2.0, help="longest wait between reconnect attempts, seconds (default: 2)")
    add("--per-process", type=int, default=DEFAULT_PER_PROCESS, help=f"devices per worker process (default: {DEFAULT_PER_PROCESS})")
    add("--token", help="bearer JWT every device sends in its SETUP")
    add("--origin", help="Origin header of the WebSocket upgrade (as a browser page would send)")
    return parser


class Progress:
    """A one-line bar on stderr when it is a terminal; nothing otherwise (logs stay clean)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty()
        self.started = time.monotonic()

    def show(self, connected: int, failed: int) -> None:
        if not self.enabled:
            return
        done = connected + failed
        width = 30
        filled = int(width * done / self.total) if self.total else width
        rate = connected / max(time.monotonic() - self.started, 1e-6)
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {connected}/{self.total} connected"
            f"{f', {failed} failed' if failed else ''}, {rate:,.0f}/s "
        )
        self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)


async def call_devices(
    nodes: list[str], services: list[str], calls: int, token: str | None, route_wait_s: float
) -> dict[str, Any]:
    """``calls`` request-responses to ``<service>.ping`` of random devices, through the cluster.

    A call refused with ``no provider`` is tried again for up to ``route_wait_s``: right after
    a storm, routes to devices on other nodes may still be spreading (that wait is counted in
    ``no_route_retries``, not in the latencies).
    """
    no_route_retries = [0]
    latencies: list[float] = []
    failures: collections.Counter[str] = collections.Counter()
    targets = [random.choice(services) for _ in range(calls)]

    async with asyncio.timeout(max(60.0, calls / 10)):
        client = ClusterClient(nodes, token=token, keepalive_s=5.0, max_lifetime_s=30.0)
        await client.start()
        try:
            gate = asyncio.Semaphore(CALL_CONCURRENCY)

            async def one(service: str) -> None:
                payload = service.encode()
                async with gate:
                    route_deadline = time.monotonic() + route_wait_s
                    while True:
                        started = time.perf_counter()
                        try:
                            reply = await asyncio.wait_for(client.request_response(f"{service}.ping", payload), 10.0)
                        except RejectedError as exc:
                            # a device that just connected to another node: its route is on its way
                            if exc.message.startswith("no provider for service") and time.monotonic() < route_deadline:
                                no_route_retries[0] += 1
                                await asyncio.sleep(0.2)
                                continue
                            failures[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1
                            return
                        except (RSocketError, asyncio.TimeoutError) as exc:
                            failures[f"{type(exc).__name__}: {str(exc)[:60]}" if isinstance(exc, RSocketError) else "timeout"] += 1
                            return
                        break
                    if reply != payload:
                        failures["wrong_reply"] += 1
                        return
                    latencies.append((time.perf_counter() - started) * 1000)

            await asyncio.gather(*(one(s) for s in targets))
        finally:
            await client.close()
    return {
        "sent": calls,
        "ok": len(latencies),
        "failed": dict(failures),
        "no_route_retries": no_route_retries[0],
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the workers, follow them, call, hold, stop; the summary."""
    ids = list(range(args.first_id, args.first_id + args.count))
    processes = max(1, math.ceil(args.count / max(1, args.per_process)))
    headers = {"Origin": args.origin} if args.origin else {}
    context = multiprocessing.get_context("spawn")
    reports: Any = context.Queue()
    stop = context.Event()
    workers = []
    for index in range(processes):
        spec = FleetSpec(
            index=index, nodes=args.nodes, ids=ids[index::processes], rate=args.rate / processes,
            register=args.register, telemetry_per_s=args.telemetry, telemetry_route=args.telemetry_route,
            keepalive_s=args.keepalive, lifetime_s=args.lifetime, connect_timeout_s=args.connect_timeout,
            backoff_max_s=args.backoff_max, backoff_base_s=args.backoff_base, token=args.token, headers=headers,
        )  # fmt: skip
        worker = context.Process(target=worker_main, args=(spec, reports, stop), name=f"rsbroker-devices-{index}", daemon=True)
        worker.start()
        workers.append(worker)
    progress = Progress(args.count)
    connected: dict[int, tuple[int, int]] = {}
    done: dict[int, dict[str, Any]] = {}

    def drain(timeout: float) -> None:
        try:
            kind, index, *rest = reports.get(timeout=timeout)
        except queue_module.Empty:
            return
        if kind == "progress":
            connected[index] = (rest[0], rest[1])
        else:
            done[index] = rest[0]
        progress.show(sum(c for c, _ in connected.values()), sum(f for _, f in connected.values()))

    # SIGINT (Ctrl-C, or a harness ending the run) stops the fleet and still prints the summary;
    # a flag, not KeyboardInterrupt, so that no queue read is cut in half
    interrupted = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    deadline = time.monotonic() + args.count / max(args.rate, 1e-6) + args.connect_timeout + 30
    calls: dict[str, Any] | None = None
    try:
        while sum(c + f for c, f in connected.values()) < args.count and time.monotonic() < deadline:
            if interrupted.is_set() or not any(w.is_alive() for w in workers):
                break
            drain(0.25)
        progress.end()
        if args.calls and not interrupted.is_set():
            services = [args.register.format(id=i) for i in ids]
            calls = asyncio.run(call_devices(args.nodes, services, args.calls, args.token, args.route_wait))
        hold_until = time.monotonic() + args.duration
        while time.monotonic() < hold_until and not interrupted.is_set():
            drain(0.25)
    finally:
        signal.signal(signal.SIGINT, previous)
        stop.set()
        end = time.monotonic() + 60
        while len(done) < len([w for w in workers if w.exitcode is None or w.exitcode == 0]) and time.monotonic() < end:
            drain(0.25)
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    return summarize(args, processes, list(done.values()), calls)


def summarize(args: argparse.Namespace, processes: int, stats: list[dict[str, Any]], calls: dict[str, Any] | None) -> dict[str, Any]:
    failures: collections.Counter[str] = collections.Counter()
    for s in stats:
        failures.update(s["failures"])
    connected = sum(s["connected"] for s in stats)
    firsts = [s["first_connect_at"] for s in stats if s["first_connect_at"]]
    lasts = [s["last_connected_at"] for s in stats if s["last_connected_at"]]
    span = max(lasts) - min(firsts) if firsts and lasts else None
    summary: dict[str, Any] = {
        "devices": args.count,
        "processes": processes,
        "workers_reported": len(stats),
        "connected": connected,
        "failed": sum(s["failed"] for s in stats),
        "connect_s": round(span, 3) if span is not None else None,
        "connect_rate_per_s": round(connected / span, 1) if span else None,
        "reconnects": sum(s["reconnects"] for s in stats),
        "failures": dict(failures),
        "telemetry": {
            "sent": sum(s["telemetry_sent"] for s in stats),
            "skipped": sum(s["telemetry_skipped"] for s in stats),
        },
    }
    moves = [Move(*m) for s in stats for m in s.get("moves", ())]
    if moves:
        summary["failover"] = failover_timeline(moves)
    if calls is not None:
        summary["calls"] = calls
    return summary


def failover_timeline(moves: list[Move]) -> dict[str, Any]:
    """Where the devices' way back to the cluster went, after their node was lost: when the
    last was back (seconds after the first loss) and p50/p90/p99/max of each phase."""
    first = min(m.lost for m in moves)

    def spread(values: list[float]) -> dict[str, float | None]:
        return {"p50": _percentile(values, 0.5), "p90": _percentile(values, 0.9), "p99": _percentile(values, 0.99),
                "max": round(max(values), 3)}

    return {
        "moved": len(moves),
        "first_loss_at": first,
        "last_back_at": max(m.back for m in moves),
        "back_after_first_loss_s": spread([m.back - first for m in moves]),
        "phases_s": {
            "loss_seen_after_first": spread([m.lost - first for m in moves]),
            "backoff": spread([m.backoff_s for m in moves]),
            "loss_to_last_attempt": spread([m.started - m.lost for m in moves]),
            "tcp_connect": spread([m.connected - m.started for m in moves]),
            "upgrade": spread([m.upgraded - m.connected for m in moves]),
            "setup": spread([m.back - m.upgraded for m in moves]),
        },
    }


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.count <= 0 or args.rate <= 0 or args.per_process <= 0:
        build_parser().error("--count, --rate and --per-process must be positive")
    summary = run(args)
    print(json.dumps(summary, indent=2), flush=True)
    calls_ok = "calls" not in summary or summary["calls"]["ok"] == summary["calls"]["sent"]
    return 0 if summary["connected"] == args.count and calls_ok and summary["workers_reported"] == summary["processes"] else 1


__all__ = ["main", "run"]
