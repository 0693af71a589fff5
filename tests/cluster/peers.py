"""rsocket-py peers for the cluster tests: providers that say who answered, requesters, steady load.

* :func:`who_router` — every interaction model of ``tests.relay.rsocket_provider`` plus
  ``<service>.who``, a request-response answering with the provider's instance name, so a
  test can count which provider served each request; :func:`client_who_router` is the same
  ``.who`` for a ``broker.client`` provider (``connect_cluster``).
* :func:`provider` / :func:`requester` — ``broker.client.rsocketpy.connect`` on one node of a cluster,
  closed without complaint when their node was killed under them.
* :class:`SteadyLoad` — a few workers sending request-response in a loop, each request bounded
  by :data:`REQUEST_BOUND_S`, every outcome recorded with its start and end time (monotonic);
  a request that hits the bound is recorded as ``"hung"`` — the failure the cluster must
  never produce.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Self

from rsocket.awaitable.awaitable_rsocket import AwaitableRSocket
from rsocket.helpers import create_response
from rsocket.payload import Payload
from rsocket.routing.request_router import RequestRouter

from broker.client import Router
from broker.client.rsocketpy import connect, route
from tests.relay.rsocket_provider import Recorder, router_for
from tests.support.brokerproc import BrokerProcess, split_hostport

__all__ = [
    "REQUEST_BOUND_S",
    "Outcome",
    "SteadyLoad",
    "ask_who",
    "client_who_router",
    "provider",
    "requester",
    "who_router",
]

#: No request may take longer than this, whatever fails: a dead node's streams end with an
#: ERROR within the link keepalive lifetime (5 s), far below this bound.
REQUEST_BOUND_S = 30.0


def who_router(service: str, instance: str, recorder: Recorder | None = None) -> RequestRouter:
    """Every model of ``router_for(service)`` plus ``<service>.who`` → ``instance``."""
    router = router_for(service, recorder)

    @router.response(f"{service}.who")
    async def who(payload: Payload, composite_metadata: Any) -> Any:
        return create_response(instance.encode())

    return router


def client_who_router(
    service: str, instance: str, broken: Callable[[], bool] = lambda: False, delay_s: float = 0.0
) -> Router:
    """A ``broker.client`` router answering ``<service>.who`` with ``instance`` after
    ``delay_s`` seconds, or failing with APPLICATION_ERROR ``<instance> is broken`` while
    ``broken()``."""
    router = Router()

    @router.response(f"{service}.who")
    async def who(data: bytes) -> bytes:
        if delay_s:
            await asyncio.sleep(delay_s)
        if broken():
            raise RuntimeError(f"{instance} is broken")
        return instance.encode()

    return router


@contextlib.asynccontextmanager
async def _tolerant(client: Any) -> AsyncIterator[Any]:
    """Enter ``client``; on exit ignore errors of a connection its broker already dropped."""
    stack = contextlib.AsyncExitStack()
    value = await stack.enter_async_context(client)
    try:
        yield value
    finally:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(stack.aclose(), 10)


@contextlib.asynccontextmanager
async def provider(
    node: BrokerProcess | str, service: str, instance: str, recorder: Recorder | None = None, **options: Any
) -> AsyncIterator[Any]:
    """An rsocket-py provider of ``service`` (see :func:`who_router`) connected to ``node``
    (a broker process or its ``host:port`` TCP address)."""
    host, port = split_hostport(node if isinstance(node, str) else str(node.tcp))
    client = connect(host, port, services=[service], router=who_router(service, instance, recorder), instance=instance, **options)
    async with _tolerant(client) as connected:
        yield connected


@contextlib.asynccontextmanager
async def requester(node: BrokerProcess | str, **options: Any) -> AsyncIterator[AwaitableRSocket]:
    """An rsocket-py requester on ``node`` (a broker process or its ``host:port`` TCP address)."""
    host, port = split_hostport(node if isinstance(node, str) else str(node.tcp))
    async with _tolerant(connect(host, port, **options)) as client:
        yield AwaitableRSocket(client)


async def ask_who(client: Any, service: str, token: str | None = None) -> str:
    """One ``<service>.who`` request: the answering instance's name. ``client`` is an
    rsocket-py ``AwaitableRSocket`` or a ``broker.client`` connection or cluster client
    (whose token, if any, is its connection's)."""
    if isinstance(client, AwaitableRSocket):
        reply = await asyncio.wait_for(client.request_response(Payload(b"", route(f"{service}.who", token))), REQUEST_BOUND_S)
        return bytes(reply.data).decode()
    return (await asyncio.wait_for(client.request_response(f"{service}.who", b""), REQUEST_BOUND_S)).decode()


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    #: the answering instance, or None when the request failed
    instance: str | None
    #: "ok", "error" or "hung"
    result: str
    detail: str = ""


class SteadyLoad:
    """``workers`` loops of ``<service>.who`` on ``client`` until :meth:`stop`."""

    def __init__(self, client: Any, service: str, workers: int = 4, pause_s: float = 0.01) -> None:
        self.client = client
        self.service = service
        self.workers = workers
        self.pause_s = pause_s
        self.outcomes: list[Outcome] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

    async def _worker(self) -> None:
        while self._running:
            started = time.monotonic()
            try:
                instance = await asyncio.wait_for(ask_who(self.client, self.service), REQUEST_BOUND_S)
            except TimeoutError:
                self.outcomes.append(Outcome(started, time.monotonic(), None, "hung"))
            except Exception as exc:  # noqa: BLE001 — rsocket-py raises its own error types for ERROR frames
                self.outcomes.append(Outcome(started, time.monotonic(), None, "error", f"{type(exc).__name__}: {exc}"))
            else:
                self.outcomes.append(Outcome(started, time.monotonic(), instance, "ok"))
            await asyncio.sleep(self.pause_s)

    def start(self) -> Self:
        self._running = True
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
        return self

    async def stop(self) -> None:
        """Let every request in flight finish (each is bounded), then stop."""
        self._running = False
        await asyncio.gather(*self._tasks)

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- reading the record -----------------------------------------------------------------

    def since(self, t: float) -> list[Outcome]:
        """Outcomes of requests started at or after ``t``."""
        return [o for o in self.outcomes if o.started >= t]

    def ok_streak(self) -> int:
        """How many of the latest outcomes (by end time) succeeded in a row."""
        streak = 0
        for outcome in sorted(self.outcomes, key=lambda o: o.ended, reverse=True):
            if outcome.result != "ok":
                break
            streak += 1
        return streak

    def by_instance(self, outcomes: list[Outcome] | None = None) -> Counter[str]:
        return Counter(o.instance for o in (self.outcomes if outcomes is None else outcomes) if o.instance)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result != "ok"]
