"""rsocket-py clients over TLS and mTLS (TCP and WSS) with our contexts, JWT in SETUP.

The server side here is a plain rsocket-py responder that does what the broker's
listeners do with this package: take the mTLS principal from the transport
(``peer_principal``) and verify the bearer token from SETUP (``verify_setup``). It shows
the contexts work with the transports real clients use, and that ``peer_principal``
reads aiohttp's transport (WSS) as well as asyncio's (TCP).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from rsocket.helpers import create_future, single_transport_provider
from rsocket.payload import Payload
from rsocket.request_handler import BaseRequestHandler
from rsocket.rsocket_client import RSocketClient
from rsocket.rsocket_server import RSocketServer
from rsocket.transports.aiohttp_websocket import TransportAioHttpClient, TransportAioHttpWebsocket
from rsocket.transports.tcp import TransportTCP

from broker.auth import (
    AUTHENTICATION_MIME,
    AuthError,
    JwtVerifier,
    Principal,
    client_context,
    encode_bearer,
    peer_principal,
    server_context,
)
from broker.auth.tokens import load_private_key, mint_token
from broker.auth.tools import certs_main

STEP = 20.0  # bound per network step on a busy machine; never a speed assertion


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    assert certs_main(["init", "--out", str(root)]) == 0
    assert certs_main(["node", "--ca-dir", str(root), "--name", "n1", "--host", "127.0.0.1"]) == 0
    assert certs_main(["client", "--ca-dir", str(root), "--name", "device-7", "--roles", "iot"]) == 0
    assert certs_main(["keypair", "--type", "ec", "--out", str(root)]) == 0
    return root


class WhoAmI(BaseRequestHandler):
    """Answers every request with the identities the connection established."""

    def __init__(self, tls: Principal | None, verifier: JwtVerifier) -> None:
        self.tls = tls
        self.verifier = verifier
        self.jwt: str | None = None

    async def on_setup(self, data_encoding: bytes, metadata_encoding: bytes, payload: Payload) -> None:
        try:
            self.jwt = self.verifier.verify_setup(payload.metadata or None).name
        except AuthError as exc:
            self.jwt = f"refused: {exc}"

    async def request_response(self, payload: Payload) -> Awaitable[Payload]:
        answer = {"tls": self.tls.name if self.tls else None, "jwt": self.jwt}
        return create_future(Payload(json.dumps(answer).encode()))


Listen = Callable[[ssl.SSLContext], Awaitable[int]]


@pytest.fixture
async def tcp_listener(pki: Path) -> AsyncIterator[Listen]:
    verifier = JwtVerifier(pki / "jwt-public.pem")
    servers: list[asyncio.Server] = []
    responders: list[RSocketServer] = []

    async def listen(context: ssl.SSLContext) -> int:
        def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tls = peer_principal(writer.transport)
            responders.append(
                RSocketServer(TransportTCP(reader, writer), handler_factory=lambda: WhoAmI(tls, verifier))
            )

        server = await asyncio.start_server(session, "127.0.0.1", 0, ssl=context)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield listen
    for responder in responders:
        await responder.close()
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def wss_listener(pki: Path) -> AsyncIterator[Listen]:
    verifier = JwtVerifier(pki / "jwt-public.pem")
    runners: list[web.AppRunner] = []

    async def handle(request: web.Request) -> web.WebSocketResponse:
        tls = peer_principal(request.transport)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        transport = TransportAioHttpWebsocket(ws)
        RSocketServer(transport, handler_factory=lambda: WhoAmI(tls, verifier))
        await transport.handle_incoming_ws_messages()
        return ws

    async def listen(context: ssl.SSLContext) -> int:
        app = web.Application()
        app.router.add_get("/rsocket", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        return int(runner.addresses[0][1])

    yield listen
    for runner in runners:
        await runner.cleanup()


def bearer_setup(pki: Path) -> Payload:
    token = mint_token(load_private_key(pki / "jwt-private.pem"), sub="alice", roles=["greeter"])
    return Payload(b"", encode_bearer(token))


async def ask_tcp(port: int, context: ssl.SSLContext, setup: Payload | None) -> dict[str, str | None]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=context), STEP)
    client = RSocketClient(
        single_transport_provider(TransportTCP(reader, writer)),
        metadata_encoding=AUTHENTICATION_MIME.encode(),
        setup_payload=setup,
    )
    async with client:
        response = await asyncio.wait_for(client.request_response(Payload(b"?")), STEP)
    return dict(json.loads(response.data))


async def ask_wss(port: int, context: ssl.SSLContext, setup: Payload | None) -> dict[str, str | None]:
    async with aiohttp.ClientSession() as http:
        websocket = await asyncio.wait_for(
            http.ws_connect(f"wss://127.0.0.1:{port}/rsocket", ssl=context), STEP
        )
        client = RSocketClient(
            single_transport_provider(TransportAioHttpClient(websocket=websocket)),
            metadata_encoding=AUTHENTICATION_MIME.encode(),
            setup_payload=setup,
        )
        async with client:
            response = await asyncio.wait_for(client.request_response(Payload(b"?")), STEP)
        await websocket.close()
    return dict(json.loads(response.data))


@pytest.mark.parametrize("transport", ["tcp", "wss"])
async def test_tls_with_jwt_in_setup(
    pki: Path, tcp_listener: Listen, wss_listener: Listen, transport: str
) -> None:
    listen, ask = (tcp_listener, ask_tcp) if transport == "tcp" else (wss_listener, ask_wss)
    port = await listen(server_context(pki / "n1.pem", pki / "n1-key.pem"))
    answer = await ask(port, client_context(ca_file=pki / "ca.pem"), bearer_setup(pki))
    assert answer == {"tls": None, "jwt": "alice"}


@pytest.mark.parametrize("transport", ["tcp", "wss"])
async def test_mtls_client_certificate_names_the_principal(
    pki: Path, tcp_listener: Listen, wss_listener: Listen, transport: str
) -> None:
    listen, ask = (tcp_listener, ask_tcp) if transport == "tcp" else (wss_listener, ask_wss)
    port = await listen(server_context(pki / "n1.pem", pki / "n1-key.pem", client_ca_file=pki / "ca.pem"))
    device = client_context(
        ca_file=pki / "ca.pem", cert_file=pki / "device-7.pem", key_file=pki / "device-7-key.pem"
    )
    answer = await ask(port, device, None)
    assert answer == {"tls": "device-7", "jwt": "refused: no bearer token in SETUP"}
