"""Connect a plain rsocket-py service to a broker and wait until the broker routes to it.

Registration follows the design's wire contract: the SETUP frame's composite metadata holds a
``message/x.rsbroker.register.v0`` entry with UTF-8 JSON naming the services. Routing starts
some time after the TCP connect, so :func:`wait_until_routed` polls the admin API instead of
sleeping: a page opened before that would get REJECTED.

Test helper for now; the project's own client helpers may replace it later.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta

import aiohttp
from rsocket.extensions.helpers import composite, metadata_item
from rsocket.extensions.mimetypes import WellKnownMimeTypes
from rsocket.helpers import single_transport_provider
from rsocket.payload import Payload
from rsocket.routing.request_router import RequestRouter
from rsocket.routing.routing_request_handler import RoutingRequestHandler
from rsocket.rsocket_client import RSocketClient
from rsocket.transports.tcp import TransportTCP

REGISTER_MIME = b"message/x.rsbroker.register.v0"
ROUTED_TIMEOUT_S = 30.0
_POLL_INTERVAL_S = 0.05


def registration_metadata(
    services: Sequence[str], instance: str, weight: int = 1, tags: Mapping[str, str] | None = None
) -> bytes:
    """SETUP metadata announcing ``services`` (composite metadata, one registration entry)."""
    body = {"services": list(services), "instance": instance, "weight": weight, "tags": dict(tags or {})}
    return bytes(composite(metadata_item(json.dumps(body).encode(), REGISTER_MIME)))


@contextlib.asynccontextmanager
async def connected_provider(
    tcp_address: str, router: RequestRouter, services: Sequence[str], instance: str
) -> AsyncIterator[RSocketClient]:
    """An rsocket-py client over TCP that serves ``router`` and registers ``services`` in SETUP."""
    host, _, port = tcp_address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    client = RSocketClient(
        single_transport_provider(TransportTCP(reader, writer)),
        handler_factory=lambda: RoutingRequestHandler(router),
        data_encoding=b"text/plain",
        metadata_encoding=WellKnownMimeTypes.MESSAGE_RSOCKET_COMPOSITE_METADATA,
        keep_alive_period=timedelta(seconds=5),
        max_lifetime_period=timedelta(seconds=60),
        setup_payload=Payload(metadata=registration_metadata(services, instance)),
    )
    async with client:
        yield client


async def wait_until_routed(admin_url: str, service: str) -> None:
    """Returns once ``GET /api/v1/services`` lists ``service``; raises after a timeout."""
    needle = json.dumps(service)
    body = ""
    async with aiohttp.ClientSession() as session:
        try:
            async with asyncio.timeout(ROUTED_TIMEOUT_S):
                while True:
                    async with session.get(f"{admin_url}/api/v1/services") as response:
                        body = await response.text()
                        if response.status == 200 and needle in body:
                            return
                    await asyncio.sleep(_POLL_INTERVAL_S)
        except TimeoutError:
            raise TimeoutError(f"{service} not routed after {ROUTED_TIMEOUT_S} s; last /api/v1/services: {body}") from None
