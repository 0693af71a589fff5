"""Idle RSocket connections for the memory figure: ``python -m benchmarks.idle``.

``--transport tcp|ws --target HOST:PORT --count N`` opens N connections, sends each a SETUP
(keepalive 20 s, lifetime 120 s, so nothing else needs to flow while memory is read),
prints ``ready {"count": N}`` and holds them until SIGTERM. The suite spreads 10k
connections over several of these processes: one process may hold at most 20,000 files.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp

from benchmarks import frames
from benchmarks.servers.common import announce, run, split_address, until_signalled

#: connection attempts in flight at once; a burst of 10k SYNs would overflow the listen backlog.
_CONCURRENT_OPENS = 128
_SETUP = frames.setup(20_000, 120_000)


async def _hold_tcp(target: str, count: int) -> None:
    host, port = split_address(target)
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(_CONCURRENT_OPENS)
    transports: list[asyncio.BaseTransport] = []

    async def open_one() -> None:
        async with gate:
            transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
            transport.write(frames.tcp(_SETUP))  # type: ignore[attr-defined]
            transports.append(transport)

    await asyncio.gather(*(open_one() for _ in range(count)))
    announce(count=len(transports))
    try:
        await until_signalled()
    finally:
        for transport in transports:
            transport.close()


async def _hold_ws(target: str, count: int) -> None:
    gate = asyncio.Semaphore(_CONCURRENT_OPENS)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets: list[aiohttp.ClientWebSocketResponse] = []

        async def open_one() -> None:
            async with gate:
                ws = await session.ws_connect(f"http://{target}/rsocket", autoping=True, max_msg_size=0)
                await ws.send_bytes(_SETUP)
                sockets.append(ws)

        await asyncio.gather(*(open_one() for _ in range(count)))
        announce(count=len(sockets))
        try:
            await until_signalled()
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle", description=__doc__)
    parser.add_argument("--transport", choices=("tcp", "ws"), required=True)
    parser.add_argument("--target", required=True, help="HOST:PORT of the broker's TCP or WebSocket listener")
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)
    hold = _hold_tcp if args.transport == "tcp" else _hold_ws
    run(lambda: hold(args.target, args.count))


if __name__ == "__main__":
    main()
