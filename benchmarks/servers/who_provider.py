"""Providers that answer their own instance name, several in one process: the providers of
``benchmarks.balance_bench``, run apart from the requesters so that a provider's round trip
is its own work (and its delay), not the requesters' event-loop queue.

``python -m benchmarks.servers.who_provider --broker HOST:PORT --service S --instance a1 --instance b1:20``
connects each instance (``NAME[:DELAY_MS]``) to the broker as a ``broker.client`` provider of
``S`` and answers ``S.who`` with the instance name, after ``asyncio.sleep(DELAY_MS)`` when a
delay is given: a slow provider that waits without blocking its loop, as a slow backend does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from benchmarks.servers.common import announce, run, until_signalled
from broker.client import Router, connect


def who_router(service: str, instance: str, delay_s: float) -> Router:
    """``{service}.who`` answers ``instance``, ``delay_s`` after the request came."""
    router = Router()

    @router.response(f"{service}.who")
    async def who(data: bytes) -> bytes:
        if delay_s:
            await asyncio.sleep(delay_s)
        return instance.encode()

    return router


def parse_instance(text: str) -> tuple[str, float]:
    """``NAME`` or ``NAME:DELAY_MS`` -> (name, delay in seconds)."""
    name, _, delay_ms = text.partition(":")
    return name, float(delay_ms or 0.0) / 1000.0


async def _provide(broker: str, service: str, instances: list[tuple[str, float]]) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for name, delay_s in instances:
            router = who_router(service, name, delay_s)
            await stack.enter_async_context(connect(broker, services=[service], router=router, instance=name))
        announce(address=broker, instances=[name for name, _ in instances])
        await until_signalled()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers.who_provider", description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", required=True, help="HOST:PORT of the broker's RSocket TCP listener")
    parser.add_argument("--service", required=True, help="the service every instance provides")
    parser.add_argument("--instance", action="append", required=True, type=parse_instance,
                        help="NAME or NAME:DELAY_MS (repeat: one provider connection each)")
    args = parser.parse_args(argv)
    run(lambda: _provide(args.broker, args.service, args.instance))


if __name__ == "__main__":
    main()
