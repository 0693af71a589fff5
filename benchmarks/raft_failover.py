"""Issue 6's real-process figures: Raft fail-over and committed writes through ``rsbroker serve``.

Run it standalone (a full 3 + 5 node run takes about three minutes on a busy 2-core machine)::

    python -m benchmarks.raft_failover [--nodes 3 5] [--trials 30] [--writes 300]
                                       [--concurrent-writes 3200] [--writers 32]
                                       [--no-yardstick] [--json FILE]

Every node is a real ``rsbroker serve`` on 127.0.0.1 with ``--cluster`` (Raft rides the gossip
port) and its own ``--data-dir``, so the log is fsynced before a write is acknowledged.
Processes come from ``tests.support.cluster`` and are stopped by PID on every way out
(Ctrl-C and SIGTERM included).

**Fail-over** — per trial: wait until the cluster is settled (every node sees every other
alive, all agree on one leader, every node is a voter whose match index reached the leader's
commit index, every node applied it), SIGKILL the leader, and PUT ``app/failover/t<i>`` to a
survivor (taken in turn) until it answers 200. The figure is the time from the SIGKILL to that
answer: an election, the new leader's first commit, and the survivor applying the write. A 503
(no leader yet, or the write timed out) is asked again at once. Then the victim restarts with
the same ``--data-dir`` and gossip address, joining the live nodes, and the next trial waits
for it to be settled again (``rejoin_s``). Goals: median <= 0.6 s, p99 <= 1.5 s. With 30 trials
the nearest-rank p99 is the slowest trial.

**Throughput** — committed writes per second through ``PUT /api/v1/config/app/...`` on one
aiohttp session, measured on the settled cluster before the fail-over trials: sequential (one
write at a time) and with ``--writers`` concurrent writers, each row once against the leader's
admin API and once against a follower's (which forwards to the leader). A write counts once
its 200 arrived, which is after the node that took it applied it.

**Yardsticks** — ``benchmarks.raft_bench``'s in-process measurements, in this run, after the
brokers have stopped, three nodes each, the same write counts: pysyncobj writing through its
leader with its default timing and with 10 ms ticks, and our ``RaftNode`` with fsync on and no
HTTP in front (it shows how much of a gap is the admin API and the process hops rather than
Raft). pysyncobj 0.3 has no fsync per write (its journal is an mmap flushed on close) and no
HTTP in front, so the ratios of the ``rsbroker serve`` rows to it are conservative for us.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.procstat import cpu_snapshot
from benchmarks.raft_bench import _pysyncobj, _throughput  # its in-process measurements, reused as they are
from benchmarks.stats import percentile
from tests.support.admin import wait_for
from tests.support.brokerproc import BrokerProcess
from tests.support.cluster import Cluster, ClusterFactory

#: The issue's goals for the fail-over time, in seconds.
GOAL_MEDIAN_S = 0.6
GOAL_P99_S = 1.5
#: A trial whose new leader has not accepted a write after this long is counted as stalled
#: and the run stops: the cluster is broken, more trials would measure nothing.
FAILOVER_GIVE_UP_S = 30.0
#: Bound on a restarted node rejoining (process start, gossip join, Raft catch-up).
REJOIN_TIMEOUT_S = 60.0
#: Pause before asking again after an immediate refusal (503 with no leader known).
RETRY_PAUSE_S = 0.01
#: Writes before each throughput measurement, so connection set-up is not measured.
WARMUP_WRITES = 20
#: Client-side bound on one admin request; the node itself answers 503 after its 5 s timeout.
HTTP_TIMEOUT_S = 15.0


# -- the admin API ------------------------------------------------------------------------------


class Admin:
    """The calls this benchmark makes, over one keep-alive aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def raft(self, node: BrokerProcess) -> dict[str, Any] | None:
        """``GET /api/v1/raft`` of ``node``, or None if it does not answer 200."""
        try:
            async with self.session.get(f"{node.admin_url}/api/v1/raft") as response:
                return dict(await response.json()) if response.status == HTTPStatus.OK else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def member_states(self, node: BrokerProcess) -> dict[str, str]:
        """``{node_id: state}`` in ``node``'s gossip view (empty if it does not answer)."""
        try:
            async with self.session.get(f"{node.admin_url}/api/v1/members") as response:
                body = await response.json() if response.status == HTTPStatus.OK else {"members": []}
        except (aiohttp.ClientError, TimeoutError):
            return {}
        return {m["node_id"]: m["state"] for m in body["members"]}

    async def put(self, node: BrokerProcess, key: str, value: Any) -> int:
        """``PUT /api/v1/config/<key>``; the HTTP status, or 0 when the request itself failed."""
        try:
            async with self.session.put(f"{node.admin_url}/api/v1/config/{key}", data=json.dumps(value)) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return 0


