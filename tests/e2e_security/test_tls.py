"""TLS and mTLS listeners of a real broker, with rsocket-py clients over TCP and secure WebSocket.

Certificates come from ``rsbroker certs`` (see ``pki.py``). Two brokers:

* ``tls_node`` — TLS with the node certificate and JWT authentication: a client that trusts
  the CA connects, authenticates with its token, registers and calls.
* ``mtls_node`` — mTLS only (``--tls-client-ca``, no JWT keys): the client certificate is the
  credential, its CN the principal the admin API shows and the access rules see (its OU
  ``iot`` the role); a certificate from another CA, or none, never gets a connection. Its
  admin API is on HTTPS (``--admin-tls``) and wants a client certificate with role admin.
"""

from __future__ import annotations

import ssl

import aiohttp
import pytest
from rsocket.exceptions import RSocketProtocolError

from broker.auth import client_context
from tests.e2e_security.clients import Provider, echo, raw_with_token, requester
from tests.e2e_security.pki import Pki
from tests.support.admin import connections
from tests.support.brokerproc import BrokerFactory, BrokerProcess, run_rsbroker
from tests.support.rawclient import ConnectionClosed

ACL = """
[acl.devices]
roles = ["iot"]
register = ["tls.*"]
call = ["tls.*"]
"""

#: what a client sees when the broker refuses its certificate during or right after the handshake
HANDSHAKE_FAILURES = (ssl.SSLError, ConnectionError, aiohttp.ClientError, RSocketProtocolError)


@pytest.fixture(scope="module")
def tls_node(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    return module_broker_factory.start(*pki.tls_args(), *pki.jwt_args(), config=ACL, admin_token=pki.admin_token())


@pytest.fixture(scope="module")
def mtls_node(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    return module_broker_factory.start(
        *pki.tls_args(client_ca=True), "--admin-tls", config=ACL, admin_ssl=device_context(pki, "ops")
    )


def device_context(pki: Pki, name: str = "device-7", *, trusted: bool = True) -> ssl.SSLContext:
    cert, key = pki.client_cert(name, trusted=trusted)
    return client_context(ca_file=pki.ca, cert_file=cert, key_file=key)


async def test_tls_with_jwt(tls_node: BrokerProcess, pki: Pki, transport: str) -> None:
    service = f"tls.jwt.{transport}"
    context = client_context(ca_file=pki.ca)
    token = pki.token("sensor-hub", ("iot",))
    async with Provider(tls_node, service, transport, token=token, ssl_context=context) as provider:
        async with requester(tls_node, transport, token=token, ssl_context=context) as client:
            assert await echo(client, f"{service}.echo", b"over tls") == b"over tls"
    assert provider.received == [f"{service}.echo"]


async def test_plain_client_on_a_tls_listener_gets_nowhere(tls_node: BrokerProcess, pki: Pki, transport: str) -> None:
    """Raw frames, because rsocket-py's WebSocket client swallows a failed connect and waits forever."""
    with pytest.raises((ConnectionClosed, *HANDSHAKE_FAILURES)):
        async with await raw_with_token(tls_node, pki.token("sensor-hub", ("iot",)), transport) as raw:
            await raw.recv()


async def test_mtls_certificate_names_the_principal(mtls_node: BrokerProcess, pki: Pki, transport: str) -> None:
    service = f"tls.mtls.{transport}"
    context = device_context(pki)
    async with Provider(mtls_node, service, transport, ssl_context=context) as provider:
        async with requester(mtls_node, transport, ssl_context=context) as client:
            assert await echo(client, f"{service}.echo", b"by certificate") == b"by certificate"
            mine = [c for c in await connections(mtls_node) if c["instance"] == provider.instance]
            assert [c["principal"] for c in mine] == ["device-7"]
    assert provider.received == [f"{service}.echo"]


@pytest.mark.parametrize("certificate", ["untrusted", "none"])
async def test_mtls_refuses_untrusted_or_missing_certificate(
    mtls_node: BrokerProcess, pki: Pki, transport: str, certificate: str
) -> None:
    context = (
        device_context(pki, "intruder", trusted=False) if certificate == "untrusted" else client_context(ca_file=pki.ca)
    )
    with pytest.raises(HANDSHAKE_FAILURES):
        async with requester(mtls_node, transport, ssl_context=context) as client:
            await echo(client, "tls.any.echo", b"let me in")
    principals = {c["principal"] for c in await connections(mtls_node)}
    assert "intruder" not in principals
    # and the node still serves a trusted device
    async with requester(mtls_node, transport, ssl_context=device_context(pki)) as client:
        with pytest.raises(RSocketProtocolError) as refused:
            await echo(client, "tls.nobody.echo", b"?")
        assert refused.value.error_code.name == "REJECTED"  # routed (nobody provides it), so admitted


async def test_mtls_only_admin_api_wants_a_client_certificate_with_role_admin(mtls_node: BrokerProcess, pki: Pki) -> None:
    async with aiohttp.ClientSession() as http:
        for name, expected in (("ops", 200), ("device-7", 403)):
            async with http.get(f"{mtls_node.admin_url}/api/v1/connections", ssl=device_context(pki, name)) as response:
                assert response.status == expected, (name, await response.text())
        with pytest.raises(HANDSHAKE_FAILURES):  # no client certificate: no TLS session at all
            async with http.get(f"{mtls_node.admin_url}/api/v1/connections", ssl=client_context(ca_file=pki.ca)) as response:
                await response.read()


def test_mtls_only_admin_api_without_admin_tls_refuses_to_start(pki: Pki) -> None:
    done = run_rsbroker("serve", "--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0", *pki.tls_args(client_ca=True))
    assert done.returncode != 0 and "--admin-tls (client certificates with role admin)" in done.stderr, done.stderr
