"""Committed writes per second: our RaftNode against pysyncobj, same machine, same run.

    python benchmarks/raft_bench.py [--writes 400] [--concurrent-writes 3200] [--writers 32]

Both run three nodes in one process on 127.0.0.1 (ours: one asyncio loop, TCP transport,
FileStorage; pysyncobj: its own threads and sockets, journal file). A write counts once
the leader reports it applied. Ours runs with fsync on (every Ready is fsynced before
messages leave) and, for reference, with fsync off. pysyncobj 0.3 has no fsync per write:
its journal is an mmap flushed on close, so "fsync on" is not available to it and its
figures are its most durable mode. Prints one table and the ratios ours / pysyncobj.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cluster.raft.node import NodeOptions, RaftNode
from cluster.raft.transport import TcpTransport


async def _ours(tmp: Path, fsync: bool, writes: int, concurrent_writes: int, writers: int) -> tuple[float, float]:
    addrs: dict[str, tuple[str, int]] = {}
    opts = NodeOptions(tick_interval=0.03, request_timeout=30.0, fsync=fsync)
    nodes: list[RaftNode] = []
    for n in ("n1", "n2", "n3"):
        transport = TcpTransport(n, addrs.get)
        addrs[n] = await transport.listen("127.0.0.1", 0)
        nodes.append(RaftNode(n, tmp / n, transport, options=opts))
    await nodes[0].start(bootstrap=True)
    while not nodes[0].is_leader:
        await asyncio.sleep(0.01)
    for node in nodes[1:]:
        await node.start()
        await nodes[0].add_member(node.node_id)
    leader = nodes[0]
    try:
        started = time.perf_counter()
        for i in range(writes):
            await leader.put(f"app/seq{i}", i)
        sequential = writes / (time.perf_counter() - started)

        per_writer = concurrent_writes // writers

        async def writer(w: int) -> None:
            for i in range(per_writer):
                await leader.put(f"app/c{w}-{i}", i)

        started = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        concurrent = per_writer * writers / (time.perf_counter() - started)
    finally:
        for node in nodes:
            await node.stop()
    return sequential, concurrent


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _pysyncobj(tmp: Path, writes: int, concurrent_writes: int, writers: int) -> tuple[float, float]:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class KV(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, others: list[str], journal: str) -> None:
            super().__init__(me, others, SyncObjConf(journalFile=journal, dynamicMembershipChange=False))
            self.data: dict[str, int] = {}

        @replicated  # type: ignore[misc,untyped-decorator]
        def put(self, key: str, value: int) -> None:
            self.data[key] = value

    addrs = [f"127.0.0.1:{p}" for p in _free_ports(3)]
    objs = [KV(a, [o for o in addrs if o != a], str(tmp / f"journal-{i}")) for i, a in enumerate(addrs)]
    try:
        deadline = time.monotonic() + 30
        while not any(o._isLeader() for o in objs):
            if time.monotonic() > deadline:
                raise RuntimeError("pysyncobj elected no leader")
            time.sleep(0.01)
        leader = next(o for o in objs if o._isLeader())
        started = time.perf_counter()
        for i in range(writes):
            leader.put(f"seq{i}", i, sync=True, timeout=30)
        sequential = writes / (time.perf_counter() - started)

        per_writer = concurrent_writes // writers
        barrier = threading.Barrier(writers)

        def writer(w: int) -> None:
            barrier.wait()
            for i in range(per_writer):
                leader.put(f"c{w}-{i}", i, sync=True, timeout=30)

        started = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(writer, range(writers)))
        concurrent = per_writer * writers / (time.perf_counter() - started)
    finally:
        for o in objs:
            o.destroy()
    return sequential, concurrent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=400, help="sequential writes per system")
    parser.add_argument("--concurrent-writes", type=int, default=3200, help="writes spread over the writers")
    parser.add_argument("--writers", type=int, default=32)
    args = parser.parse_args(argv)
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        results["rsbroker raft, fsync on"] = asyncio.run(
            _ours(base / "fsync", True, args.writes, args.concurrent_writes, args.writers)
        )
        results["rsbroker raft, fsync off"] = asyncio.run(
            _ours(base / "nofsync", False, args.writes, args.concurrent_writes, args.writers)
        )
        results["pysyncobj, journal"] = _pysyncobj(base, args.writes, args.concurrent_writes, args.writers)
    print(f"{'system (3 nodes, 127.0.0.1)':32} {'sequential w/s':>15} {f'{args.writers} writers w/s':>15}")
    for name, (seq, conc) in results.items():
        print(f"{name:32} {seq:15.0f} {conc:15.0f}")
    ref_seq, ref_conc = results["pysyncobj, journal"]
    for name in ("rsbroker raft, fsync on", "rsbroker raft, fsync off"):
        seq, conc = results[name]
        print(f"ratio {name} / pysyncobj: sequential {seq / ref_seq:.2f}x, concurrent {conc / ref_conc:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
