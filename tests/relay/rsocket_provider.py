"""An rsocket-py provider with every interaction model, for tests through the broker.

In-process: ``Recorder`` + ``router_for(service, recorder)`` with ``broker.client.rsocketpy.connect``.
As a process (crash tests): ``python rsocket_provider.py HOST:PORT SERVICE``.

Routes of ``SERVICE``:

* ``.hello``  request-response: ``hello <data>``; ``.size`` request-response: the data's length
* ``.echo``   request-response: the data unchanged (large-payload tests)
* ``.count``  request-stream: ``1`` .. ``N`` (N = data), then complete
* ``.ticks``  request-stream: ``0``, ``1``, ... forever, honouring request-n
* ``.upper``  request-channel: each inbound message upper-cased, complete when the input is
* ``.sizes``  request-channel: the length of each inbound message, complete when the input is
* ``.log``    fire-and-forget, ``.notify`` metadata push: recorded in the ``Recorder``
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

from reactivestreams.subscriber import DefaultSubscriber
from rsocket.helpers import create_response
from rsocket.payload import Payload
from rsocket.routing.request_router import RequestRouter
from rsocket.streams.stream_from_async_generator import StreamFromAsyncGenerator
from rsocket.streams.stream_from_generator import StreamFromGenerator

from broker.client.rsocketpy import connect


class Recorder:
    """What arrived through the one-way interaction models."""

    def __init__(self) -> None:
        self.fire_and_forget: list[bytes] = []
        self.metadata_push: list[bytes] = []


class _Inbound(DefaultSubscriber):
    """Inbound side of a channel: feeds ``transform(message)`` to the outbound queue."""

    def __init__(self, queue: asyncio.Queue[bytes | None], transform: Callable[[bytes], bytes]) -> None:
        super().__init__()
        self.queue = queue
        self.transform = transform

    def on_subscribe(self, subscription: Any) -> None:
        super().on_subscribe(subscription)
        subscription.request(0x7FFFFFFF)

    def on_next(self, value: Payload, is_complete: bool = False) -> None:
        self.queue.put_nowait(self.transform(value.data or b""))
        if is_complete:
            self.queue.put_nowait(None)

    def on_complete(self) -> None:
        self.queue.put_nowait(None)

    def on_error(self, exception: Exception) -> None:
        self.queue.put_nowait(None)


def router_for(service: str, recorder: Recorder | None = None) -> RequestRouter:
    router = RequestRouter()
    seen = recorder or Recorder()

    @router.response(f"{service}.hello")
    async def hello(payload: Payload, composite_metadata: Any) -> Any:
        return create_response(b"hello " + (payload.data or b""))

    @router.response(f"{service}.echo")
    async def echo(payload: Payload, composite_metadata: Any) -> Any:
        return create_response(payload.data)

    @router.response(f"{service}.size")
    async def size(payload: Payload, composite_metadata: Any) -> Any:
        return create_response(str(len(payload.data or b"")).encode())

    @router.stream(f"{service}.count")
    async def count(payload: Payload, composite_metadata: Any) -> Any:
        n = int(payload.data or b"3")

        def numbers() -> Iterator[tuple[Payload, bool]]:
            for i in range(1, n + 1):
                yield Payload(str(i).encode()), i == n

        return StreamFromGenerator(numbers)

    @router.stream(f"{service}.ticks")
    async def ticks(payload: Payload, composite_metadata: Any) -> Any:
        async def generate() -> AsyncIterator[tuple[Payload, bool]]:
            n = 0
            while True:
                yield Payload(str(n).encode()), False
                n += 1
                await asyncio.sleep(0.01)

        return StreamFromAsyncGenerator(generate)

    def channel(transform: Callable[[bytes], bytes]) -> Callable[[Payload, Any], Awaitable[Any]]:
        async def handler(payload: Payload, composite_metadata: Any) -> Any:
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()

            async def outbound() -> AsyncIterator[tuple[Payload, bool]]:
                yield Payload(transform(payload.data or b"")), False
                while (item := await queue.get()) is not None:
                    yield Payload(item), False
                yield Payload(b"<end>"), True

            return StreamFromAsyncGenerator(outbound), _Inbound(queue, transform)

        return handler

    router.channel(f"{service}.upper")(channel(lambda data: bytes(data).upper()))
    router.channel(f"{service}.sizes")(channel(lambda data: str(len(data)).encode()))

    @router.fire_and_forget(f"{service}.log")
    async def log(payload: Payload, composite_metadata: Any) -> None:
        seen.fire_and_forget.append(payload.data or b"")

    @router.metadata_push(f"{service}.notify")
    async def notify(payload: Payload, composite_metadata: Any) -> None:
        seen.metadata_push.append(payload.metadata or b"")

    return router


async def main(address: str, service: str) -> None:
    host, _, port = address.rpartition(":")
    async with connect(host, int(port), services=[service], router=router_for(service), instance=f"proc-{service}"):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