# -- a settled cluster --------------------------------------------------------------------------


async def settled_leader(cluster: Cluster, admin: Admin) -> str | None:
    """The leader's id if the cluster is settled, else None.

    Settled: every running node sees every running node alive, all name the same leader, the
    leader says it leads, every running node is a voter whose match index reached the
    leader's commit index, and every node has applied that index. Only then does killing the
    leader leave a majority that can elect a successor at once.
    """
    nodes = cluster.running
    expected = {n.node_id for n in nodes}
    statuses = await asyncio.gather(*(admin.raft(n) for n in nodes))
    if any(s is None for s in statuses):
        return None
    leaders = {s["leader"] for s in statuses if s is not None}
    if len(leaders) != 1 or None in leaders:
        return None
    (leader,) = leaders
    by_id = {s["id"]: s for s in statuses if s is not None}
    lead = by_id.get(leader)
    if lead is None or lead["role"] != "leader":
        return None
    commit = lead["commit_index"]
    members = lead["members"]
    for node_id in expected:
        member = members.get(node_id)
        if member is None or not member.get("voter") or (member.get("match") or 0) < commit:
            return None
        if by_id[node_id]["applied_index"] < commit:
            return None
    views = await asyncio.gather(*(admin.member_states(n) for n in nodes))
    if any(view.get(other) != "alive" for view in views for other in expected):
        return None
    return str(leader)


async def wait_settled(cluster: Cluster, admin: Admin, timeout: float) -> str:
    leader: str = await wait_for(
        lambda: settled_leader(cluster, admin), timeout=timeout, interval=0.02, message="a settled cluster"
    )
    return leader


# -- fail-over ----------------------------------------------------------------------------------


@dataclass
class Trial:
    """One SIGKILL of the leader and what followed."""

    victim: str
    writer: str
    new_leader: str | None
    #: SIGKILL → the survivor's 200 for the write
    failover_s: float
    #: PUTs sent until one was acknowledged (each 503 or failed request adds one)
    attempts: int
    #: the victim's restart → the cluster settled again, victim included
    rejoin_s: float


async def failover_trial(cluster: Cluster, admin: Admin, trial: int) -> Trial:
    victim_id = await wait_settled(cluster, admin, REJOIN_TIMEOUT_S)
    victim = cluster[victim_id]
    survivors = [n for n in cluster.running if n.node_id != victim_id]
    writer = survivors[trial % len(survivors)]
    key = f"app/failover/t{trial}"
    attempts = 0
    started = time.perf_counter()
    victim.kill()  # SIGKILL by PID (the wait that follows reaps it in microseconds)
    while True:
        attempts += 1
        status = await admin.put(writer, key, trial)
        if status == HTTPStatus.OK:
            break
        if time.perf_counter() - started > FAILOVER_GIVE_UP_S:
            raise RuntimeError(
                f"trial {trial}: no new leader accepted a write within {FAILOVER_GIVE_UP_S:g} s (last status {status})"
            )
        await asyncio.sleep(RETRY_PAUSE_S)
    failover = time.perf_counter() - started
    view = await admin.raft(writer)
    new_leader = view["leader"] if view else None
    restarted = time.perf_counter()
    cluster.restart(victim_id)  # same --data-dir and gossip address, --join to the live nodes
    await wait_settled(cluster, admin, REJOIN_TIMEOUT_S)
    return Trial(victim_id, writer.node_id, new_leader, failover, attempts, time.perf_counter() - restarted)


