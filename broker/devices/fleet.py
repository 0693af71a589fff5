"""The devices of one simulator process: each a :class:`~broker.devices.wire.WireDevice` that
registers ``device.<id>``, answers calls and fails over when its node dies.

The fleet owns what the devices share: the counters, the node targets (upgrade requests
built once per node), and two tickers, so that the process wakes a few times per period
however many devices it holds:

* keepalive: every tenth of the keepalive interval a tenth of the devices send a KEEPALIVE
  (and a device whose node was silent for the lifetime drops it and moves on);
* telemetry (``--telemetry``): every tenth of the period a tenth of the devices send a
  fire-and-forget to the telemetry route.

Runs in a child process (:func:`worker_main`); reports to the parent through a queue:
``("progress", index, connected, failed)`` a few times a second and ``("done", index, stats)``.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from broker import metadata as md
from broker.client.handshake import client_setup_frame
from broker.devices.wire import Move, Target, WireDevice
from broker.fdlimit import raise_open_file_limit
from broker.frames import FrameType, keepalive_frame, request_frame

__all__ = ["Fleet", "FleetSpec", "Move", "worker_main"]

#: how often a worker tells the parent how far it got, seconds
PROGRESS_EVERY_S = 0.25
#: ticks per period: each tick serves 1/TICKS of the devices
TICKS = 10
#: the shortest sleep between batches of first dials, seconds
PACING_S = 0.005
#: how long one attempt (connect, upgrade, SETUP answered) may take before the next node is
#: tried, seconds: a node busy with a storm answers late, and giving up early only adds
#: reconnects to the storm
SETUP_TIMEOUT_S = 10.0


@dataclass
class FleetSpec:
    """What one worker process runs (picklable: it crosses to the child)."""

    index: int
    nodes: list[str]
    ids: list[int]
    #: connects started per second by this process
    rate: float
    register: str
    telemetry_per_s: float
    telemetry_route: str
    keepalive_s: float
    lifetime_s: float
    connect_timeout_s: float
    backoff_max_s: float
    backoff_base_s: float = 0.1
    token: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Fleet:
    """Every device of one process, their connecting, tickers and counters."""

    def __init__(self, spec: FleetSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.loop = loop
        self.devices: list[WireDevice] = []
        self.connected = 0
        self.failed = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self.moves: list[Move] = []
        self.telemetry_sent = 0
        self.telemetry_skipped = 0
        self.first_connect_at = 0.0
        self.last_connected_at = 0.0
        self.stopping = False
        self.setup_timeout_s = SETUP_TIMEOUT_S
        #: loop time after which a device that never registered stops trying
        self.deadline = loop.time() + spec.connect_timeout_s
        self._targets: dict[str, Target] = {}
        self._settled = asyncio.Event()

    def target(self, address: str) -> Target:
        """How to dial ``address`` (built once per node)."""
        target = self._targets.get(address)
        if target is None:
            target = self._targets[address] = Target.of(address, self.spec.headers)
        return target

    def registered(self, device: WireDevice) -> None:
        """``device`` registered for the first time."""
        self.connected += 1
        self.last_connected_at = time.time()
        self._settle()

    def gave_up(self, device: WireDevice) -> None:
        """``device`` did not register within the connect timeout."""
        self.failed += 1
        self._settle()

    def _settle(self) -> None:
        if self.connected + self.failed >= len(self.spec.ids):
            self._settled.set()

    async def connect_all(self) -> None:
        """Start every device's first attempt at ``spec.rate`` per second; until all registered
        or gave up."""
        spec = self.spec
        loop = self.loop
        started = loop.time()
        self.deadline = started + len(spec.ids) / spec.rate + spec.connect_timeout_s
        self.first_connect_at = time.time()
        for i, number in enumerate(spec.ids):
            wait = started + i / spec.rate - loop.time()
            if wait > 0:  # those due meanwhile go in one batch: a wake-up costs more than a dial
                await asyncio.sleep(max(wait, PACING_S))
            service = spec.register.format(id=number)
            setup = client_setup_frame(
                services=[service], instance=f"dev-{number}", weight=1, tags=None, token=spec.token, topology=True,
                data_mime="application/octet-stream", keepalive_s=spec.keepalive_s, max_lifetime_s=spec.lifetime_s,
            )
            device = WireDevice(self, number, service, setup, spec.nodes)
            self.devices.append(device)
            device.dial()
        if spec.ids:
            await self._settled.wait()

    async def keepalive(self) -> None:
        """Each registered device sends a KEEPALIVE once per interval; one silent for the
        lifetime (a paused node) is dropped and moves on."""
        spec = self.spec
        frame = keepalive_frame(True)
        tick = 0
        while not self.stopping:
            await asyncio.sleep(spec.keepalive_s / TICKS)
            now = self.loop.time()
            for device in self.devices[tick % TICKS :: TICKS]:
                if device.registered:
                    if now - device.last_heard > spec.lifetime_s:
                        device.drop("keepalive_timeout")
                    else:
                        device.send(frame)
            tick += 1

    async def telemetry(self) -> None:
        """Each device sends one fire-and-forget per period to the telemetry route."""
        spec = self.spec
        route = md.route_metadata(spec.telemetry_route)
        tick = 0
        while not self.stopping:
            await asyncio.sleep(1.0 / spec.telemetry_per_s / TICKS)
            for device in self.devices[tick % TICKS :: TICKS]:
                frame = request_frame(FrameType.REQUEST_FNF, device.stream_id(), route, b'{"id":%d,"t":%d}' % (device.number, tick))
                if device.send(frame):
                    self.telemetry_sent += 1
                else:
                    self.telemetry_skipped += 1
            tick += 1

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "failed": self.failed,
            "failures": dict(self.failures),
            "reconnects": sum(d.reconnects for d in self.devices),
            "telemetry_sent": self.telemetry_sent,
            "telemetry_skipped": self.telemetry_skipped,
            "first_connect_at": self.first_connect_at,
            "last_connected_at": self.last_connected_at,
            "moves": [tuple(m) for m in self.moves],
        }

    def close(self) -> None:
        self.stopping = True
        for device in self.devices:
            device.close()


async def run_fleet(spec: FleetSpec, queue: Any, stop_flag: Any) -> None:
    """Connect, keep the devices (and their telemetry) until the parent sets ``stop_flag``."""
    fleet = Fleet(spec, asyncio.get_running_loop())
    stop = asyncio.Event()

    async def report() -> None:
        while not stop.is_set():
            queue.put(("progress", spec.index, fleet.connected, fleet.failed))
            if stop_flag.is_set():
                stop.set()
                break
            await asyncio.sleep(PROGRESS_EVERY_S)

    tasks = [asyncio.create_task(report()), asyncio.create_task(fleet.keepalive()), asyncio.create_task(fleet.connect_all())]
    if spec.telemetry_per_s > 0:
        tasks.append(asyncio.create_task(fleet.telemetry()))
    await stop.wait()
    fleet.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    queue.put(("progress", spec.index, fleet.connected, fleet.failed))
    queue.put(("done", spec.index, fleet.stats()))
    await asyncio.sleep(0.1)  # the close frames leave before the process ends


def worker_main(spec: FleetSpec, queue: Any, stop_flag: Any) -> None:
    """Entry point of a simulator child process."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the fleet stops
    raise_open_file_limit()
    try:
        import uvloop

        uvloop.run(run_fleet(spec, queue, stop_flag))
    except ImportError:  # pragma: no cover - Windows
        asyncio.run(run_fleet(spec, queue, stop_flag))
