"""The demo provider: one service with every interaction model, for trying the broker out.

``rsbroker demo`` starts a node and connects this provider to it; the examples and the
browser page call it. Routes (service ``demo.greeter``), served with :mod:`broker.client`:

* ``demo.greeter.hello``  request-response: ``hello <data>``
* ``demo.greeter.count``  request-stream: the numbers 1..N (N = data, default 5)
* ``demo.greeter.echo``   request-channel: echoes each non-empty message upper-cased
* ``demo.greeter.log``    fire-and-forget: remembered, readable through ``demo.greeter.logged``
"""

from __future__ import annotations

import argparse
import asyncio
from typing import AsyncIterator

from broker.client import Router, connect_cluster

SERVICE = "demo.greeter"


def demo_router() -> Router:
    router = Router()
    logged: list[bytes] = []

    @router.response(f"{SERVICE}.hello")
    async def hello(data: bytes) -> bytes:
        return b"hello " + (data or b"world")

    @router.stream(f"{SERVICE}.count")
    async def count(data: bytes) -> AsyncIterator[bytes]:
        try:
            n = int(data or b"5")
        except ValueError:
            n = 5
        for i in range(1, n + 1):
            yield str(i).encode()

    @router.channel(f"{SERVICE}.echo")
    async def echo(items: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for item in items:
            if item:
                yield item.upper()

    @router.fire_and_forget(f"{SERVICE}.log")
    async def log_message(data: bytes) -> None:
        logged.append(data)

    @router.response(f"{SERVICE}.logged")
    async def read_log(data: bytes) -> bytes:
        return b"\n".join(logged)

    return router


def provider_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsbroker demo-provider", description=provider_main.__doc__)
    parser.add_argument("--nodes", required=True, help="comma-separated broker TCP addresses (HOST:PORT,...)")
    parser.add_argument("--instance", default="demo-1", help="instance name the provider registers (default: %(default)s)")
    return parser


def provider_main(argv: list[str]) -> int:
    """``rsbroker demo-provider --nodes HOST:PORT,...``: serve the demo service, failing over between nodes."""
    import signal

    args = provider_parser().parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
        async with connect_cluster(nodes, services=[SERVICE], router=demo_router(), instance=args.instance):
            print(f"demo provider '{args.instance}' serving {SERVICE} via {nodes[0]}", flush=True)
            await stop.wait()

    asyncio.run(run())
    return 0