def summarize_failover(trials: list[Trial]) -> dict[str, Any]:
    times = sorted(t.failover_s for t in trials)
    rejoin = sorted(t.rejoin_s for t in trials)
    return {
        "trials": len(trials),
        "median_s": statistics.median(times),
        "p99_s": percentile(times, 99.0),
        "max_s": times[-1],
        "min_s": times[0],
        "over_goal_p99": sum(t > GOAL_P99_S for t in times),
        "retried_trials": sum(t.attempts > 1 for t in trials),
        "rejoin_median_s": statistics.median(rejoin),
        "rejoin_max_s": rejoin[-1],
        "samples": [asdict(t) for t in trials],
    }


# -- throughput ---------------------------------------------------------------------------------


async def _timed(writes: int, run: Callable[[], Awaitable[int]], cluster: Cluster) -> dict[str, Any]:
    """Run the writes; their rate, and the CPU share (CPU seconds / wall seconds) of this client
    and of every node over the same window, which shows what bound the rate on a shared machine."""
    pids = {n.node_id: n.pid for n in cluster.running}
    cpu_before = cpu_snapshot(pids)
    client_before = time.process_time()
    started = time.perf_counter()
    failed = await run()
    elapsed = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    cpu_after = cpu_snapshot(pids)
    return {
        "writes": writes,
        "failed": failed,
        "seconds": elapsed,
        "writes_per_s": (writes - failed) / elapsed,
        "cpu_share": {"client": client_cpu / elapsed, **{n: (cpu_after[n] - cpu_before[n]) / elapsed for n in pids}},
    }


async def sequential_writes(admin: Admin, cluster: Cluster, node: BrokerProcess, tag: str, writes: int) -> dict[str, Any]:
    """One PUT at a time; the next leaves when the previous one was acknowledged."""
    for i in range(WARMUP_WRITES):
        await admin.put(node, f"app/warmup/{tag}{i}", i)

    async def run() -> int:
        failed = 0
        for i in range(writes):
            failed += await admin.put(node, f"app/seq/{tag}{i}", i) != HTTPStatus.OK
        return failed

    return await _timed(writes, run, cluster)


async def concurrent_writes(
    admin: Admin, cluster: Cluster, node: BrokerProcess, tag: str, writes: int, *, writers: int
) -> dict[str, Any]:
    """``writers`` tasks, each writing its share one PUT at a time, all on one session."""
    per_writer = writes // writers

    async def writer(w: int) -> int:
        failed = 0
        for i in range(per_writer):
            failed += await admin.put(node, f"app/conc/{tag}w{w}-{i}", i) != HTTPStatus.OK
        return failed

    async def run() -> int:
        return sum(await asyncio.gather(*(writer(w) for w in range(writers))))

    return await _timed(per_writer * writers, run, cluster)


def _shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items())


