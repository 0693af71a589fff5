"""Browsers cannot borrow a loopback address (issue 11 §4): the WebSocket listener's Origin policy.

A page of any site can open ``ws://127.0.0.1:PORT/rsocket``; its peer address is loopback,
so protected mode would let it in anonymously. The upgrade is refused (HTTP 403 with the
reason) when it carries an ``Origin`` that is not allowed: allowed are no ``Origin`` at all
(not a browser), an origin on one of the node's own host names (a page this host serves),
and whatever ``--ws-allowed-origins`` lists (``*``: every origin).
"""

from __future__ import annotations

import asyncio
import base64
import os

import pytest

from tests.e2e_security.clients import Provider, echo, requester
from tests.e2e_security.pki import Pki
from tests.support.brokerproc import BrokerFactory, BrokerProcess

EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def protected(module_broker_factory: BrokerFactory) -> BrokerProcess:
    """No authentication: anonymous clients from loopback only (protected mode)."""
    return module_broker_factory.start()


async def upgrade(node: BrokerProcess, origin: str | None) -> tuple[int, str]:
    """``(status, body)`` of a raw WebSocket upgrade to ``/rsocket`` carrying ``origin``."""
    host, port = node.ws_address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /rsocket HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *([f"Origin: {origin}"] if origin is not None else []),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)).decode()
        status = int(head.split()[1])
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = (await asyncio.wait_for(reader.readexactly(length), 20)).decode() if length else ""
        return status, body
    finally:
        writer.close()


async def test_a_foreign_page_cannot_open_a_websocket_in_protected_mode(protected: BrokerProcess) -> None:
    status, body = await upgrade(protected, EVIL)
    assert status == 403, f"a WebSocket upgrade from {EVIL} got {status}"
    assert f"origin '{EVIL}' is not allowed" in body and "--ws-allowed-origins" in body, body
    status, _ = await upgrade(protected, "null")  # sandboxed frames and file: pages
    assert status == 403


@pytest.mark.parametrize("origin", [None, "http://127.0.0.1:8080", "http://localhost:3000", "http://[::1]"])
async def test_non_browsers_and_pages_of_this_host_may_upgrade(protected: BrokerProcess, origin: str | None) -> None:
    status, body = await upgrade(protected, origin)
    assert status == 101, (origin, status, body)


async def test_rsocket_py_over_websocket_still_works(protected: BrokerProcess) -> None:
    async with Provider(protected, "origin.svc", transport="ws"):
        async with requester(protected, "ws") as client:
            assert await echo(client, "origin.svc.echo", b"hi") == b"hi"


async def test_listed_origins_are_allowed_with_authentication_on(broker_factory: BrokerFactory, pki: Pki) -> None:
    node = await asyncio.to_thread(broker_factory.start, *pki.jwt_args(), "--ws-allowed-origins", "https://app.example")
    assert (await upgrade(node, "https://app.example"))[0] == 101
    assert (await upgrade(node, None))[0] == 101
    status, body = await upgrade(node, EVIL)
    assert status == 403 and "--ws-allowed-origins" in body, (status, body)


async def test_a_star_allows_every_origin(broker_factory: BrokerFactory) -> None:
    node = await asyncio.to_thread(broker_factory.start, env={"RSBROKER_WS_ALLOWED_ORIGINS": "*"})
    assert (await upgrade(node, EVIL))[0] == 101
