"""The provider the browser page talks to: a plain rsocket-py ``RequestRouter`` service,
connected with the rsocket-py helper ``broker.client.rsocketpy.connect``.

It records what reaches it (names greeted, fire-and-forget messages, every request-n credit
grant) so that a test can check the broker relayed the browser's frames, not only that the
page saw replies. The stream emits strictly on demand: an item goes out only against a
credit, which makes a lost or rewritten REQUEST_N visible as a stalled stream instead of
passing unnoticed.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from reactivestreams.subscriber import Subscriber
from reactivestreams.subscription import Subscription
from rsocket.payload import Payload
from rsocket.routing.request_router import RequestRouter

from broker.client.rsocketpy import connect
from tests.support.admin import service_instances, wait_for
from tests.support.brokerproc import BrokerProcess

#: The service the tests point the page at (``?service=``); its default, ``demo.greeter``, is
#: the provider of ``rsbroker demo``.
SERVICE = "com.acme.greeter"
#: Bound on waiting for a fire-and-forget message, which has no reply to wait on instead.
LOGGED_TIMEOUT_S = 10.0


def greeting(name: str) -> str:
    """The reply of ``<service>.hello``: what the page must show for a given name."""
    return f"Hello, {name}!"


class CountingStream(Subscription):
    """Publishes "1".."count", one item per credit, completing with the last item.

    Records each ``request(n)`` in ``grants`` (shared with :class:`GreeterState`) so that the
    credits the requester sent can be compared with the credits the provider received.
    """

    def __init__(self, count: int, grants: list[int]) -> None:
        self._count = count
        self._next = 1
        self._grants = grants
        self._subscriber: Subscriber | None = None

    def subscribe(self, subscriber: Subscriber) -> None:
        """Publisher side (rsocket-py duck-types publishers): hand ourselves to the subscriber."""
        self._subscriber = subscriber
        subscriber.on_subscribe(self)

    def request(self, n: int) -> None:
        self._grants.append(n)
        if self._subscriber is None:
            return
        while n > 0 and self._next <= self._count:
            value = self._next
            self._next += 1
            n -= 1
            self._subscriber.on_next(Payload(str(value).encode()), is_complete=value == self._count)

    def cancel(self) -> None:
        self._next = self._count + 1


@dataclass
class GreeterState:
    """What the provider observed, for assertions."""

    greeted: list[str] = field(default_factory=list)
    logged: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    grants: list[int] = field(default_factory=list)

    async def next_logged(self) -> str:
        """The next fire-and-forget message received, waiting for it if need be."""
        return await asyncio.wait_for(self.logged.get(), LOGGED_TIMEOUT_S)


def greeter_router(state: GreeterState, service: str = SERVICE) -> RequestRouter:
    """Routes ``<service>.hello`` (request-response), ``.count`` (request-stream) and ``.log`` (fnf),
    the three the example page calls."""
    router = RequestRouter()

    @router.response(f"{service}.hello")
    async def hello(payload: Payload) -> Payload:
        name = payload.data.decode()
        state.greeted.append(name)
        return Payload(greeting(name).encode())

    @router.stream(f"{service}.count")
    async def count(payload: Payload) -> CountingStream:
        return CountingStream(int(payload.data.decode()), state.grants)

    @router.fire_and_forget(f"{service}.log")
    async def log(payload: Payload) -> None:
        state.logged.put_nowait(payload.data.decode())

    return router


@contextlib.asynccontextmanager
async def serving_greeter(broker: BrokerProcess, token: str | None = None) -> AsyncIterator[GreeterState]:
    """The greeter connected to ``broker`` over TCP as instance ``greeter-1`` (with a bearer
    token when the broker authenticates), yielded once the broker routes to it: a page opened
    before that would get REJECTED."""
    host, port = broker.tcp_address
    state = GreeterState()
    router = greeter_router(state)
    async with connect(
        host, port, services=[SERVICE], router=router, instance="greeter-1", token=token, data_mime="text/plain"
    ):
        await wait_for(lambda: service_instances(broker, SERVICE), message=f"{SERVICE} routed")
        yield state
