"""The demo provider: one service with every interaction model, for trying the broker out.

``rsbroker demo`` starts a node and connects this provider to it; the examples and the
browser page call it. Routes (service ``demo.greeter``):

* ``demo.greeter.hello``  request-response: ``hello <data>``
* ``demo.greeter.count``  request-stream: the numbers 1..N (N = data, default 5)
* ``demo.greeter.echo``   request-channel: echoes each message upper-cased
* ``demo.greeter.log``    fire-and-forget: remembered, readable through ``demo.greeter.logged``
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from reactivestreams.subscriber import DefaultSubscriber
from rsocket.helpers import create_future, create_response
from rsocket.payload import Payload
from rsocket.routing.request_router import RequestRouter
from rsocket.streams.stream_from_async_generator import StreamFromAsyncGenerator
from rsocket.streams.stream_from_generator import StreamFromGenerator

SERVICE = "demo.greeter"


def demo_router() -> RequestRouter:
    router = RequestRouter()
    logged: list[bytes] = []

    @router.response(f"{SERVICE}.hello")
    async def hello(payload: Payload, composite_metadata: Any) -> Any:
        return create_response(b"hello " + (payload.data or b"world"))

    @router.stream(f"{SERVICE}.count")
    async def count(payload: Payload, composite_metadata: Any) -> Any:
        try:
            n = int(payload.data or b"5")
        except ValueError:
            n = 5

        def numbers() -> Any:
            for i in range(1, n + 1):
                yield Payload(str(i).encode()), i == n

        return StreamFromGenerator(numbers)

    @router.channel(f"{SERVICE}.echo")
    async def echo(payload: Payload, composite_metadata: Any) -> Any:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        class Inbound(DefaultSubscriber):
            def on_subscribe(self, subscription: Any) -> None:
                super().on_subscribe(subscription)
                subscription.request(0x7FFFFFFF)

            def on_next(self, value: Payload, is_complete: bool = False) -> None:
                queue.put_nowait((value.data or b"").upper())
                if is_complete:
                    queue.put_nowait(None)

            def on_complete(self) -> None:
                queue.put_nowait(None)

            def on_error(self, exception: Exception) -> None:
                queue.put_nowait(None)

        async def outbound() -> Any:
            if payload.data:
                yield Payload(payload.data.upper()), False
            while (item := await queue.get()) is not None:
                yield Payload(item), False
            yield Payload(b""), True

        return StreamFromAsyncGenerator(outbound), Inbound()

    @router.fire_and_forget(f"{SERVICE}.log")
    async def log_message(payload: Payload, composite_metadata: Any) -> None:
        logged.append(payload.data or b"")

    @router.response(f"{SERVICE}.logged")
    async def read_log(payload: Payload, composite_metadata: Any) -> Any:
        return create_future(Payload(b"\n".join(logged)))

    return router


def provider_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rsbroker demo-provider", description=provider_main.__doc__)
    parser.add_argument("--nodes", required=True, help="comma-separated broker TCP addresses (HOST:PORT,...)")
    parser.add_argument("--instance", default="demo-1", help="instance name the provider registers (default: %(default)s)")
    return parser


def provider_main(argv: list[str]) -> int:
    """``rsbroker demo-provider --nodes HOST:PORT,...``: serve the demo service, failing over between nodes."""
    import signal

    from broker.client import connect_cluster

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
