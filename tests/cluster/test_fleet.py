"""Issue 13 on real processes: thousands of devices, each its own service, over three
``rsbroker serve`` nodes. Every node routes to every device, calls to devices on other
nodes are answered by the right device, the admin API counts and pages them, a device
that reconnects elsewhere is routed to its new node only, and devices that leave are
forgotten everywhere. Deadlines bound the waits; nothing asserts on speed."""

from __future__ import annotations

import random

import pytest

from broker.frames import FrameType
from tests.support.admin import get_json, wait_for
from tests.support.cluster import ClusterFactory
from tests.support.fleet import (
    PREFIX, call_device, close_devices, connect_devices, routes_known, service_of, wait_routes_everywhere,
)
from tests.support.rawclient import RawClient

DEVICES = 3_000
#: Bound on waiting for routes to spread; generous for a machine shared by many test runs.
SPREAD_TIMEOUT_S = 120.0


@pytest.mark.parametrize("transport", ["tcp", "ws"])
async def test_thousands_of_devices_are_routable_from_every_node(cluster_factory: ClusterFactory, transport: str) -> None:
    cluster = cluster_factory.start(3)
    await cluster.wait_converged()
    nodes = cluster.running
    devices = await connect_devices(nodes, range(DEVICES), transport)
    requesters = {}
    try:
        for node in nodes:
            requesters[node.node_id] = client = await RawClient.tcp(node.tcp)
            await client.setup()
        await wait_routes_everywhere(nodes, DEVICES, SPREAD_TIMEOUT_S)

        rng = random.Random(13)
        for device in rng.sample(devices, 30):
            caller = rng.choice([n for n in nodes if n is not device.node])
            assert await call_device(requesters[caller.node_id], device) == device.service.encode()

        # Counts first, then pages; filters by prefix and by node.
        admin = str(nodes[0].admin)
        status, first = await get_json(admin, f"/api/v1/services?prefix={PREFIX}&limit=100")
        assert status == 200 and first["total"] == DEVICES and len(first["services"]) == 100
        assert list(first["services"]) == [service_of(n) for n in range(100)]
        status, second = await get_json(admin, f"/api/v1/services?prefix={PREFIX}&limit=100&cursor={first['next_cursor']}")
        assert list(second["services"])[0] == service_of(100)
        status, on_n2 = await get_json(admin, f"/api/v1/services?prefix={PREFIX}&node=n2&limit=1")
        assert on_n2["total"] == len([d for d in devices if d.node.node_id == "n2"])
        status, topology = await get_json(admin, "/api/v1/topology")
        assert {n["node_id"]: n["services_total"] for n in topology["nodes"]} == {
            node.node_id: len([d for d in devices if d.node is node]) for node in nodes}
        status, bad = await get_json(admin, "/api/v1/services?limit=0")
        assert status == 400 and bad["parameter"] == "limit"

        # A device reconnects to another node: every node routes it there, and only there.
        moved = devices[0]
        await moved.client.close()
        target = next(n for n in nodes if n is not moved.node)
        [moved] = await connect_devices([target], [moved.number], transport)
        devices[0] = moved

        async def routed_to_target_everywhere() -> bool:
            for node in nodes:
                status, body = await get_json(str(node.admin), f"/api/v1/services?prefix={moved.service}")
                providers = body["services"].get(moved.service, {}).get("providers", [])
                if [p["node"] for p in providers] != [target.node_id]:
                    return False
            return True

        await wait_for(routed_to_target_everywhere, timeout=SPREAD_TIMEOUT_S, message=f"{moved.service} moved to {target.node_id}")
        caller = next(n for n in nodes if n is not target)
        assert await call_device(requesters[caller.node_id], moved) == moved.service.encode()

        # Devices that leave are forgotten on every node.
        leaving = [d for d in devices if d.node.node_id == "n3"]
        await close_devices(leaving)
        await wait_routes_everywhere(nodes, DEVICES - len(leaving), SPREAD_TIMEOUT_S)
        gone = leaving[0]
        sid = await requesters["n1"].request(FrameType.REQUEST_RESPONSE, f"{gone.service}.ping", b"")
        frame = await requesters["n1"].expect(FrameType.ERROR, stream_id=sid)
        assert frame.error[1].startswith(f"no provider for service '{gone.service}'")
        assert await routes_known(nodes[1]) == DEVICES - len(leaving)
    finally:
        for client in requesters.values():
            await client.close()
        await close_devices(devices)
