"""``--admin-require-token``: the admin API wants a bearer JWT with role admin; health stays open.

Also ``--admin-tls``: the admin API on HTTPS only."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from broker.auth import client_context
from tests.e2e_security.pki import Pki
from tests.support.brokerproc import BrokerFactory, BrokerProcess

PROTECTED = ["/api/v1/node", "/api/v1/connections", "/api/v1/services", "/metrics"]


@pytest.fixture(scope="module")
def node(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    return module_broker_factory.start(*pki.jwt_args(), "--admin-require-token")


async def get(node: BrokerProcess, path: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.admin_url}{path}", headers=headers) as response:
            return response.status, await response.text()


@pytest.mark.parametrize("path", PROTECTED)
async def test_protected_paths_by_credential(node: BrokerProcess, pki: Pki, path: str) -> None:
    status, body = await get(node, path)
    assert status == 401 and "requires 'Authorization: Bearer <token>'" in body
    status, body = await get(node, path, pki.token("intruder", ("admin",), kind="stranger"))
    assert status == 401 and "signature does not match any configured key" in body
    status, body = await get(node, path, pki.token("viewer", ("greeter",)))
    assert status == 403 and "principal 'viewer' lacks the admin role" in body
    expired = pki.token("operator", ("admin",), now=time.time() - 7200)
    status, body = await get(node, path, expired)
    assert status == 401 and "token expired at " in body
    admin = pki.token("operator", ("admin",))
    status, body = await get(node, path, admin)
    assert status == 200, body
    assert admin.split(".")[2] not in node.output() and expired.split(".")[2] not in node.output()


@pytest.mark.parametrize(
    "path",
    [
        "/health/../api/v1/node",
        "/health/%2e%2e/api/v1/connections",
        "/health/..%2fapi/v1/services",
        "/health/live/../../metrics",
        "/HEALTH/../api/v1/node",
        "//api/v1/node",
    ],
)
async def test_path_tricks_do_not_pass_as_health_probes(node: BrokerProcess, path: str) -> None:
    """Raw HTTP, because aiohttp's client would normalise these paths before sending them."""
    host, port = node.admin.rsplit(":", 1)  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        status_line = (await reader.readline()).decode()
    finally:
        writer.close()
    status = int(status_line.split()[1])
    assert status in (401, 404), status_line


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
async def test_health_probes_stay_open(node: BrokerProcess, path: str) -> None:
    status, body = await get(node, path)
    assert status == 200, body


async def test_admin_over_tls_with_token(broker_factory: BrokerFactory, pki: Pki) -> None:
    """``--admin-tls``: the admin API speaks only HTTPS (the listeners' certificate), token still required."""
    node = await asyncio.to_thread(
        broker_factory.start, *pki.tls_args(), *pki.jwt_args(), "--admin-tls", "--admin-require-token"
    )
    https = f"https://{node.admin}"
    context = client_context(ca_file=pki.ca)
    admin = {"Authorization": f"Bearer {pki.token('operator', ('admin',))}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{https}/api/v1/node", ssl=context, headers=admin) as response:
            assert response.status == 200, await response.text()
        async with http.get(f"{https}/api/v1/node", ssl=context) as response:
            assert response.status == 401
        async with http.get(f"{https}/health/live", ssl=context) as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"{node.admin_url}/health/live") as response:  # plain HTTP
                await response.read()
