"""What one hostile client costs everyone else: latency of a normal client and the broker's memory.

Run it standalone (about a minute on a busy 2-core machine)::

    python -m benchmarks.attack_bench [--window 5] [--attacks setup_entries,...] [--json FILE]

One ``rsbroker serve`` with default settings and a raw echo provider. For each attack a
normal client does request-responses one after another through the broker while an
attacker, in its own process (so its work does not share the client's event loop), runs
the attack for ``--window`` seconds. Reported per attack: the normal client's request
count, median, p99 and worst latency during the window (goal: worst < 100 ms), and the
broker's resident memory (``VmRSS`` of /proc/PID/status) before, at its peak during the
window, and its growth. A ``baseline`` row runs the same window with no attacker.

The attacks (issue 11 §5), each as measured on the code before the limits existed:

* ``setup_entries`` — SETUPs of 4 MiB of empty composite entries, one connection after another;
* ``setup_entries_64k`` — the same inside 64 KiB (the default SETUP frame limit): 16k entries;
* ``fragments`` — request metadata split over 160k one-byte fragments, on one connection;
* ``unfinished`` — 200 first fragments of 256 KiB that are never finished, on one connection;
* ``pre_setup_partial`` — 20 connections each sending 15 MiB of a frame before any SETUP.

Absolute latencies drift on a shared machine; compare rows of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from benchmarks.security_bench import FrameConnection, open_frames, setup_frame, start_provider
from benchmarks.stats import percentile
from broker import frames as fr
from broker import metadata as md
from broker.frames import FrameType
from tests.support.brokerproc import BrokerFactory, BrokerProcess, split_hostport

ROUTE = "bench.echo.call"
GOAL_WORST_MS = 100.0
MIB = 1 << 20


# -- the attacks (run in a child process) -------------------------------------------------------


async def _connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = split_hostport(address)
    return await asyncio.open_connection(host, port, limit=1 << 16)


async def _send_and_wait(address: str, data: bytes) -> None:
    """Open a connection, send ``data``, read until the broker closes it (or 2 s pass)."""
    reader, writer = await _connect(address)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(2):
            while await reader.read(65536):
                pass
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()


def _empty_entries(total: int) -> bytes:
    """``total`` bytes of empty composite entries: well-known ``text/plain`` (0xa1), length 0."""
    return md.composite_entry("text/plain", b"") * (total // 4)


async def setup_entries(address: str, until: float, size: int = 4 * MIB) -> None:
    frame = fr.with_length_prefix(fr.setup_frame(metadata=_empty_entries(size - 64)))
    while time.monotonic() < until:
        await _send_and_wait(address, frame)


async def setup_entries_64k(address: str, until: float) -> None:
    await setup_entries(address, until, 64 * 1024)


async def _setup_requester(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _connect(address)
    writer.write(fr.with_length_prefix(fr.setup_frame(keepalive_ms=30_000, max_lifetime_ms=120_000)))
    asyncio.get_running_loop().create_task(_drain(reader))
    return reader, writer


async def _drain(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def fragments(address: str, until: float, count: int = 160_000) -> None:
    _, writer = await _setup_requester(address)
    sid = 1
    first = fr.with_length_prefix(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, b"\x7e", b"", follows=True))
    more = fr.with_length_prefix(fr.payload_frame(sid, b"", b"\x00", next_=False, follows=True))
    writer.write(first)
    for _ in range(count // 10_000):
        writer.write(more * 10_000)
        await writer.drain()
    writer.write(fr.with_length_prefix(fr.payload_frame(sid, b"x", b"", follows=False)))
    await writer.drain()
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    writer.close()


async def unfinished(address: str, until: float, count: int = 200, size: int = 256 * 1024) -> None:
    _, writer = await _setup_requester(address)
    meta = md.route_metadata(ROUTE) + md.composite_entry("text/plain", b"z" * size)
    for i in range(count):
        writer.write(fr.with_length_prefix(fr.request_frame(FrameType.REQUEST_RESPONSE, 2 * i + 1, meta, b"", follows=True)))
        await writer.drain()
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    writer.close()


async def pre_setup_partial(address: str, until: float, connections: int = 20, size: int = 15 * MIB) -> None:
    chunk = b"\x00" * MIB
    writers = []
    for _ in range(connections):
        try:
            _, writer = await _connect(address)
            writer.write(size.to_bytes(3, "big") + chunk * (size // MIB))
            writers.append(writer)
        except ConnectionError:
            pass
    for writer in writers:
        try:
            await asyncio.wait_for(writer.drain(), timeout=max(0.1, until - time.monotonic()))
        except (ConnectionError, TimeoutError):
            pass
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    for writer in writers:
        writer.close()


ATTACKS: dict[str, Callable[[str, float], Awaitable[None]]] = {
    "setup_entries": setup_entries,
    "setup_entries_64k": setup_entries_64k,
    "fragments": fragments,
    "unfinished": unfinished,
    "pre_setup_partial": pre_setup_partial,
}


def _attack_process(name: str, address: str, window: float) -> None:
    until = time.monotonic() + window
    try:
        asyncio.run(asyncio.wait_for(ATTACKS[name](address, until), timeout=window + 10))
    except (ConnectionError, TimeoutError):
        pass


# -- the normal client and the measurements -----------------------------------------------------


def vm_rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes, from the ``VmRSS`` line of /proc/PID/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class NormalClient:
    """One requester doing request-responses back to back; records each latency."""

    def __init__(self) -> None:
        self.connection: FrameConnection | None = None
        self.reply: asyncio.Future[None] | None = None
        self.sid = 1

    def _on_frames(self, connection: FrameConnection, frames: list[bytes]) -> None:
        for frame in frames:
            if fr.header(frame)[1] in (FrameType.PAYLOAD, FrameType.ERROR) and self.reply and not self.reply.done():
                self.reply.set_result(None)

    async def open(self, node: BrokerProcess) -> None:
        self.connection = await open_frames(node.tcp or "", None, self._on_frames)
        self.connection.send([setup_frame()])

    async def run(self, seconds: float) -> list[float]:
        assert self.connection is not None
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.reply = loop.create_future()
            started = time.perf_counter()
            self.connection.send([fr.request_frame(FrameType.REQUEST_RESPONSE, self.sid, md.route_metadata(ROUTE), b"ping")])
            self.sid += 2
            await asyncio.wait_for(self.reply, timeout=30)
            latencies.append(time.perf_counter() - started)
        return latencies


async def _rss_peak(pid: int, stop: asyncio.Event) -> int:
    peak = vm_rss(pid)
    while not stop.is_set():
        peak = max(peak, vm_rss(pid))
        await asyncio.sleep(0.05)
    return max(peak, vm_rss(pid))


async def measure(node: BrokerProcess, client: NormalClient, name: str, window: float) -> dict[str, object]:
    """One row: the client's latencies and the broker's RSS while ``name`` runs (or nothing, for baseline)."""
    before = vm_rss(node.pid)
    stop = asyncio.Event()
    peak_task = asyncio.create_task(_rss_peak(node.pid, stop))
    attacker = None
    if name != "baseline":
        attacker = multiprocessing.get_context("spawn").Process(target=_attack_process, args=(name, node.tcp, window))
        attacker.start()
    latencies = sorted(await client.run(window))
    if attacker is not None:
        await asyncio.to_thread(attacker.join, 30)
        if attacker.is_alive():
            attacker.kill()
    stop.set()
    peak = await peak_task
    ms = [x * 1000 for x in latencies]
    return {
        "attack": name,
        "requests": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(percentile(ms, 99) or 0.0, 2),
        "worst_ms": round(ms[-1], 2),
        "rss_before_mib": round(before / MIB, 1),
        "rss_peak_mib": round(peak / MIB, 1),
        "rss_growth_mib": round((peak - before) / MIB, 1),
        "alive": node.running,
    }


async def run(attacks: list[str], window: float) -> list[dict[str, object]]:
    factory = BrokerFactory()
    try:
        node = await asyncio.to_thread(factory.start)
        provider = await start_provider(node, None, None)
        client = NormalClient()
        await client.open(node)
        await client.run(1.0)  # warm up
        rows = [await measure(node, client, name, window) for name in ["baseline", *attacks]]
        provider.close()
        return rows
    finally:
        await asyncio.to_thread(factory.close)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attack_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=5.0, help="seconds each attack (and the baseline) runs")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated, from: {', '.join(ATTACKS)}")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    chosen = [a for a in args.attacks.split(",") if a]
    unknown = set(chosen) - set(ATTACKS)
    if unknown:
        parser.error(f"unknown attacks: {', '.join(sorted(unknown))}")
    rows = asyncio.run(run(chosen, args.window))
    header = f"{'attack':<20}{'reqs':>7}{'p50 ms':>9}{'p99 ms':>9}{'worst ms':>10}{'RSS MiB':>9}{'peak':>8}{'growth':>8}  goal"
    print(header)
    for row in rows:
        goal = "ok" if float(row["worst_ms"]) < GOAL_WORST_MS else "MISSED"  # type: ignore[arg-type]
        print(
            f"{row['attack']:<20}{row['requests']:>7}{row['p50_ms']:>9}{row['p99_ms']:>9}{row['worst_ms']:>10}"
            f"{row['rss_before_mib']:>9}{row['rss_peak_mib']:>8}{row['rss_growth_mib']:>8}  {goal}"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
