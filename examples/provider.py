"""A provider: serve a service through the broker without opening any port.

    python examples/provider.py --tcp 127.0.0.1:7000

Registers service ``com.acme.greeter`` (route ``com.acme.greeter.hello``) in its SETUP and
serves until interrupted. Any requester connected to any broker node can now call it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from rsocket.helpers import create_response
from rsocket.payload import Payload
from rsocket.routing.request_router import RequestRouter

from broker.client import connect


def make_router() -> RequestRouter:
    router = RequestRouter()

    @router.response("com.acme.greeter.hello")
    async def hello(payload: Payload, composite_metadata: object) -> object:
        return create_response(b"Hello, " + (payload.data or b"stranger") + b"!")

    return router


async def main(host: str, port: int, instance: str, token: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with connect(host, port, services=["com.acme.greeter"], router=make_router(), instance=instance, token=token):
        print(f"serving com.acme.greeter as '{instance}' through {host}:{port}; Ctrl-C stops", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tcp", default="127.0.0.1:7000", help="broker TCP address")
    parser.add_argument("--instance", default="greeter-1")
    parser.add_argument("--token", help="bearer JWT when the broker has authentication on")
    args = parser.parse_args()
    host, port = args.tcp.rsplit(":", 1)
    asyncio.run(main(host, int(port), args.instance, args.token))
