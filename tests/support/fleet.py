"""A fleet of devices for tests and benchmarks: raw RSocket connections, each registering
its own service ``device.<id>`` (instance ``dev-<id>``), spread over the nodes of a cluster.

::

    devices = await connect_devices(cluster.running, range(3000), transport="tcp")
    await wait_routes_everywhere(cluster.running, prefix=PREFIX, count=3000)
    assert await call_device(requester, devices[17]) == b"device.0000017"
    await close_devices(devices)

A device answers one request when the test asks it to (:func:`call_device`): the test
decides every frame, so a call that the broker routed elsewhere shows up as a timeout.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Iterable, Sequence

from broker import frames as fr
from broker.frames import FrameType
from tests.support.admin import get_json
from tests.support.brokerproc import BrokerProcess
from tests.support.rawclient import RawClient

__all__ = ["PREFIX", "Device", "call_device", "close_devices", "connect_devices", "routes_known", "service_of",
           "wait_routes_everywhere"]

PREFIX = "device."
#: Connections opened at once while connecting a fleet (the listen backlog is the limit).
CONNECT_CONCURRENCY = 200
#: Devices stay silent for the whole run: a lifetime the longest test cannot reach.
LIFETIME_MS = 3_600_000


def service_of(n: int) -> str:
    return f"{PREFIX}{n:07d}"


@dataclass
class Device:
    number: int
    node: BrokerProcess
    client: RawClient

    @property
    def service(self) -> str:
        return service_of(self.number)


async def connect_devices(
    nodes: Sequence[BrokerProcess], numbers: Iterable[int], transport: str = "tcp", per_connection: int = 1,
) -> list[Device]:
    """Device ``n`` registers ``device.<n>`` on ``nodes[i % len(nodes)]``, ``i`` the index of
    its connection; ``per_connection`` devices share one connection (a gateway), so that a
    fleet larger than this process's file limit fits."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    ordered = list(numbers)
    groups = [ordered[i:i + per_connection] for i in range(0, len(ordered), per_connection)]

    async def one(index: int, group: list[int]) -> list[Device]:
        node = nodes[index % len(nodes)]
        async with gate:
            client = await RawClient.connect(str(node.ws if transport == "ws" else node.tcp), transport)
            await client.setup([service_of(n) for n in group], f"dev-{group[0]}",
                               keepalive_ms=LIFETIME_MS // 2, max_lifetime_ms=LIFETIME_MS)
        return [Device(n, node, client) for n in group]

    connected = await asyncio.gather(*(one(i, g) for i, g in enumerate(groups)))
    return [device for group in connected for device in group]


async def close_devices(devices: Iterable[Device]) -> None:
    clients = {id(d.client): d.client for d in devices}
    await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)


async def routes_known(node: BrokerProcess, prefix: str = PREFIX) -> int:
    """How many services under ``prefix`` ``node`` can route to (counts first: one page of one)."""
    status, body = await get_json(str(node.admin), f"/api/v1/services?prefix={prefix}&limit=1")
    assert status == 200, body
    return int(body["total"])


async def wait_routes_everywhere(nodes: Sequence[BrokerProcess], count: int, timeout: float, prefix: str = PREFIX) -> None:
    """Until every node routes to ``count`` services under ``prefix``; TimeoutError names
    what each node knew at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        known = [await routes_known(n, prefix) for n in nodes]
        if all(k == count for k in known):
            return
        if loop.time() >= deadline:
            raise TimeoutError(f"nodes route to {known} of {count} services under {prefix!r}")
        await asyncio.sleep(0.1)


async def call_device(requester: RawClient, device: Device, timeout: float = 20.0) -> bytes:
    """Request-response to ``device.<n>.ping`` from ``requester``; the device answers with its
    service name. Returns the answer's data (AssertionError on anything else)."""
    sid = await requester.request(FrameType.REQUEST_RESPONSE, f"{device.service}.ping", b"ping")
    request = await device.client.expect(FrameType.REQUEST_RESPONSE, timeout=timeout)
    await device.client.send(fr.payload_frame(request.stream_id, device.service.encode(), complete=True, next_=True))
    reply = await requester.expect(FrameType.PAYLOAD, stream_id=sid, timeout=timeout)
    return reply.data
