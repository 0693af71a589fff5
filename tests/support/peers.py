"""Ready-made raw peers on a broker: providers, requesters, a responder, a liveness probe.

::

    provider = await raw_provider(node, ["svc"], "p1")          # registered (admin API agrees)
    async with Responder(provider) as responder:                 # answers REQUEST_RESPONSE
        requester = await raw_requester(node, "ws")
        ...
        assert [f.route for f in responder.received] == [...]
    await assert_serves(node)                                     # the node still relays

Every helper takes a :class:`~tests.support.brokerproc.BrokerProcess` (or anything with
``tcp``, ``ws`` and ``admin`` address attributes) and a transport name, ``"tcp"`` or ``"ws"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any, Callable, Iterable, Protocol

from broker.frames import ErrorCode, FrameType, payload_frame
from tests.support.admin import service_instances, wait_for
from tests.support.rawclient import ConnectionClosed, Frame, RawClient

__all__ = ["Node", "address_of", "raw_provider", "raw_requester", "Responder", "assert_serves"]

_probe_ids = itertools.count(1)


class Node(Protocol):
    """What the helpers need of a node: its listener addresses (``host:port`` or None)."""

    @property
    def tcp(self) -> str | None: ...

    @property
    def ws(self) -> str | None: ...

    @property
    def admin(self) -> str | None: ...


def address_of(node: Node, transport: str) -> str:
    address = node.ws if transport == "ws" else node.tcp
    assert address is not None, f"node has no {transport} listener"
    return address


async def raw_provider(
    node: Node,
    services: Iterable[str],
    instance: str,
    transport: str = "tcp",
    *,
    sndbuf: int | None = None,
    keepalive_every_s: float | None = None,
    **setup_options: Any,
) -> RawClient:
    """A raw client that sent a provider SETUP and whose services the node lists.

    ``sndbuf`` (TCP only) shrinks the kernel send buffer, for back-pressure tests.
    ``keepalive_every_s`` starts :meth:`RawClient.start_keepalive` right after SETUP, for a
    SETUP with a max lifetime shorter than registering may take on a busy machine.
    """
    service_list = list(services)
    if transport == "tcp":
        client = await RawClient.tcp(address_of(node, transport), sndbuf=sndbuf)
    else:
        client = await RawClient.ws(address_of(node, transport))
    await client.setup(service_list, instance, **setup_options)
    if keepalive_every_s is not None:
        client.start_keepalive(keepalive_every_s)
    assert node.admin is not None
    for service in service_list:
        await wait_for(
            lambda: _lists(node.admin, service, instance),
            message=f"'{instance}' registered for '{service}'",
        )
    return client


async def _lists(admin: str | None, service: str, instance: str) -> bool:
    return instance in await service_instances(admin, service)


async def raw_requester(node: Node, transport: str = "tcp") -> RawClient:
    """A raw client that sent a plain SETUP (no registration)."""
    client = await RawClient.connect(address_of(node, transport), transport)
    await client.setup()
    return client


class Responder:
    """Answers every REQUEST_RESPONSE on ``client`` with ``reply(frame)``.

    ``received`` records the requests in arrival order, ``other`` every other frame (LEASE,
    KEEPALIVE, CANCEL ...). ``reply`` returning None leaves the request unanswered (a
    provider that holds it).
    """

    def __init__(self, client: RawClient, reply: Callable[[Frame], bytes | None] = lambda f: f.data) -> None:
        self.client = client
        self.reply = reply
        self.received: list[Frame] = []
        self.other: list[Frame] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frame = await self.client.recv(timeout=3600)
                if frame.type != FrameType.REQUEST_RESPONSE:
                    self.other.append(frame)
                    continue
                self.received.append(frame)
                answer = self.reply(frame)
                if answer is not None:
                    await self.client.send(payload_frame(frame.stream_id, answer, complete=True))

    async def __aenter__(self) -> "Responder":
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def assert_serves(node: Node, transport: str = "tcp") -> None:
    """The node still relays: a fresh provider and requester complete a request-response,
    and a request for a service nobody provides is REJECTED at once."""
    service = f"probe.alive{next(_probe_ids)}"
    provider = await raw_provider(node, [service], f"probe-{service}", transport)
    requester = await raw_requester(node, transport)
    try:
        async with Responder(provider, lambda f: b"pong:" + f.data):
            sid = await requester.request(FrameType.REQUEST_RESPONSE, f"{service}.ping", b"x")
            reply = await requester.expect(FrameType.PAYLOAD, stream_id=sid)
            assert reply.data == b"pong:x"
        sid = await requester.request(FrameType.REQUEST_RESPONSE, "probe.nobody.ping")
        await requester.expect_error(ErrorCode.REJECTED, stream_id=sid, contains="no provider for service 'probe.nobody'")
    finally:
        await requester.close()
        await provider.close()
