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
import json
import random
import ssl
from datetime import timedelta
from typing import Any, AsyncIterator, Iterable

from rsocket.helpers import single_transport_provider
from rsocket.payload import Payload
from rsocket.request_handler import BaseRequestHandler
from rsocket.routing.request_router import RequestRouter
from rsocket.routing.routing_request_handler import RoutingRequestHandler
from rsocket.rsocket_client import RSocketClient
from rsocket.transports.tcp import TransportTCP

from broker import metadata as md
from broker.auth.metadata import encode_bearer

__all__ = ["Topology", "connect", "connect_cluster", "registration", "route", "setup_metadata"]


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


async def _transport(
    host: str, port: int, use_ws: bool, ssl_context: ssl.SSLContext | None, stack: contextlib.AsyncExitStack | None
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
        if stack is None:
            raise ValueError("wss with a custom SSL context needs a place to close its session")
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


class Topology:
    """The node list a cluster-aware client fails over across, kept fresh by topology pushes."""

    def __init__(self, addresses: Iterable[str]) -> None:
        self.addresses: list[str] = list(dict.fromkeys(addresses))
        if not self.addresses:
            raise ValueError("at least one broker address (HOST:PORT) is needed")
        self.cursor = 0
        self.current: str | None = None
        self.pushes = 0

    def next_address(self) -> tuple[str, int]:
        text = self.addresses[self.cursor % len(self.addresses)]
        self.cursor += 1
        self.current = text
        host, _, port = text.rpartition(":")
        return host.strip("[]"), int(port)

    def update(self, body: bytes, websocket: bool) -> None:
        """Take the node list of a ``message/x.rsbroker.topology.v0`` push (JSON)."""
        try:
            nodes = json.loads(body)["nodes"]
            key = "ws" if websocket else "tcp"
            fresh = [n[key] for n in nodes if n.get(key) and n.get("state", "alive") == "alive"]
        except (ValueError, KeyError, TypeError):
            return
        if fresh:
            # keep the node we are on first so a push does not move a healthy connection
            self.addresses = sorted(fresh, key=lambda a: a != self.current)
            self.cursor = 1 if self.current in fresh else 0
            self.pushes += 1


def _cluster_handler(router: RequestRouter | None, topology: Topology, websocket: bool, on_close: Any) -> Any:
    base = RoutingRequestHandler if router is not None else BaseRequestHandler

    class ClusterHandler(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            if router is not None:
                super().__init__(router)
            else:
                super().__init__()

        async def on_metadata_push(self, payload: Payload) -> None:
            body = md.find_entry(bytes(payload.metadata or b""), md.TOPOLOGY_MIME)
            if body is not None:
                topology.update(body, websocket)
            elif router is not None:
                await super().on_metadata_push(payload)

        async def on_close(self, rsocket: Any, exception: Exception | None = None) -> None:
            on_close(rsocket)

    return ClusterHandler


@contextlib.asynccontextmanager
async def connect_cluster(
    addresses: Iterable[str],
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
    keepalive: timedelta = timedelta(seconds=1),
    max_lifetime: timedelta = timedelta(seconds=5),
    backoff_max_s: float = 2.0,
) -> AsyncIterator[RSocketClient]:
    """A client that moves to another node when its node goes away, and registers again there.

    It asks the broker for topology pushes, so it learns nodes that joined after it started.
    Requests in flight when a node dies fail with an error the caller can retry; requests
    made after the client reconnected go through the new node.
    """
    topology = Topology(addresses)
    setup = _provider_setup(services, instance or f"py-{id(topology):x}", weight, tags, token)
    setup += md.composite_entry(md.TOPOLOGY_MIME, b"{}")
    state = {"closing": False, "reconnects": 0}

    if websocket and ssl_context is not None:
        raise ValueError("connect_cluster supports wss through rsocket-py only without a custom SSL context")

    async def transports() -> AsyncIterator[Any]:
        attempt = 0
        while True:
            host, port = topology.next_address()
            try:
                transport = await _transport(host, port, websocket, None if websocket else ssl_context, None)
                if websocket:
                    await transport.connect()
            except OSError:
                attempt += 1
                await asyncio.sleep(random.uniform(0, min(backoff_max_s, 0.05 * 2**attempt)))
                continue
            attempt = 0
            yield transport

    def closed(client: Any) -> None:
        if not state["closing"]:
            state["reconnects"] += 1
            asyncio.get_running_loop().create_task(client.reconnect())

    handler = _cluster_handler(router, topology, websocket, closed)
    client = RSocketClient(transports(), handler_factory=handler, **_client_options(setup, data_mime, keepalive, max_lifetime))
    client.topology = topology  # type: ignore[attr-defined]
    client.reconnects = state  # type: ignore[attr-defined]
    async with client:
        try:
            yield client
        finally:
            state["closing"] = True
