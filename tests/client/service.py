"""A ``broker.client`` provider with every interaction model and a probe on what it did.

Routes of ``SERVICE`` (the ``service`` argument):

* ``.hello`` ``hello <data>``; ``.echo`` the data; ``.route`` the route the handler saw
  (through its :class:`~broker.client.Request`)
* ``.count`` stream ``1`` .. ``N``; ``.ticks`` stream ``0, 1, ...`` forever, counting what it
  produced and noting when it was closed; ``.broken`` stream: one item, then an error
* ``.upper`` channel: each inbound item upper-cased, noting when it was closed
* ``.log`` fire-and-forget, recorded; ``.notify`` metadata push, its route recorded
* ``.fail`` (ValueError), ``.busy`` (RejectedError), ``.gives_up`` (CanceledError),
  ``.picky`` (InvalidError): errors
* ``.hold`` request-response that waits until released, noting a cancellation
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from broker.client import CanceledError, InvalidError, RejectedError, Request, Router


@dataclass
class Probe:
    """What the provider saw; events let a test wait on a condition instead of sleeping."""

    produced: int = 0
    logged: list[bytes] = field(default_factory=list)
    logged_event: asyncio.Event = field(default_factory=asyncio.Event)
    pushed: list[bytes] = field(default_factory=list)
    pushed_event: asyncio.Event = field(default_factory=asyncio.Event)
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    channel_closed: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    hold_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def service_router(service: str, probe: Probe) -> Router:
    router = Router()

    @router.response(f"{service}.hello")
    async def hello(data: bytes) -> bytes:
        return b"hello " + data

    @router.response(f"{service}.echo")
    async def echo(data: bytes) -> bytes:
        return data

    @router.response(f"{service}.route")
    async def route(data: bytes, request: Request) -> bytes:
        return request.route.encode()

    @router.stream(f"{service}.count")
    async def count(data: bytes) -> AsyncIterator[bytes]:
        for i in range(1, int(data) + 1):
            yield str(i).encode()

    @router.stream(f"{service}.ticks")
    async def ticks(data: bytes) -> AsyncIterator[bytes]:
        try:
            while True:
                probe.produced += 1
                yield str(probe.produced - 1).encode()
        finally:
            probe.stream_closed.set()

    @router.stream(f"{service}.broken")
    async def broken(data: bytes) -> AsyncIterator[bytes]:
        yield b"first"
        raise ValueError("broken stream")

    @router.channel(f"{service}.upper")
    async def upper(items: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for item in items:
                yield item.upper()
        finally:
            probe.channel_closed.set()

    @router.fire_and_forget(f"{service}.log")
    async def log(data: bytes) -> None:
        probe.logged.append(data)
        probe.logged_event.set()

    @router.metadata_push(f"{service}.notify")
    async def notify(metadata: bytes, request: Request) -> None:
        probe.pushed.append(request.route.encode())
        probe.pushed_event.set()

    @router.response(f"{service}.fail")
    async def fail(data: bytes) -> bytes:
        raise ValueError("boom")

    @router.response(f"{service}.busy")
    async def busy(data: bytes) -> bytes:
        raise RejectedError("busy, try another")

    @router.response(f"{service}.gives_up")
    async def gives_up(data: bytes) -> bytes:
        raise CanceledError("gave up")

    @router.response(f"{service}.picky")
    async def picky(data: bytes) -> bytes:
        raise InvalidError("not a number")

    @router.response(f"{service}.hold")
    async def hold(data: bytes) -> bytes:
        probe.held.set()
        try:
            await probe.release.wait()
        except asyncio.CancelledError:
            probe.hold_cancelled.set()
            raise
        return b"released"

    return router