async def measure_throughput(cluster: Cluster, admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    leader_id = await wait_settled(cluster, admin, REJOIN_TIMEOUT_S)
    follower = next(n for n in cluster.running if n.node_id != leader_id)
    out: dict[str, Any] = {}
    for via, node in (("leader", cluster[leader_id]), ("follower", follower)):
        seq = await sequential_writes(admin, cluster, node, via, args.writes)
        conc = await concurrent_writes(admin, cluster, node, via, args.concurrent_writes, writers=args.writers)
        out[via] = {"node": node.node_id, "leader": leader_id, "sequential": seq, "concurrent": conc}
        print(
            f"  writes via the {via} ({node.node_id}): sequential {seq['writes_per_s']:.0f} w/s, "
            f"{args.writers} writers {conc['writes_per_s']:.0f} w/s, failed {seq['failed'] + conc['failed']}; "
            f"CPU share with {args.writers} writers: {_shares(conc['cpu_share'])}",
            flush=True,
        )
    return out


# -- one cluster size ---------------------------------------------------------------------------


async def measure_cluster(size: int, args: argparse.Namespace) -> dict[str, Any]:
    print(f"{size} nodes: starting", flush=True)
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=max(100, 2 * args.writers))
    with ClusterFactory() as factory:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            admin = Admin(session)
            # Started synchronously: a Ctrl-C cancels this task only after a start returned,
            # so the factory knows every process it must stop.
            cluster = factory.start(size)
            await wait_settled(cluster, admin, REJOIN_TIMEOUT_S)
            result: dict[str, Any] = {"throughput": await measure_throughput(cluster, admin, args)}
            trials: list[Trial] = []
            try:
                for i in range(args.trials):
                    trial = await failover_trial(cluster, admin, i)
                    trials.append(trial)
                    print(
                        f"  trial {i + 1:>2}: killed {trial.victim}, write via {trial.writer} acknowledged after "
                        f"{trial.failover_s * 1000:.0f} ms ({trial.attempts} PUTs), new leader {trial.new_leader}, "
                        f"rejoined in {trial.rejoin_s:.1f} s",
                        flush=True,
                    )
            except (RuntimeError, AssertionError) as exc:  # a stalled election or a node that never rejoined
                print(f"  stopped after {len(trials)} trials: {exc}", flush=True)
                result["failover_error"] = str(exc)
            if trials:
                result["failover"] = summarize_failover(trials)
    return result


# -- in-process yardsticks ----------------------------------------------------------------------


def measure_in_process(args: argparse.Namespace) -> dict[str, Any]:
    """``benchmarks.raft_bench``'s three-node measurements in this process, no HTTP in front:
    pysyncobj with its default timing and with 10 ms ticks, and our RaftNode with fsync on
    (the last tells how much of the gap to pysyncobj is the admin API and the processes)."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rsbroker-raft-yardstick-") as tmp:
        base = Path(tmp)
        runs: dict[str, Callable[[], tuple[float, float]]] = {
            "pysyncobj, default timing": lambda: _pysyncobj(base, args.writes, args.concurrent_writes, args.writers, False),
            "pysyncobj, 10 ms ticks": lambda: _pysyncobj(base, args.writes, args.concurrent_writes, args.writers, True),
            "RaftNode, fsync on": lambda: asyncio.run(
                _throughput(base / "raftnode", True, args.writes, args.concurrent_writes, args.writers)
            ),
        }
        for name, measure in runs.items():
            seq, conc = measure()
            out[name] = {"sequential_writes_per_s": seq, "concurrent_writes_per_s": conc}
            print(f"  {name}: sequential {seq:.0f} w/s, {args.writers} writers {conc:.0f} w/s", flush=True)
    return out


# -- the run ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM ends the run like Ctrl-C: this task is cancelled and every `with` stops its processes.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    result: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "json"}, "clusters": {}}
    for size in args.nodes:
        load_before = os.getloadavg()[0]
        result["clusters"][str(size)] = figures = await measure_cluster(size, args)
        # Sequential writes hop through four processes each; on a shared machine the neighbours' load moves them most.
        figures["load_average_1m"] = {"before": load_before, "after": os.getloadavg()[0]}
    return result


def throughput_rows(result: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """``{row label: (sequential w/s, concurrent w/s)}`` of every system measured."""
    rows: dict[str, tuple[float, float]] = {}
    for size, figures in result["clusters"].items():
        for via, row in figures["throughput"].items():
            rows[f"rsbroker serve x{size}, PUT via {via}"] = (
                row["sequential"]["writes_per_s"],
                row["concurrent"]["writes_per_s"],
            )
    for name, row in result.get("in_process", {}).items():
        rows[f"{name} x3 in-process"] = (row["sequential_writes_per_s"], row["concurrent_writes_per_s"])
    return rows


def ratios(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every rsbroker row / every pysyncobj row: ``{"<ours> / <theirs>": {"sequential", "concurrent"}}``."""
    rows = throughput_rows(result)
    references = {name: figures for name, figures in rows.items() if name.startswith("pysyncobj")}
    return {
        f"{name} / {ref_name}": {"sequential": seq / ref_seq, "concurrent": conc / ref_conc}
        for name, (seq, conc) in rows.items()
        if name not in references
        for ref_name, (ref_seq, ref_conc) in references.items()
    }


