"""The chaos proxy itself, in front of a plain echo server on loopback: the faults the
cluster tests rely on do what they say (forward, blackhole one or both ways, delay, reset)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.admin import wait_for
from tests.support.chaos import ChaosProxy, Direction


class Echo:
    """A TCP echo server that also records what reached it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.received += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    @property
    def address(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    server = Echo()
    server.server = await asyncio.start_server(server._handle, "127.0.0.1", 0)
    try:
        yield server
    finally:
        server.server.close()


@pytest.fixture
async def proxy(echo: Echo) -> AsyncIterator[ChaosProxy]:
    chaos = await ChaosProxy.start(upstream=echo.address)
    try:
        yield chaos
    finally:
        await chaos.close()


async def _open(proxy: ChaosProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = proxy.address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def test_forwards_both_ways(proxy: ChaosProxy, echo: Echo) -> None:
    reader, writer = await _open(proxy)
    writer.write(b"hello")
    assert await asyncio.wait_for(reader.readexactly(5), 20) == b"hello"
    assert echo.received == b"hello" and proxy.stats["forwarded_bytes"] == 10
    writer.close()


async def test_an_upstream_partition_blackholes_requests_until_healed(proxy: ChaosProxy, echo: Echo) -> None:
    reader, writer = await _open(proxy)
    proxy.partition(Direction.UPSTREAM)
    writer.write(b"lost")
    await wait_for(lambda: proxy.stats["blackholed_bytes"] == 4, message="the bytes reached the proxy")
    assert echo.received == b""  # discarded, and the connection stays open
    proxy.heal()
    writer.write(b"kept")
    assert await asyncio.wait_for(reader.readexactly(4), 20) == b"kept"
    assert echo.received == b"kept"
    writer.close()


async def test_a_downstream_partition_blackholes_only_answers(proxy: ChaosProxy, echo: Echo) -> None:
    reader, writer = await _open(proxy)
    proxy.partition(Direction.DOWNSTREAM)
    writer.write(b"ping")
    await wait_for(lambda: proxy.stats["blackholed_bytes"] == 4, message="the echo was discarded")
    assert echo.received == b"ping"
    proxy.heal()
    writer.write(b"pong")
    assert await asyncio.wait_for(reader.readexactly(4), 20) == b"pong"
    writer.close()


async def test_a_full_partition_also_swallows_new_connections(proxy: ChaosProxy, echo: Echo) -> None:
    proxy.partition()
    _, writer = await _open(proxy)
    writer.write(b"nobody")
    await wait_for(lambda: proxy.stats["blackholed_bytes"] == 6, message="the bytes reached the proxy")
    assert echo.received == b"" and proxy.open_connections == 1
    writer.close()


async def test_delay_holds_every_chunk(proxy: ChaosProxy) -> None:
    proxy.delay_s = 0.2
    reader, writer = await _open(proxy)
    started = time.monotonic()
    writer.write(b"slow")
    assert await asyncio.wait_for(reader.readexactly(4), 20) == b"slow"
    assert time.monotonic() - started >= 0.4  # a lower bound: once up, once back; never flaky
    writer.close()


async def test_drop_resets_open_connections_and_new_ones_still_work(proxy: ChaosProxy) -> None:
    reader, writer = await _open(proxy)
    writer.write(b"x")
    await asyncio.wait_for(reader.readexactly(1), 20)
    proxy.drop()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 20)
    reader, writer = await _open(proxy)
    writer.write(b"y")
    assert await asyncio.wait_for(reader.readexactly(1), 20) == b"y"
    writer.close()
