"""The devices of one simulator process: each a cluster client that registers ``device.<id>``.

A device is a :class:`broker.client.ClusterClient` (one WebSocket or TCP connection, the
bare RFC 6455 transport of :mod:`broker.client.websocket`) whose SETUP registers its own
service and whose router answers ``<service>.ping`` (echo) and ``<service>.info`` (its id
and connection count). When its node dies it moves to another node with full-jitter
backoff; a node shedding a storm tells it when to come back (``retry after N ms``).

Telemetry is one ticker per process, not a timer per device: every tenth of the period it
sends a fire-and-forget from one tenth of the devices, so the process wakes ten times per
period however many devices it holds.

Runs in a child process (:func:`worker_main`); reports to the parent through a queue:
``("progress", index, connected, failed)`` a few times a second and ``("done", index, stats)``.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from broker.backoff import Backoff
from broker.client import ClusterClient, ConnectionLostError, Router, RSocketError, SetupError
from broker.client.errors import retry_after_s
from broker.fdlimit import raise_open_file_limit

#: how often a worker tells the parent how far it got, seconds
PROGRESS_EVERY_S = 0.25
#: telemetry ticks per period: each tick sends from 1/TICKS of the devices
TELEMETRY_TICKS = 10
#: how long a device waits for the answer to its SETUP before trying the next node, seconds
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


def failure_reason(exc: BaseException) -> str:
    """A short, countable name for why a connection attempt failed."""
    if isinstance(exc, SetupError):
        return "setup_rate_limited" if retry_after_s(exc) is not None else "setup_rejected"
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionLostError):
        return "connection_lost"
    if isinstance(exc, OSError):
        return f"os_error_{exc.errno}" if exc.errno else "os_error"
    return type(exc).__name__


class Device(ClusterClient):
    """One simulated device; counts its failed attempts by reason into the fleet's counter."""

    def __init__(
        self, number: int, service: str, nodes: list[str], failures: collections.Counter[str], moves: list[Move], **options: Any
    ) -> None:
        router = Router()

        @router.response(f"{service}.ping")
        async def ping(data: bytes) -> bytes:
            return data

        @router.response(f"{service}.info")
        async def info(data: bytes) -> bytes:
            return f'{{"id": {number}, "reconnects": {self.reconnects}}}'.encode()

        # start at a node of its own, so a fleet spreads evenly over the list
        start = number % len(nodes)
        super().__init__(nodes[start:] + nodes[:start], services=[service], router=router, instance=f"dev-{number}", **options)
        self.number = number
        self._failures = failures
        self._moves = moves

    def _failed(self, address: str, exc: BaseException) -> None:
        super()._failed(address, exc)
        self._failures[failure_reason(exc)] += 1

    def _reconnected(self, started: float, connection: Any) -> None:
        now = asyncio.get_running_loop().time()
        wall = time.time() - now  # loop time -> wall clock, which the parent and a benchmark share
        transport = connection.transport
        self._moves.append(Move(self.lost_at + wall, self.lost_wait_s, started + wall, transport.connected_at + wall,
                                transport.ready_at + wall, now + wall))


class Move(NamedTuple):
    """One device's way back after losing its node (wall-clock seconds), for the summary's
    fail-over timeline: connection lost → backoff → attempt started → TCP connected →
    upgraded → SETUP answered (registered). Earlier failed attempts fall between ``lost``
    and ``started`` (they are counted by reason in ``failures``)."""

    lost: float
    backoff_s: float
    started: float
    connected: float
    upgraded: float
    back: float


