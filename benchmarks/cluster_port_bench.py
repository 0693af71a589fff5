"""What an unauthenticated peer can make a node hold through its cluster port (issue 11 §5).

Run it standalone (about a minute)::

    python -m benchmarks.cluster_port_bench [--streams 20] [--mib 15] [--duration 12]

One keyed ``rsbroker serve`` with a raw echo provider (from :mod:`benchmarks.security_bench`).
A requester sends request-response one after another for ``--duration`` seconds, twice:
once quietly (baseline), once while an attacker without the key opens ``--streams`` Raft
streams on the cluster port, each declaring a 16 MiB frame, sending ``--mib`` MiB of it and
then stalling. Printed per phase: the requester's p50, p99 and worst latency, and the
node's RSS before and at its peak. What bounds the attack: at most ``MAX_STREAMS_PER_PEER``
unauthenticated streams per address (a new one closes the oldest), the message size limit
(``--cluster-max-message-bytes``) and the body read timeout (``--cluster-read-timeout-s``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import struct
import time
from typing import Any

from broker import frames as fr
from broker import metadata as md
from broker.frames import FrameType
from benchmarks.security_bench import ROUTE, FrameConnection, _percentile, open_frames, setup_frame, start_provider
from tests.support.brokerproc import BrokerProcess, split_hostport
from tests.support.cluster import ClusterFactory


def rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


async def requests_for(node: BrokerProcess, duration: float, peak: list[int]) -> list[float]:
    """Sequential request-responses on one connection; latencies in ms. Samples RSS as it goes."""
    answered: asyncio.Queue[None] = asyncio.Queue()

    def on_frames(_: FrameConnection, frames: list[bytes]) -> None:
        for frame in frames:
            if fr.header(frame)[1] in (FrameType.PAYLOAD, FrameType.ERROR):
                answered.put_nowait(None)

    client = await open_frames(node.tcp or "", None, on_frames)
    client.send([setup_frame()])
    latencies: list[float] = []
    sid = 1
    end = time.monotonic() + duration
    try:
        while time.monotonic() < end:
            started = time.perf_counter()
            client.send([fr.request_frame(FrameType.REQUEST_RESPONSE, sid, md.route_metadata(ROUTE), b"ping")])
            await asyncio.wait_for(answered.get(), 30)
            latencies.append((time.perf_counter() - started) * 1000)
            sid += 2
            if sid % 64 == 1:
                peak[0] = max(peak[0], rss_mib(node.pid))
    finally:
        client.close()
    return latencies


async def stalled_raft_frames(cluster_address: str, streams: int, mib: int) -> list[asyncio.StreamWriter]:
    """The attack: Raft streams that declare 16 MiB, send ``mib`` MiB of it, then say nothing."""
    host, port = split_hostport(cluster_address)
    chunk = b"x" * (1 << 20)
    writers = []
    for _ in range(streams):
        _, writer = await asyncio.open_connection(host, port)
        writer.write(b"\x02" + struct.pack(">I", 16 << 20))
        for _ in range(mib):
            writer.write(chunk)
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                await asyncio.wait_for(writer.drain(), 2)
        writers.append(writer)
    return writers


async def run(streams: int, mib: int, duration: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with ClusterFactory() as factory:
        node = factory.start(1, "--cluster-key", str(factory.key_file()))["n1"]
        provider = await start_provider(node, None, None)
        for phase in ("quiet", "raft attack"):
            base = rss_mib(node.pid)
            peak = [base]
            attack = None
            if phase != "quiet":
                attack = asyncio.ensure_future(stalled_raft_frames(str(node.cluster), streams, mib))
            latencies = await requests_for(node, duration, peak)
            if attack is not None:
                for writer in await attack:
                    writer.close()
            result[phase] = {
                "requests": len(latencies),
                "p50_ms": _percentile(latencies, 0.5),
                "p99_ms": _percentile(latencies, 0.99),
                "worst_ms": max(latencies),
                "rss_base_mib": base,
                "rss_peak_mib": peak[0],
            }
        provider.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster_port_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=20, help="attacking Raft streams (default: %(default)s)")
    parser.add_argument("--mib", type=int, default=15, help="MiB each stream sends before stalling (default: %(default)s)")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per phase (default: %(default)s)")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.streams, args.mib, args.duration))
    print("| phase | requests | p50 ms | p99 ms | worst ms | RSS base MiB | RSS peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for phase, row in result.items():
        print(f"| {phase} | {row['requests']} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['worst_ms']:.1f} "
              f"| {row['rss_base_mib']} | {row['rss_peak_mib']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
