"""TLS and mTLS handshakes on 127.0.0.1 with asyncio, using certificates made by `rsbroker certs`."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from broker.auth import Principal, client_context, peer_principal, principal_from_peercert, server_context
from broker.auth.tools import certs_main

STEP = 10.0  # generous bound per network step on a busy machine; never a speed assertion


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with node n1 (127.0.0.1, localhost) and client alice (roles greeter, ops)."""
    root = tmp_path_factory.mktemp("pki")
    assert certs_main(["init", "--out", str(root)]) == 0
    assert certs_main(["node", "--ca-dir", str(root), "--name", "n1", "--host", "127.0.0.1,localhost"]) == 0
    assert certs_main(["client", "--ca-dir", str(root), "--name", "alice", "--roles", "greeter,ops"]) == 0
    return root


@pytest.fixture(scope="module")
def rogue_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another CA the broker does not trust, with a client 'alice' impersonating the real one."""
    root = tmp_path_factory.mktemp("rogue")
    assert certs_main(["init", "--out", str(root), "--name", "rogue CA"]) == 0
    assert certs_main(["client", "--ca-dir", str(root), "--name", "alice", "--roles", "admin"]) == 0
    assert certs_main(["node", "--ca-dir", str(root), "--name", "n1", "--host", "127.0.0.1"]) == 0
    return root


@dataclass
class EchoServer:
    """Echoes one line back, prefixed by the principal the TLS layer established."""

    port: int
    principals: list[Principal | None] = field(default_factory=list)


Serve = Callable[[ssl.SSLContext], Awaitable[EchoServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start TLS echo servers on 127.0.0.1; all are closed after the test."""
    servers: list[asyncio.Server] = []

    async def start(context: ssl.SSLContext) -> EchoServer:
        echo = EchoServer(port=0)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            principal = peer_principal(writer.transport)
            echo.principals.append(principal)
            try:
                line = await reader.readline()
                who = principal.name if principal else "-"
                writer.write(f"{who}:".encode() + line)
                await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        servers.append(server)
        echo.port = server.sockets[0].getsockname()[1]
        return echo

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def exchange(port: int, context: ssl.SSLContext, server_hostname: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname), STEP
    )
    try:
        writer.write(b"hello\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), STEP)
    finally:
        writer.close()


async def refused(port: int, context: ssl.SSLContext) -> None:
    """The connection must not yield an echo: the handshake fails on one side or the other.

    With TLS 1.3 the client may finish its half of the handshake before the server rejects
    its certificate; the rejection then arrives as an alert (SSLError) or a closed stream.
    """
    try:
        answer = await exchange(port, context)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return
    assert answer == b""


async def test_tls_handshake_and_echo(pki: Path, serve: Serve) -> None:
    echo = await serve(server_context(pki / "n1.pem", pki / "n1-key.pem"))
    context = client_context(ca_file=pki / "ca.pem")
    assert await exchange(echo.port, context) == b"-:hello\n"
    assert await exchange(echo.port, context, server_hostname="localhost") == b"-:hello\n"
    assert echo.principals == [None, None]


async def test_client_refuses_a_server_it_does_not_trust(pki: Path, rogue_pki: Path, serve: Serve) -> None:
    echo = await serve(server_context(rogue_pki / "n1.pem", rogue_pki / "n1-key.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        await exchange(echo.port, client_context(ca_file=pki / "ca.pem"))


async def test_client_refuses_a_certificate_for_another_host(pki: Path, serve: Serve) -> None:
    echo = await serve(server_context(pki / "n1.pem", pki / "n1-key.pem"))
    with pytest.raises(ssl.SSLCertVerificationError, match=r"match|mismatch"):
        await exchange(
            echo.port, client_context(ca_file=pki / "ca.pem"), server_hostname="broker.example.com"
        )


async def test_mtls_gives_the_certificate_subject_as_principal(pki: Path, serve: Serve) -> None:
    echo = await serve(server_context(pki / "n1.pem", pki / "n1-key.pem", client_ca_file=pki / "ca.pem"))
    context = client_context(
        ca_file=pki / "ca.pem", cert_file=pki / "alice.pem", key_file=pki / "alice-key.pem"
    )
    assert await exchange(echo.port, context) == b"alice:hello\n"
    (principal,) = echo.principals
    assert principal is not None
    assert (principal.name, principal.roles, principal.source) == (
        "alice",
        frozenset({"greeter", "ops"}),
        "mtls",
    )
    assert principal.expires_at is not None
    assert 360 * 86400 < principal.expires_at - time.time() < 366 * 86400


async def test_mtls_refuses_a_client_without_a_certificate(pki: Path, serve: Serve) -> None:
    echo = await serve(server_context(pki / "n1.pem", pki / "n1-key.pem", client_ca_file=pki / "ca.pem"))
    await refused(echo.port, client_context(ca_file=pki / "ca.pem"))
    assert echo.principals == []


async def test_mtls_refuses_an_untrusted_client_certificate(pki: Path, rogue_pki: Path, serve: Serve) -> None:
    echo = await serve(server_context(pki / "n1.pem", pki / "n1-key.pem", client_ca_file=pki / "ca.pem"))
    rogue = client_context(
        ca_file=pki / "ca.pem", cert_file=rogue_pki / "alice.pem", key_file=rogue_pki / "alice-key.pem"
    )
    await refused(echo.port, rogue)
    assert echo.principals == []


async def test_optional_client_certificates(pki: Path, rogue_pki: Path, serve: Serve) -> None:
    echo = await serve(
        server_context(
            pki / "n1.pem", pki / "n1-key.pem", client_ca_file=pki / "ca.pem", require_client_cert=False
        )
    )
    anonymous = client_context(ca_file=pki / "ca.pem")
    alice = client_context(
        ca_file=pki / "ca.pem", cert_file=pki / "alice.pem", key_file=pki / "alice-key.pem"
    )
    assert await exchange(echo.port, anonymous) == b"-:hello\n"
    assert await exchange(echo.port, alice) == b"alice:hello\n"
    rogue = client_context(
        ca_file=pki / "ca.pem", cert_file=rogue_pki / "alice.pem", key_file=rogue_pki / "alice-key.pem"
    )
    await refused(echo.port, rogue)  # an offered certificate is still verified
    assert [p.name if p else None for p in echo.principals] == [None, "alice"]


def test_bad_files_are_reported_with_their_paths(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot load TLS certificate .*missing.pem"):
        server_context(tmp_path / "missing.pem", pki / "n1-key.pem")
    with pytest.raises(ValueError, match=r"cannot load TLS certificate .*alice.pem"):
        server_context(pki / "alice.pem", pki / "n1-key.pem")  # key does not match the certificate
    with pytest.raises(ValueError, match=r"cannot load CA certificates from .*nope.pem"):
        client_context(ca_file=tmp_path / "nope.pem")
    with pytest.raises(ValueError, match="needs both cert_file and key_file"):
        client_context(ca_file=pki / "ca.pem", cert_file=pki / "alice.pem")


def test_peercert_without_common_name_gives_no_principal() -> None:
    assert peer_principal(None) is None
    assert principal_from_peercert(None) is None
    assert principal_from_peercert({}) is None
    assert principal_from_peercert({"subject": ((("organizationName", "acme"),),)}) is None
    principal = principal_from_peercert(
        {"subject": ((("commonName", "n2"),),), "notAfter": "Jan  1 00:00:00 2030 GMT"}
    )
    assert principal is not None
    assert (principal.name, principal.roles, principal.expires_at) == ("n2", frozenset(), 1893456000.0)
