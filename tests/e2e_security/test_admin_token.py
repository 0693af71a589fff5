"""``--admin-require-token``: the admin API wants a bearer JWT with role admin; health stays open."""

from __future__ import annotations

import aiohttp
import pytest

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
    status, body = await get(node, path, pki.token("operator", ("admin",)))
    assert status == 200, body


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
async def test_health_probes_stay_open(node: BrokerProcess, path: str) -> None:
    status, body = await get(node, path)
    assert status == 200, body
