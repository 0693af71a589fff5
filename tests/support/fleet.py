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


async def connect_devices(nodes: Sequence[BrokerProcess], numbers: Iterable[int], transport: str = "tcp") -> list[Device]:
    """Device ``n`` connects to ``nodes[n % len(nodes)]`` and registers ``device.<n>``."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(n: int) -> Device:
        node = nodes[n % len(nodes)]
        async with gate:
            client = await RawClient.connect(str(node.ws if transport == "ws" else node.tcp), transport)
            await client.setup([service_of(n)], f"dev-{n}", keepalive_ms=LIFETIME_MS // 2, max_lifetime_ms=LIFETIME_MS)
        return Device(n, node, client)

    return list(await asyncio.gather(*(one(n) for n in numbers)))


async def close_devices(devices: Iterable[Device]) -> None:
    await asyncio.gather(*(d.client.close() for d in devices), return_exceptions=True)


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
