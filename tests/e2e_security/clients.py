"""rsocket-py peers for the end-to-end security tests: a counting provider and requesters.

Every peer here is a real rsocket-py ``RSocketClient`` over TCP, TLS, WebSocket or secure
WebSocket, with the SETUP metadata ``broker.client`` writes (registration entry and bearer
token as composite metadata)::

    async with Provider(node, "svc", token=t) as provider:     # registered: admin API agrees
        async with requester(node, token=t2) as client:
            assert await echo(client, "svc.echo", b"hi") == b"hi"
        assert provider.received == ["svc.echo"]

The provider answers ``<service>.echo`` with the request's data and holds ``<service>.hold``
forever (until the broker cancels it), so tests can leave streams open on purpose.

Tests that read an ERROR frame's text use the raw frame client instead (rsocket-py hides
it): :func:`auth_setup` builds a SETUP with a bearer token and :func:`raw_with_token`
opens a raw connection that sent one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aiohttp
from rsocket.frame_helpers import ensure_bytes
from rsocket.helpers import create_future, single_transport_provider
from rsocket.payload import Payload
from rsocket.request_handler import BaseRequestHandler
from rsocket.routing.request_router import RequestRouter
from rsocket.routing.routing_request_handler import RoutingRequestHandler
from rsocket.rsocket_client import RSocketClient
from rsocket.transports.aiohttp_websocket import TransportAioHttpClient

from broker import metadata as md
from broker.auth import encode_bearer
from broker.client.rsocketpy import connect, registration, route, setup_metadata
from tests.support.admin import service_instances, wait_for
from tests.support.brokerproc import BrokerProcess
from tests.support.peers import address_of
from tests.support.rawclient import RawClient, provider_setup

__all__ = ["STEP_S", "Provider", "auth_setup", "echo", "raw_with_token", "requester", "rsocket_client"]

#: Bound on one network step on this busy machine; never a claim about speed.
STEP_S = 20.0


@contextlib.asynccontextmanager
async def rsocket_client(
    node: BrokerProcess,
    transport: str = "tcp",
    *,
    services: tuple[str, ...] = (),
    instance: str | None = None,
    token: str | None = None,
    handler_factory: Callable[[], BaseRequestHandler] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[RSocketClient]:
    """An rsocket-py client on ``node``'s ``transport`` listener (TLS when ``ssl_context``).

    TCP, TLS and plain WebSocket go through ``broker.client.rsocketpy.connect``; secure WebSocket is
    built here because ``connect`` cannot pass an SSL context to rsocket-py's aiohttp transport.
    """
    host, _, port = address_of(node, transport).rpartition(":")
    options: dict[str, Any] = {"handler_factory": handler_factory} if handler_factory is not None else {}
    if transport != "ws" or ssl_context is None:
        async with connect(
            host,
            int(port),
            services=services,
            instance=instance,
            token=token,
            websocket=transport == "ws",
            ssl_context=ssl_context,
            **options,
        ) as client:
            yield client
        return
    reg = registration(services, instance or "wss-client") if services else None
    async with aiohttp.ClientSession() as http:
        websocket = await asyncio.wait_for(
            http.ws_connect(f"wss://{host}:{port}/rsocket", ssl=ssl_context, max_msg_size=0), STEP_S
        )
        client = RSocketClient(
            single_transport_provider(TransportAioHttpClient(websocket=websocket)),
            metadata_encoding=md.COMPOSITE_MIME.encode(),
            keep_alive_period=timedelta(seconds=5),
            max_lifetime_period=timedelta(seconds=30),
            setup_payload=Payload(metadata=setup_metadata(reg, token)),
            **options,
        )
        async with client:
            yield client
        await websocket.close()


@contextlib.asynccontextmanager
async def requester(node: BrokerProcess, transport: str = "tcp", **options: Any) -> AsyncIterator[RSocketClient]:
    """A requester (no registration); ``options`` as for :func:`rsocket_client`."""
    async with rsocket_client(node, transport, **options) as client:
        yield client


async def echo(client: RSocketClient, path: str, data: bytes) -> bytes:
    """Request-response to ``path``; the reply's data (raises what rsocket-py raises on ERROR)."""
    response = await asyncio.wait_for(client.request_response(Payload(data, route(path))), STEP_S)
    return bytes(response.data)


