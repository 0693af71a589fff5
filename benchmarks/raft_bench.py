"""Committed writes per second: our RaftNode against pysyncobj, same machine, same run.

    python benchmarks/raft_bench.py [--writes 400] [--concurrent-writes 3200] [--writers 32] [--failover-trials 30]

Both run three nodes in one process on 127.0.0.1 (ours: one asyncio loop, TCP transport,
FileStorage; pysyncobj: its own threads and sockets, journal file). A write counts once
the leader reports it applied. Ours runs with fsync on (every Ready is fsynced before
messages leave) and, for reference, with fsync off. pysyncobj 0.3 has no fsync per write:
its journal is an mmap flushed on close, so "fsync on" is not available to it and its
figures are its most durable mode; it runs with its default timing and with 10 ms ticks
(its sequential latency is bound by its append period). Prints one table and the ratios ours / pysyncobj, then
the fail-over time of our cluster: the leader is stopped without handing over (its sockets
close, as on SIGKILL) and the clock runs until a new leader has committed a write.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cluster.raft.errors import RaftError
from cluster.raft.node import NodeOptions, RaftNode
from cluster.raft.transport import TcpTransport


class _Cluster:
    """Three RaftNodes over TCP on 127.0.0.1 in this process, each with its own data dir."""

    def __init__(self, tmp: Path, fsync: bool) -> None:
        self.tmp = tmp
        self.opts = NodeOptions(tick_interval=0.03, request_timeout=30.0, fsync=fsync)
        self.addrs: dict[str, tuple[str, int]] = {}
        self.nodes: dict[str, RaftNode] = {}

    async def start_node(self, node_id: str, bootstrap: bool = False) -> RaftNode:
        transport = TcpTransport(node_id, self.addrs.get)
        self.addrs[node_id] = await transport.listen("127.0.0.1", 0)
        node = RaftNode(node_id, self.tmp / node_id, transport, options=self.opts)
        await node.start(bootstrap=bootstrap)
        self.nodes[node_id] = node
        return node

    async def start(self) -> RaftNode:
        first = await self.start_node("n1", bootstrap=True)
        while not first.is_leader:
            await asyncio.sleep(0.01)
        for n in ("n2", "n3"):
            await self.start_node(n)
            await first.add_member(n)
        return first

    def leader(self) -> RaftNode | None:
        return next((n for n in self.nodes.values() if n.is_leader), None)

    async def stop(self) -> None:
        for node in self.nodes.values():
            await node.stop()


async def _throughput(tmp: Path, fsync: bool, writes: int, concurrent_writes: int, writers: int) -> tuple[float, float]:
    cluster = _Cluster(tmp, fsync)
    leader = await cluster.start()
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
        await cluster.stop()
    return sequential, concurrent


async def _failover(tmp: Path, trials: int) -> list[float]:
    """Seconds from stopping the leader (sockets closed, no hand-over) to a write committed by a new one."""
    cluster = _Cluster(tmp, fsync=True)
    await cluster.start()
    samples: list[float] = []
    try:
        for trial in range(trials):
            old = cluster.leader()
            while old is None:
                await asyncio.sleep(0.01)
                old = cluster.leader()
            await old.put("app/trial", trial)
            started = time.perf_counter()
            await old.stop()
            del cluster.nodes[old.node_id]
            while True:
                new = cluster.leader()
                if new is not None:
                    try:
                        await new.put("app/after", trial, timeout=1.0)
                        break
                    except RaftError:
                        pass
                await asyncio.sleep(0.005)
            samples.append(time.perf_counter() - started)
            restarted = await cluster.start_node(old.node_id)  # back from its data dir
            while restarted.core.log.applied < new.core.log.committed:
                await asyncio.sleep(0.01)
    finally:
        await cluster.stop()
    return samples


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _pysyncobj(tmp: Path, writes: int, concurrent_writes: int, writers: int, tuned: bool) -> tuple[float, float]:
    """``tuned``: ticks and appends every 10 ms instead of its defaults (50 ms tick, 100 ms appends)."""
    from pysyncobj import SyncObj, SyncObjConf, replicated

    timing = {"autoTickPeriod": 0.005, "appendEntriesPeriod": 0.01} if tuned else {}

    class KV(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, others: list[str], journal: str) -> None:
            conf = SyncObjConf(journalFile=journal, dynamicMembershipChange=False, **timing)
            super().__init__(me, others, conf)
            self.data: dict[str, int] = {}

        @replicated  # type: ignore[untyped-decorator]
        def put(self, key: str, value: int) -> None:
            self.data[key] = value

    addrs = [f"127.0.0.1:{p}" for p in _free_ports(3)]
    objs = [KV(a, [o for o in addrs if o != a], str(tmp / f"journal-{tuned}-{i}")) for i, a in enumerate(addrs)]
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
    parser.add_argument("--failover-trials", type=int, default=30, help="0 skips the fail-over measurement")
    args = parser.parse_args(argv)
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        results["rsbroker raft, fsync on"] = asyncio.run(
            _throughput(base / "fsync", True, args.writes, args.concurrent_writes, args.writers)
        )
        results["rsbroker raft, fsync off"] = asyncio.run(
            _throughput(base / "nofsync", False, args.writes, args.concurrent_writes, args.writers)
        )
        results["pysyncobj, journal"] = _pysyncobj(base, args.writes, args.concurrent_writes, args.writers, False)
        results["pysyncobj, journal, 10 ms ticks"] = _pysyncobj(
            base, args.writes, args.concurrent_writes, args.writers, True
        )
        failover = asyncio.run(_failover(base / "failover", args.failover_trials)) if args.failover_trials else []
    print(f"{'system (3 nodes, 127.0.0.1)':32} {'sequential w/s':>15} {f'{args.writers} writers w/s':>15}")
    for name, (seq, conc) in results.items():
        print(f"{name:32} {seq:15.0f} {conc:15.0f}")
    for ref in ("pysyncobj, journal", "pysyncobj, journal, 10 ms ticks"):
        ref_seq, ref_conc = results[ref]
        for name in ("rsbroker raft, fsync on", "rsbroker raft, fsync off"):
            seq, conc = results[name]
            print(f"ratio {name} / {ref}: sequential {seq / ref_seq:.2f}x, concurrent {conc / ref_conc:.2f}x")
    if failover:
        ordered = sorted(failover)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        print(
            f"fail-over (leader stopped -> write committed by a new leader), {len(failover)} trials: "
            f"median {statistics.median(failover):.3f} s, p99 {p99:.3f} s, max {ordered[-1]:.3f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
