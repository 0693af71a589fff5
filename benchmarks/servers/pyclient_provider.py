"""The ``broker.client`` provider: the project's own client library on the serving side.

``python -m benchmarks.servers.pyclient_provider provide --broker HOST:PORT`` registers
:data:`benchmarks.frames.SERVICE` and answers ``ROUTE`` the way a user writes it: an
``async def`` request-response handler that echoes, a request-stream handler (an async
generator) that repeats the request data for as long as credit lasts, and a fire-and-forget
handler that does nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

from benchmarks import frames
from benchmarks.servers.common import announce, run, until_signalled
from broker.client import Router, connect


def echo_router() -> Router:
    router = Router()

    @router.response(frames.ROUTE)
    async def echo(data: bytes) -> bytes:
        return data

    @router.stream(frames.ROUTE)
    async def repeat(data: bytes) -> AsyncIterator[bytes]:
        while True:
            yield data

    @router.fire_and_forget(frames.ROUTE)
    async def ignore(data: bytes) -> None:
        return None

    return router


async def _provide(broker: str, instance: str) -> None:
    async with connect(broker, services=[frames.SERVICE], router=echo_router(), instance=instance, keepalive_s=20, max_lifetime_s=120):
        announce(address=broker, instance=instance)
        await until_signalled()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers.pyclient_provider", description=__doc__)
    roles = parser.add_subparsers(dest="role", required=True)
    provide = roles.add_parser("provide")
    provide.add_argument("--broker", required=True)
    provide.add_argument("--instance", default="pyclient-1")
    args = parser.parse_args(argv)
    run(lambda: _provide(args.broker, args.instance))


if __name__ == "__main__":
    main()
