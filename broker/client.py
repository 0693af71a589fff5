"""A few lines for a Python service to reach the broker, on top of plain rsocket-py.

Nothing here is needed to talk to the broker — any RSocket client works — but these
helpers write the SETUP a provider needs (composite metadata with the registration
entry and, when given, a bearer token) and the routing metadata a requester needs::

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
from broker.auth.metadata import encode_bearer

__all__ = ["connect", "route", "setup_metadata", "registration"]


def route(path: str, token: str | None = None) -> bytes:
    """Composite metadata for one request to ``path`` (``service.method``)."""
    out = md.route_metadata(path)
    if token:
        out += md.composite_entry(md.AUTH_MIME, encode_bearer(token))
    return out


def registration(
    services: Iterable[str], instance: str, weight: int = 1, tags: dict[str, str] | None = None
) -> md.Registration:
    return md.Registration(services=tuple(services), instance=instance, weight=weight, tags=dict(tags or {}))


def setup_metadata(reg: md.Registration | None = None, token: str | None = None) -> bytes:
    """SETUP metadata: the registration entry and/or a bearer token, as composite metadata."""
    out = b""
    if reg is not None:
        out += md.composite_entry(md.REGISTER_MIME, reg.to_json())
    if token:
        out += md.composite_entry(md.AUTH_MIME, encode_bearer(token))
    return out


async def _transport(host: str, port: int, use_ws: bool, ssl_context: ssl.SSLContext | None) -> Any:
    if use_ws:
        from rsocket.transports.aiohttp_websocket import TransportAioHttpClient

        scheme = "wss" if ssl_context else "ws"
        if ssl_context is not None:
            raise ValueError("rsocket-py's aiohttp WebSocket transport takes no SSL context; use wss via a session")
        return TransportAioHttpClient(url=f"{scheme}://{host}:{port}/rsocket")
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context, limit=1 << 20)
    return TransportTCP(reader, writer, read_buffer_size=1 << 16)


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
    service_list = list(services)
    reg = registration(service_list, instance or f"py-{id(router):x}", weight, tags) if service_list else None
    setup = setup_metadata(reg, token)
    transport = await _transport(host, port, websocket, ssl_context)
    handler_factory = (lambda: RoutingRequestHandler(router)) if router is not None else None
    options: dict[str, Any] = dict(
        metadata_encoding=md.COMPOSITE_MIME.encode(),
        data_encoding=data_mime.encode(),
        keep_alive_period=keepalive,
        max_lifetime_period=max_lifetime,
        setup_payload=Payload(metadata=setup) if setup else None,
    )
    if handler_factory is not None:
        options["handler_factory"] = handler_factory
    options.update(client_options)
    async with RSocketClient(single_transport_provider(transport), **options) as client:
        yield client
