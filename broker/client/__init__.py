"""The project's own RSocket client and provider library (plain RSocket, asyncio).

::

    from broker.client import connect, connect_cluster, Router

    router = Router()

    @router.response("com.acme.greeter.hello")
    async def hello(data: bytes) -> bytes:
        return b"hello " + data

    async with connect("127.0.0.1:7000", services=["com.acme.greeter"], router=router):
        ...                                     # serves until the block ends

    async with connect("127.0.0.1:7000") as c:  # also ws://host:port/rsocket, wss://, tls://
        reply = await c.request_response("com.acme.greeter.hello", b"ada")

Modules: :mod:`~broker.client.connection` (one RSocket connection), :mod:`~.router`
(handlers), :mod:`~.streams` (windowed inbound, credited outbound), :mod:`~.transport`
(TCP/TLS/WebSocket), :mod:`~.websocket` (a bare RFC 6455 client), :mod:`~.fragments` (payloads over a frame), :mod:`~.eager` (handlers
run without a task until they wait), :mod:`~.cluster` (fail-over across nodes), :mod:`~.errors`,
:mod:`~.handshake` (SETUP metadata), and :mod:`~.rsocketpy` (the same SETUP for rsocket-py
users). Frames are read and written with :mod:`broker.frames` and :mod:`broker.metadata`.
"""

from broker.client.api import connect, open_connection
from broker.client.cluster import ClusterClient, Topology, connect_cluster
from broker.client.connection import Connection
from broker.client.errors import (
    ApplicationError,
    CanceledError,
    ConnectionLostError,
    InvalidError,
    PayloadTooLarge,
    RejectedError,
    RSocketError,
    SetupError,
)
from broker.client.handshake import registration, route, setup_metadata
from broker.client.router import Request, Router

__all__ = [
    "ApplicationError",
    "CanceledError",
    "ClusterClient",
    "Connection",
    "ConnectionLostError",
    "InvalidError",
    "PayloadTooLarge",
    "RSocketError",
    "RejectedError",
    "Request",
    "Router",
    "SetupError",
    "Topology",
    "connect",
    "connect_cluster",
    "open_connection",
    "registration",
    "route",
    "setup_metadata",
]
