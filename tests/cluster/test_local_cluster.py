"""``rsbroker cluster up`` starts a working local cluster with the demo provider; ``down`` stops it.

The command binds fixed ports (``--base-port``), so the test picks a base whose twelve ports
are free right now. Whatever happens, the PIDs recorded in ``cluster.json`` are stopped at
the end (``cluster down``, and SIGKILL by PID for any survivor).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from rsocket.payload import Payload

from broker.client import route
from tests.cluster.peers import REQUEST_BOUND_S, requester
from tests.support.admin import wait_for
from tests.support.brokerproc import BrokerFactory, run_rsbroker
from tests.support.cluster import member_states


def _free_base(nodes: int) -> int:
    """A base port whose ``10·i + 0..3`` ports (TCP and UDP) are all free at this moment."""
    for _ in range(200):
        base = random.randrange(20_000, 60_000, 10)
        ports = [base + 10 * i + k for i in range(nodes) for k in range(4)]
        if all(_bindable(p, kind) for p in ports for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM)):
            return base
    raise AssertionError("no free port range found")


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _pids(state: dict[str, Any]) -> list[int]:
    return [n["pid"] for n in state["nodes"]] + ([state["provider"]["pid"]] if state.get("provider") else [])


async def test_cluster_up_serves_the_demo_from_every_node_and_down_stops_it() -> None:
    factory = BrokerFactory()
    root = factory.tmpdir("rsbroker-local-")
    state: dict[str, Any] = {"nodes": []}
    try:
        up = await asyncio.to_thread(
            run_rsbroker, "cluster", "up", "--nodes", "3", "--dir", str(root), "--base-port", str(_free_base(3)), timeout=180
        )
        state = json.loads((root / "cluster.json").read_text()) if (root / "cluster.json").exists() else state
        assert up.returncode == 0, up.stdout + up.stderr
        assert [n["node_id"] for n in state["nodes"]] == ["n1", "n2", "n3"]
        # `up` returns once every node routes the demo, so the commands it prints work at once
        async with requester(state["nodes"][-1]["tcp"]) as client:
            reply = await asyncio.wait_for(client.request_response(Payload(b"ada", route("demo.greeter.hello"))), REQUEST_BOUND_S)
        assert bytes(reply.data) == b"hello ada"
        status = next(line for line in up.stdout.splitlines() if " status --admin " in line).split()
        shown = await asyncio.to_thread(subprocess.run, status, capture_output=True, text=True, timeout=60, check=False)
        assert shown.returncode == 0 and "demo.greeter" in shown.stdout, shown.stdout + shown.stderr

        async def all_alive() -> bool:
            for node in state["nodes"]:
                states = await member_states(node["admin"])
                if sorted(states) != ["n1", "n2", "n3"] or set(states.values()) != {"alive"}:
                    return False
            return True

        await wait_for(all_alive, timeout=60, message="the local cluster to agree")
        for node in state["nodes"]:
            async with requester(node["tcp"]) as client:

                async def greeted() -> bool:
                    try:
                        reply = await asyncio.wait_for(
                            client.request_response(Payload(b"ada", route("demo.greeter.hello"))), REQUEST_BOUND_S
                        )
                    except TimeoutError:
                        raise  # a hang is a failure, not a retry
                    except Exception:  # noqa: BLE001 — the demo provider is still registering
                        return False
                    return bytes(reply.data) == b"hello ada"

                await wait_for(greeted, timeout=60, interval=0.2, message=f"the demo answering through {node['node_id']}")

        down = await asyncio.to_thread(run_rsbroker, "cluster", "down", "--dir", str(root), timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "stopped 4 processes" in down.stdout
        assert not [pid for pid in _pids(state) if _alive(pid)]
        assert not (root / "cluster.json").exists()
    finally:
        for pid in _pids(state):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        factory.close()
