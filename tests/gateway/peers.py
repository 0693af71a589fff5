"""The provider the gateway tests call, on ``broker.client``, and a small HTTP helper.

``gw.echo`` answers ``echo <data>``; ``gw.count`` streams ``0 .. data-1`` (``data`` empty:
without end, until cancelled); ``gw.fail`` raises (APPLICATION_ERROR); ``gw.slow`` never answers (it notes when it is
cancelled); ``gw.note`` is a
fire-and-forget. :class:`Seen` records what reached the provider so a test can tell a
refused request (never seen) from an answered one, and when an endless stream was cancelled.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from broker.client import Router
from tests.support.admin import Admin, service_instances, wait_for

SERVICE = "gw"


@dataclass
class Seen:
    """What the provider was asked, and whether an endless stream has ended."""

    calls: list[tuple[str, bytes]] = field(default_factory=list)
    notes: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    stream_ended: asyncio.Event = field(default_factory=asyncio.Event)
    slow_cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    items_sent: int = 0


def gateway_router(seen: Seen, instance: str = "p1") -> Router:
    router = Router()

    @router.response(f"{SERVICE}.echo")
    async def echo(data: bytes) -> bytes:
        seen.calls.append(("echo", data))
        return f"{instance} echo ".encode() + data

    @router.response(f"{SERVICE}.fail")
    async def fail(data: bytes) -> bytes:
        raise RuntimeError("the provider failed on purpose")

    @router.response(f"{SERVICE}.slow")
    async def slow(data: bytes) -> bytes:
        seen.calls.append(("slow", data))
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.slow_cancelled.set()
            raise
        return b"too late"

    @router.fire_and_forget(f"{SERVICE}.note")
    async def note(data: bytes) -> None:
        seen.notes.put_nowait(data)

    @router.stream(f"{SERVICE}.count")
    async def count(data: bytes) -> AsyncIterator[bytes]:
        seen.calls.append(("count", data))
        try:
            for i in range(int(data)) if data else itertools.count():
                seen.items_sent += 1
                yield str(i).encode()
        finally:
            seen.stream_ended.set()

    return router


async def http(method: str, url: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request: (status, headers, body)."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, **kwargs) as response:
            return response.status, dict(response.headers), await response.read()


async def wait_served(node: Admin, instances: int = 1, service: str = SERVICE) -> None:
    """Until ``node``'s registry has ``instances`` providers of ``service`` (local or remote)."""

    async def served() -> bool:
        return len(await service_instances(node, service)) >= instances

    await wait_for(served, message=f"{instances} provider(s) of {service!r} known")
