"""Entry points: :func:`open_connection` and the :func:`connect` context manager."""

from __future__ import annotations

import contextlib
import itertools
import os
import ssl as ssl_module
from typing import AsyncIterator, Callable, Iterable

from broker.client.connection import MAX_PAYLOAD_BYTES, Connection
from broker.client.handshake import client_setup_frame
from broker.client.router import Router
from broker.auth.tls import client_context
from broker.client.transport import Address, open_transport, parse_address
from broker.frames import MAX_FRAME_LENGTH

__all__ = ["connect", "open_connection"]

_instances = itertools.count(1)


def default_instance() -> str:
    """An instance name unique to this process and connection (``py-<pid>-<n>``)."""
    return f"py-{os.getpid()}-{next(_instances)}"


async def open_connection(
    address: str | Address,
    *,
    services: Iterable[str] = (),
    router: Router | None = None,
    instance: str | None = None,
    weight: int = 1,
    tags: dict[str, str] | None = None,
    token: str | None = None,
    ssl: ssl_module.SSLContext | None = None,
    ca_file: str | None = None,
    data_mime: str = "application/octet-stream",
    keepalive_s: float = 5.0,
    max_lifetime_s: float = 30.0,
    setup_timeout_s: float = 10.0,
    topology: bool = False,
    on_metadata_push: Callable[[bytes], None] | None = None,
    headers: dict[str, str] | None = None,
    fragment_size: int = MAX_FRAME_LENGTH,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> Connection:
    """Connect, send SETUP and wait until the peer has taken it (see :meth:`Connection.handshake`).

    TLS: a ``tls://`` or ``wss://`` address, trusting ``ca_file`` (default: the system
    store), or any ``ssl`` context (:func:`broker.auth.tls.client_context` makes one with a
    client certificate for mTLS). Payloads larger than ``fragment_size`` (a frame; lower it
    to the broker's ``max_frame_size`` if that is set lower) are sent in fragments;
    fragmented payloads received are bounded by ``max_payload_bytes``.
    Raises OSError when nothing listens, :class:`~broker.client.errors.SetupError` when the
    broker refuses the SETUP (bad token, bad registration), and
    :class:`~broker.client.errors.ConnectionLostError` when the peer does not answer within
    ``setup_timeout_s``. Close the connection with :meth:`Connection.close`.
    """
    target = parse_address(address) if isinstance(address, str) else address
    if ssl is None and ca_file is not None:
        ssl = client_context(ca_file=ca_file)
    connection = Connection(
        router=router,
        keepalive_s=keepalive_s,
        max_lifetime_s=max_lifetime_s,
        on_metadata_push=on_metadata_push,
        fragment_size=fragment_size,
        max_payload_bytes=max_payload_bytes,
    )
    connection.attach(await open_transport(target, connection, ssl=ssl, headers=headers))
    setup = client_setup_frame(
        services=services,
        instance=instance or default_instance(),
        weight=weight,
        tags=tags,
        token=token,
        topology=topology,
        data_mime=data_mime,
        keepalive_s=keepalive_s,
        max_lifetime_s=max_lifetime_s,
    )
    try:
        await connection.handshake(setup, setup_timeout_s)
    except BaseException:
        connection.close("SETUP failed")
        raise
    return connection


@contextlib.asynccontextmanager
async def connect(address: str | Address, **options: object) -> AsyncIterator[Connection]:
    """A connection to one broker (or any RSocket server) for the ``async with`` block.

    ``address``: ``host:port``, ``tls://host:port``, ``ws://host:port/rsocket`` or ``wss://…``.
    A provider passes ``services`` and a ``router``; it is registered when the block starts
    and serves until the block ends. Options are those of :func:`open_connection`.
    """
    connection = await open_connection(address, **options)  # type: ignore[arg-type]
    try:
        yield connection
    finally:
        connection.close()
