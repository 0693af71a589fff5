"""``rsbroker devices`` against real clusters: the JSON summary, calls to devices on any
node, and fail-over of a dead node's devices to the survivor (issue 13)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time

import pytest

from broker.client import ApplicationError, RejectedError, connect
from tests.support.admin import get_json
from tests.support.brokerproc import rsbroker_command
from tests.support.cluster import ClusterFactory

pytestmark = pytest.mark.asyncio


async def _devices_on(admin: str) -> int:
    """Connections to this node registering a ``device.`` service."""
    status, body = await get_json(admin, "/api/v1/connections?prefix=device.&limit=1")
    return int(body["total"]) if status == 200 else -1


async def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def _devices(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *rsbroker_command(), "devices", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def test_a_small_fleet_over_two_nodes_reports_its_summary() -> None:
    with ClusterFactory() as factory:
        cluster = factory.start(2)
        await cluster.wait_converged()
        nodes = ",".join(f"ws://{n.ws}/rsocket" for n in cluster)
        sim = await _devices("--nodes", nodes, "--count", "200", "--rate", "400", "--per-process", "100",
                             "--calls", "50", "--telemetry", "2/s", "--duration", "1")
        out, err = await asyncio.wait_for(sim.communicate(), 180)
        assert sim.returncode == 0, err.decode()[-2000:]
        summary = json.loads(out)
        assert summary["devices"] == summary["connected"] == 200
        assert summary["processes"] == summary["workers_reported"] == 2
        assert summary["failed"] == 0 and summary["failures"] == {}
        assert summary["connect_rate_per_s"] > 0
        calls = summary["calls"]
        assert calls["sent"] == calls["ok"] == 50 and calls["failed"] == {}
        assert 0 < calls["p50_ms"] <= calls["p99_ms"]
        assert summary["telemetry"]["sent"] > 0
        assert err == b""  # not a terminal: no progress bar


async def test_the_devices_of_a_killed_node_move_to_the_survivor() -> None:
    with ClusterFactory() as factory:
        cluster = factory.start(2)
        await cluster.wait_converged()
        n1, n2 = cluster["n1"], cluster["n2"]
        assert n1.admin and n2.admin
        nodes = f"ws://{n1.ws}/rsocket,ws://{n2.ws}/rsocket"
        sim = await _devices("--nodes", nodes, "--count", "100", "--rate", "400", "--duration", "600",
                             "--backoff-max", "1")
        try:
            async def all_connected() -> bool:
                return await _devices_on(n1.admin) + await _devices_on(n2.admin) == 100

            await _wait(all_connected, 60, "100 devices over two nodes")
            on_n2 = await _devices_on(n2.admin)
            assert on_n2 > 0
            n2.kill()

            async def moved() -> bool:
                return await _devices_on(n1.admin) == 100

            await _wait(moved, 60, "the killed node's devices on n1")
        finally:
            sim.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(sim.communicate(), 120)
        summary = json.loads(out)
        assert summary["connected"] == 100
        assert summary["reconnects"] >= on_n2
        # the fail-over timeline: every moved device, each phase in order, all within the run
        timeline = summary["failover"]
        assert timeline["moved"] == summary["reconnects"]
        assert timeline["first_loss_at"] <= timeline["last_back_at"]
        back = timeline["back_after_first_loss_s"]
        assert 0 <= back["p50"] <= back["p90"] <= back["p99"] <= back["max"] < 60
        for name, phase in timeline["phases_s"].items():
            assert 0 <= phase["p50"] <= phase["max"], (name, phase)
        assert timeline["phases_s"]["backoff"]["max"] <= 1.0  # --backoff-max 1: jittered within it


async def test_a_device_answers_its_calls_and_refuses_what_it_does_not_serve() -> None:
    with ClusterFactory() as factory:
        cluster = factory.start(1)
        node = cluster["n1"]
        sim = await _devices("--nodes", f"ws://{node.ws}/rsocket", "--count", "3", "--rate", "100", "--duration", "600")
        try:
            assert node.admin
            admin = node.admin

            async def all_connected() -> bool:
                return await _devices_on(admin) == 3

            await _wait(all_connected, 60, "3 devices")
            async with connect(str(node.tcp)) as client:
                assert await client.request_response("device.1.ping", b"hello") == b"hello"
                assert json.loads(await client.request_response("device.2.info", b"")) == {"id": 2, "reconnects": 0}
                with pytest.raises(ApplicationError, match="device 0 has no route 'device.0.reboot'"):
                    await client.request_response("device.0.reboot", b"")
                with pytest.raises(RejectedError, match="request-response only"):
                    async for _ in client.request_stream("device.0.ping", b"x"):
                        pass
        finally:
            sim.send_signal(signal.SIGINT)
            await asyncio.wait_for(sim.communicate(), 120)


async def test_devices_over_tcp_answer_calls_too() -> None:
    with ClusterFactory() as factory:
        cluster = factory.start(2)
        await cluster.wait_converged()
        nodes = ",".join(str(n.tcp) for n in cluster)
        sim = await _devices("--nodes", nodes, "--count", "60", "--rate", "400", "--calls", "20", "--telemetry", "2/s",
                             "--duration", "1")
        out, err = await asyncio.wait_for(sim.communicate(), 180)
        assert sim.returncode == 0, err.decode()[-2000:]
        summary = json.loads(out)
        assert summary["connected"] == 60 and summary["failures"] == {}
        assert summary["calls"]["ok"] == 20 and summary["telemetry"]["sent"] > 0


async def test_devices_refused_with_a_retry_hint_come_back_then() -> None:
    """A node over its --max-setups-per-s refuses with ``retry after N ms``: every device comes
    back after its hint (jittered) and registers; none gives up."""
    with ClusterFactory() as factory:
        cluster = factory.start(1, "--max-setups-per-s", "40")
        node = cluster["n1"]
        sim = await _devices("--nodes", f"ws://{node.ws}/rsocket", "--count", "150", "--rate", "1000",
                             "--connect-timeout", "60")
        out, err = await asyncio.wait_for(sim.communicate(), 180)
        assert sim.returncode == 0, err.decode()[-2000:]
        summary = json.loads(out)
        assert summary["connected"] == 150 and summary["failed"] == 0
        assert summary["failures"].get("setup_rate_limited", 0) > 0, summary["failures"]
        assert set(summary["failures"]) == {"setup_rate_limited"}, summary["failures"]
