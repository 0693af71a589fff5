"""For rsocket-py users: a few lines to reach the broker with plain rsocket-py.

:mod:`broker.client` is the project's own client; rsocket-py stays a supported client of
the broker, and these helpers write the SETUP an rsocket-py provider needs (composite
metadata with the registration entry and, when given, a bearer token, built by
:mod:`broker.client.handshake` like the project's client does) and the routing metadata a
requester needs::

    router = RequestRouter()

    @router.response("com.acme.greeter.hello")
    async def hello(payload, composite_metadata):
        return create_response(b"hello " + payload.data)

    async with connect("127.0.0.1", 7000, services=["com.acme.greeter"], router=router):
        ...  # serving until the block ends

    async with connect("127.0.0.1", 7000) as client:
        reply = await client.request_response(Payload(b"ada", route("com.acme.greeter.hello")))
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from datetime import timedelta
from typing import Any, AsyncIterator, Iterable

from rsocket.helpers import single_transport_provider
from rsocket.payload import Payload
from rsocket.routing.request_router import RequestRouter
from rsocket.routing.routing_request_handler import RoutingRequestHandler
from rsocket.rsocket_client import RSocketClient
from rsocket.transports.tcp import TransportTCP

from broker import metadata as md
from broker.client.handshake import registration, route, setup_metadata

__all__ = ["connect", "registration", "route", "setup_metadata"]


async def _transport(
    host: str, port: int, use_ws: bool, ssl_context: ssl.SSLContext | None, stack: contextlib.AsyncExitStack
) -> Any:
    """An rsocket-py transport to the broker; resources it needs closing go on ``stack``
    (needed only for wss with a custom SSL context)."""
    if use_ws:
        import aiohttp
        from rsocket.transports.aiohttp_websocket import TransportAioHttpClient

        url = f"{'wss' if ssl_context else 'ws'}://{host}:{port}/rsocket"
        if ssl_context is None:
            return TransportAioHttpClient(url=url)
        # rsocket-py's own WebSocket client takes no SSL context: open the socket ourselves.
        session = await stack.enter_async_context(aiohttp.ClientSession())
        websocket = await stack.enter_async_context(session.ws_connect(url, ssl=ssl_context))
        return TransportAioHttpClient(websocket=websocket)
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context, limit=1 << 20)
    return TransportTCP(reader, writer, read_buffer_size=1 << 16)


def _provider_setup(
    services: Iterable[str], instance: str, weight: int, tags: dict[str, str] | None, token: str | None
) -> bytes:
    """SETUP metadata: a registration entry when there are services, a bearer token when given."""
    service_list = list(services)
    reg = registration(service_list, instance, weight, tags) if service_list else None
    return setup_metadata(reg, token)


def _client_options(setup: bytes, data_mime: str, keepalive: timedelta, max_lifetime: timedelta) -> dict[str, Any]:
    return dict(
        metadata_encoding=md.COMPOSITE_MIME.encode(),
        data_encoding=data_mime.encode(),
        keep_alive_period=keepalive,
        max_lifetime_period=max_lifetime,
        setup_payload=Payload(metadata=setup) if setup else None,
    )


@contextlib.asynccontextmanager
async def connect(
    host: str,
    port: int,
    *,
    services: Iterable[str] = (),
    router: RequestRouter | None = None,
    instance: str | None = None,
    weight: int = 1,
    tags: dict[str, str] | None = None,
    token: str | None = None,
    websocket: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    data_mime: str = "application/octet-stream",
    keepalive: timedelta = timedelta(seconds=5),
    max_lifetime: timedelta = timedelta(seconds=30),
    **client_options: Any,
) -> AsyncIterator[RSocketClient]:
    """An rsocket-py client connected to the broker, registered as a provider if ``services``."""
    setup = _provider_setup(services, instance or f"py-{id(router):x}", weight, tags, token)
    options = _client_options(setup, data_mime, keepalive, max_lifetime)
    if router is not None:
        options["handler_factory"] = lambda: RoutingRequestHandler(router)
    options.update(client_options)
    async with contextlib.AsyncExitStack() as stack:
        transport = await _transport(host, port, websocket, ssl_context, stack)
        async with RSocketClient(single_transport_provider(transport), **options) as client:
            yield client