class Fleet:
    """Every device of one process, their connecting, telemetry and counters."""

    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        self.devices: list[Device] = []
        self.connected = 0
        self.failed = 0
        self.failures: collections.Counter[str] = collections.Counter()
        self.moves: list[Move] = []
        self.telemetry_sent = 0
        self.telemetry_skipped = 0
        self.first_connect_at = 0.0
        self.last_connected_at = 0.0

    async def connect_all(self) -> None:
        """Start every device's connection at ``spec.rate`` per second (each finishes in its own task)."""
        spec = self.spec
        options = {
            "keepalive_s": spec.keepalive_s,
            "max_lifetime_s": spec.lifetime_s,
            "backoff_max_s": spec.backoff_max_s,
            "backoff_base_s": spec.backoff_base_s,
            # a node busy with a storm answers SETUP late: giving up at the cluster default of
            # 2 s would only add reconnects to the storm
            "setup_timeout_s": SETUP_TIMEOUT_S,
            "request_wait_s": spec.connect_timeout_s,
            "token": spec.token,
            "headers": spec.headers or None,
        }
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.first_connect_at = time.time()
        pending: set[asyncio.Task[None]] = set()
        for i, number in enumerate(spec.ids):
            due = started + i / spec.rate
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            device = Device(number, spec.register.format(id=number), spec.nodes, self.failures, self.moves, **options)
            self.devices.append(device)
            task = loop.create_task(self._start(device))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)

    async def _start(self, device: Device) -> None:
        """Connect ``device`` within the connect timeout. A refused first SETUP is tried again
        with backoff too (a cluster client gives up on it): in a storm a node may time out a
        SETUP it had no time to read, and a simulator should measure that, not stop at it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.spec.connect_timeout_s
        backoff = Backoff(self.spec.backoff_base_s, self.spec.backoff_max_s)
        while True:
            try:
                await device.start(timeout_s=max(0.1, deadline - loop.time()))
                break
            except SetupError as exc:
                if loop.time() + 0.1 < deadline:
                    await asyncio.sleep(min(backoff.next_delay(), max(0.0, deadline - loop.time())))
                    continue
                error: Exception = exc
            except Exception as exc:  # noqa: BLE001 - every failure is counted by its reason
                error = exc
            self.failed += 1
            if not device.failed_attempts:  # attempts that failed are counted by Device._failed
                self.failures[failure_reason(error)] += 1
            return
        self.connected += 1
        self.last_connected_at = time.time()

    async def telemetry(self, stop: asyncio.Event) -> None:
        """Each device sends one fire-and-forget per period to the telemetry route."""
        spec = self.spec
        tick_s = 1.0 / spec.telemetry_per_s / TELEMETRY_TICKS
        route = spec.telemetry_route
        tick = 0
        while not stop.is_set():
            await asyncio.sleep(tick_s)
            part = tick % TELEMETRY_TICKS
            for device in self.devices[part::TELEMETRY_TICKS]:
                connection = device.connection
                if connection is None or connection.is_closed:
                    self.telemetry_skipped += 1
                    continue
                try:
                    await connection.fire_and_forget(route, b'{"id":%d,"t":%d}' % (device.number, tick))
                except RSocketError:
                    self.telemetry_skipped += 1
                    continue
                self.telemetry_sent += 1
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

    async def close(self) -> None:
        await asyncio.gather(*(d.close() for d in self.devices), return_exceptions=True)


async def run_fleet(spec: FleetSpec, queue: Any, stop_flag: Any) -> None:
    """Connect, keep the devices (and their telemetry) until the parent sets ``stop_flag``."""
    fleet = Fleet(spec)
    stop = asyncio.Event()

    async def report() -> None:
        while not stop.is_set():
            queue.put(("progress", spec.index, fleet.connected, fleet.failed))
            if stop_flag.is_set():
                stop.set()
                break
            await asyncio.sleep(PROGRESS_EVERY_S)

    reporter = asyncio.create_task(report())
    ticker = asyncio.create_task(fleet.telemetry(stop)) if spec.telemetry_per_s > 0 else None
    connecting = asyncio.create_task(fleet.connect_all())
    await stop.wait()
    connecting.cancel()
    for task in (reporter, ticker, connecting):
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
    queue.put(("progress", spec.index, fleet.connected, fleet.failed))
    stats = fleet.stats()
    await fleet.close()
    queue.put(("done", spec.index, stats))


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