class _CountingHandler(RoutingRequestHandler):
    """Routes like rsocket-py's handler, after counting every request of any type that arrives."""

    def __init__(self, router: RequestRouter, provider: Provider) -> None:
        super().__init__(router)
        self._provider = provider

    async def request_response(self, payload: Payload) -> Any:
        self._provider.requests += 1
        return await super().request_response(payload)

    async def request_stream(self, payload: Payload) -> Any:
        self._provider.requests += 1
        return await super().request_stream(payload)

    async def request_channel(self, payload: Payload) -> Any:
        self._provider.requests += 1
        return await super().request_channel(payload)

    async def request_fire_and_forget(self, payload: Payload) -> None:
        self._provider.requests += 1
        await super().request_fire_and_forget(payload)

    async def on_metadata_push(self, payload: Payload) -> None:
        self._provider.requests += 1
        await super().on_metadata_push(payload)


class Provider:
    """A registered rsocket-py provider of one service that records what reaches it.

    ``received`` lists the routes of request-responses it answered or holds, in order;
    ``requests`` counts every request of any type (and metadata pushes) that arrived,
    routable or not. Entering waits until the node lists the instance.
    """

    def __init__(self, node: BrokerProcess, service: str, transport: str = "tcp", **options: Any) -> None:
        self.node = node
        self.service = service
        self.transport = transport
        self.instance = f"{service}-provider"
        self.options = options
        self.received: list[str] = []
        self.requests = 0
        self._stack = contextlib.AsyncExitStack()
        self.client: RSocketClient | None = None

    def _router(self) -> RequestRouter:
        router = RequestRouter()

        @router.response(f"{self.service}.echo")
        async def answer(payload: Payload, composite_metadata: Any) -> Any:
            self.received.append(f"{self.service}.echo")
            return create_future(Payload(ensure_bytes(payload.data)))

        @router.response(f"{self.service}.hold")
        async def hold(payload: Payload, composite_metadata: Any) -> Any:
            self.received.append(f"{self.service}.hold")
            return asyncio.get_running_loop().create_future()  # answered never; the broker cancels it

        return router

    async def __aenter__(self) -> Provider:
        router = self._router()
        self.client = await self._stack.enter_async_context(
            rsocket_client(
                self.node,
                self.transport,
                services=(self.service,),
                instance=self.instance,
                handler_factory=lambda: _CountingHandler(router, self),
                **self.options,
            )
        )
        await wait_for(self._listed, message=f"provider '{self.instance}' registered for '{self.service}'")
        return self

    async def _listed(self) -> bool:
        return self.instance in await service_instances(self.node, self.service)

    async def __aexit__(self, *exc: Any) -> None:
        await self._stack.aclose()


def auth_setup(token: str | None, services: tuple[str, ...] = (), instance: str = "raw") -> bytes:
    """A SETUP frame carrying ``token`` as bearer authentication (none when None)."""
    extra = md.composite_entry(md.AUTH_MIME, encode_bearer(token)) if token is not None else b""
    return provider_setup(services, instance, extra_metadata=extra)


async def raw_with_token(
    node: BrokerProcess,
    token: str | None,
    transport: str = "tcp",
    services: tuple[str, ...] = (),
    instance: str = "raw",
) -> RawClient:
    """A raw frame client that sent :func:`auth_setup` (whose outcome the test reads)."""
    client = await RawClient.connect(address_of(node, transport), transport)
    await client.send(auth_setup(token, services, instance))
    return client
