"""An rsocket-py provider process for crash tests: ``python stream_provider.py HOST:PORT SERVICE``.

Serves ``SERVICE.ticks`` (request-stream of "0", "1", ... forever, honouring request-n) and
``SERVICE.m`` (request-response echo) until it is killed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, AsyncIterator

from rsocket.helpers import create_response
from rsocket.payload import Payload
from rsocket.routing.request_router import RequestRouter
from rsocket.streams.stream_from_async_generator import StreamFromAsyncGenerator

from broker.client import connect


def router_for(service: str) -> RequestRouter:
    router = RequestRouter()

    @router.stream(f"{service}.ticks")
    async def ticks(payload: Payload, composite_metadata: Any) -> Any:
        async def generate() -> AsyncIterator[tuple[Payload, bool]]:
            n = 0
            while True:
                yield Payload(str(n).encode()), False
                n += 1
                await asyncio.sleep(0.01)

        return StreamFromAsyncGenerator(generate)

    @router.response(f"{service}.m")
    async def echo(payload: Payload, composite_metadata: Any) -> Any:
        return create_response(payload.data)

    return router


async def main(address: str, service: str) -> None:
    host, _, port = address.rpartition(":")
    async with connect(host, int(port), services=[service], router=router_for(service), instance=f"proc-{service}"):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