def render(result: dict[str, Any]) -> str:
    writers = result["settings"]["writers"]
    lines = [f"{'committed writes, fsync on (pysyncobj: none)':48} {'sequential w/s':>15} {f'{writers} writers w/s':>16}"]
    for name, (seq, conc) in throughput_rows(result).items():
        lines.append(f"{name:48} {seq:>15.0f} {conc:>16.0f}")
    lines.append("")
    for name, ratio in result.get("ratios", {}).items():
        lines.append(f"ratio {name}: sequential {ratio['sequential']:.2f}x, {writers} writers {ratio['concurrent']:.2f}x")
    lines.append("")
    lines.append(
        f"{'fail-over: SIGKILL leader -> write acked':48} {'trials':>7} {'median s':>9} {'p99 s':>7} {'max s':>7} {'goal':>5}"
    )
    for size, figures in result["clusters"].items():
        load = figures["load_average_1m"]
        lines.append(f"{size} nodes: 1-minute load average of the machine {load['before']:.1f} before, {load['after']:.1f} after")
        fo = figures.get("failover")
        if fo is None:
            if "failover_error" in figures:
                lines.append(f"{size} nodes: no trial completed ({figures['failover_error']})")
            continue
        met = fo["median_s"] <= GOAL_MEDIAN_S and fo["p99_s"] <= GOAL_P99_S
        lines.append(
            f"{f'rsbroker serve x{size}':48} {fo['trials']:>7} {fo['median_s']:>9.3f} {fo['p99_s']:>7.3f} "
            f"{fo['max_s']:>7.3f} {'met' if met else 'MISS':>5}"
        )
        lines.append(
            f"  over {GOAL_P99_S:g} s: {fo['over_goal_p99']}, trials that needed a second PUT: {fo['retried_trials']}, "
            f"restarted leader rejoined in median {fo['rejoin_median_s']:.1f} s, max {fo['rejoin_max_s']:.1f} s"
        )
        if "failover_error" in figures:
            lines.append(f"  stopped early: {figures['failover_error']}")
    lines.append(f"goals: fail-over median <= {GOAL_MEDIAN_S:g} s, p99 <= {GOAL_P99_S:g} s; throughput >= pysyncobj's")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.raft_failover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", choices=(3, 5), default=[3, 5], help="cluster sizes to measure")
    parser.add_argument("--trials", type=int, default=30, help="fail-over trials per cluster size")
    parser.add_argument("--writes", type=int, default=300, help="sequential writes per row")
    parser.add_argument("--concurrent-writes", type=int, default=3200, help="writes spread over the writers per row")
    parser.add_argument("--writers", type=int, default=32, help="concurrent writers")
    parser.add_argument("--no-yardstick", action="store_true", help="skip the in-process pysyncobj and RaftNode figures")
    parser.add_argument("--json", help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    if args.trials < 0 or args.writes < 1 or args.writers < 1 or args.concurrent_writes < args.writers:
        parser.error("need --trials >= 0, --writes >= 1, --writers >= 1 and --concurrent-writes >= --writers")
    try:
        result = asyncio.run(run(args))
    except asyncio.CancelledError:  # SIGTERM: the brokers are already stopped
        return 143
    if not args.no_yardstick:
        print("yardsticks (benchmarks.raft_bench), 3 nodes in this process", flush=True)
        result["in_process"] = measure_in_process(args)
    result["ratios"] = ratios(result)
    print()
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C: every broker was stopped on the way out
        sys.exit(130)
