"""A provider: serve a service through the broker without opening any port.

    python examples/provider.py --tcp 127.0.0.1:7000

Registers service ``com.acme.greeter`` (route ``com.acme.greeter.hello``) in its SETUP and
serves until interrupted. Any requester connected to any broker node can now call it.
Give several ``--tcp`` addresses (comma-separated) to fail over between cluster nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from broker.client import Request, Router, connect_cluster


def make_router() -> Router:
    router = Router()

    @router.response("com.acme.greeter.hello")
    async def hello(data: bytes, request: Request) -> bytes:
        return b"Hello, " + (data or b"stranger") + b"!"

    return router


async def main(addresses: list[str], instance: str, token: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with connect_cluster(
        addresses, services=["com.acme.greeter"], router=make_router(), instance=instance, token=token
    ) as client:
        print(f"serving com.acme.greeter as '{instance}' through {client.topology.current}; Ctrl-C stops", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tcp", default="127.0.0.1:7000", help="broker TCP address(es), comma-separated")
    parser.add_argument("--instance", default="greeter-1")
    parser.add_argument("--token", help="bearer JWT when the broker has authentication on")
    args = parser.parse_args()
    asyncio.run(main(args.tcp.split(","), args.instance, args.token))
