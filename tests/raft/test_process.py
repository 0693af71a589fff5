"""Real processes: SIGKILL the leader while writing; every acknowledged write survives everywhere."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).with_name("raft_process.py")
ROOT = Path(__file__).resolve().parents[2]


class Proc:
    def __init__(self, node_id: str, proc: asyncio.subprocess.Process, port: int) -> None:
        self.id = node_id
        self.proc = proc
        self.port = port

    @classmethod
    async def spawn(cls, node_id: str, data: Path, bootstrap: bool = False) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            node_id,
            str(data / node_id),
            "bootstrap" if bootstrap else "join",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        return cls(node_id, proc, json.loads(line)["port"])

    async def call(self, timeout: float = 10.0, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req).encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise ConnectionError(f"{self.id} exited")
        return json.loads(line)

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                await self.kill()


async def wait_for_leader(procs: dict[str, Proc], timeout: float = 30.0) -> Proc:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs.values():
            status = (await p.call(op="status"))["ok"]
            if status["role"] == "leader":
                return p
        await asyncio.sleep(0.05)
    raise AssertionError("no leader")


async def share_addresses(procs: dict[str, Proc]) -> None:
    addrs = {p.id: ["127.0.0.1", p.port] for p in procs.values()}
    for p in procs.values():
        await p.call(op="peers", addrs=addrs)


async def test_acknowledged_writes_survive_leader_sigkill(tmp_path: Path) -> None:
    procs: dict[str, Proc] = {}
    try:
        procs["n1"] = await Proc.spawn("n1", tmp_path, bootstrap=True)
        for n in ("n2", "n3"):
            procs[n] = await Proc.spawn(n, tmp_path)
        await share_addresses(procs)
        await wait_for_leader(procs)  # n1 bootstraps, but must win its first election before it can add members
        for n in ("n2", "n3"):
            reply = await procs["n1"].call(op="add", node=n, timeout=30)
            assert reply.get("ok"), reply

        acked: dict[str, int] = {}
        leader = await wait_for_leader(procs)
        killed = None
        for i in range(60):
            if i == 20:
                killed = leader.id
                await leader.kill()
                del procs[leader.id]
                leader = await wait_for_leader(procs)
            try:
                reply = await leader.call(op="put", key=f"app/w{i}", value=i)
            except (TimeoutError, ConnectionError):
                continue
            if "ok" in reply:
                acked[f"app/w{i}"] = i
            else:
                leader = await wait_for_leader(procs)
        assert len(acked) >= 40 and killed is not None

        procs[killed] = await Proc.spawn(killed, tmp_path)  # restart from its data dir
        await share_addresses(procs)
        deadline = time.monotonic() + 30
        while True:
            views = {n: (await p.call(op="list"))["ok"] for n, p in procs.items()}
            missing = {n: sorted(set(acked) - set(v)) for n, v in views.items() if not acked.items() <= v.items()}
            if not missing:
                break
            assert time.monotonic() < deadline, f"acknowledged writes missing: {missing}"
            await asyncio.sleep(0.1)
    finally:
        for p in procs.values():
            await p.close()


def _damage(data_dir: Path, how: str) -> None:
    """Empty a stopped node's Raft directory, or cut its newest log file in half (a torn tail)."""
    if how == "empty":
        for path in data_dir.iterdir():
            path.unlink()
        return
    wal = max(data_dir.glob("log-*.wal"))
    size = wal.stat().st_size
    with open(wal, "r+b") as f:
        f.truncate(size // 2)


@pytest.mark.parametrize("how", ["empty", "truncate"])
async def test_follower_that_lost_its_log_catches_up_under_the_same_leader(tmp_path: Path, how: str) -> None:
    """A follower back with an emptied or cut data directory reaches the leader's commit index
    and serves every key, while the leader (and its term) stays the same."""
    procs: dict[str, Proc] = {}
    try:
        procs["n1"] = await Proc.spawn("n1", tmp_path, bootstrap=True)
        for n in ("n2", "n3"):
            procs[n] = await Proc.spawn(n, tmp_path)
        await share_addresses(procs)
        leader = await wait_for_leader(procs)
        for n in ("n2", "n3"):
            assert (await leader.call(op="add", node=n, timeout=30)).get("ok")
        for i in range(30):
            assert "ok" in await leader.call(op="put", key=f"app/k{i}", value=i)
        before = (await leader.call(op="status"))["ok"]
        victim = next(n for n in procs if n != leader.id)
        await procs.pop(victim).kill()
        _damage(tmp_path / victim, how)

        procs[victim] = await Proc.spawn(victim, tmp_path)
        await share_addresses(procs)
        back_at = time.monotonic()
        expected = (await leader.call(op="list"))["ok"]
        deadline = time.monotonic() + 30
        while True:
            status = (await procs[victim].call(op="status"))["ok"]
            lead = (await leader.call(op="status"))["ok"]
            if status["commit_index"] >= lead["commit_index"] and (await procs[victim].call(op="list"))["ok"] == expected:
                break
            assert time.monotonic() < deadline, f"{victim} stays behind: {status} vs leader {lead}"
            await asyncio.sleep(0.1)
        print(f"\n{how} follower caught up with the leader {time.monotonic() - back_at:.2f} s after its restart")
        after = (await leader.call(op="status"))["ok"]
        assert (after["leader"], after["term"]) == (before["leader"], before["term"])
    finally:
        for p in procs.values():
            await p.close()
