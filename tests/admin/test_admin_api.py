"""The admin API as an operator meets it: documented routes, the dashboard, metrics, and
the config store's HTTP contract on a real single-node broker (a one-voter Raft group)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from admin.app import admin_app
from admin.openapi import PATHS
from rsbroker.node import Node
from broker.settings import Settings
from tests.support.brokerproc import BrokerFactory, BrokerProcess


def _documented_operations() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in PATHS.items() for method in ops}


def _registered_operations() -> set[tuple[str, str]]:
    app = admin_app(Node(Settings()))  # a node that was never started: routes exist before it runs
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        canonical = route.resource.canonical if route.resource else ""
        out.add((route.method, canonical.replace("{key:.+}", "{key}")))
    return out


def test_openapi_document_lists_exactly_the_registered_routes() -> None:
    assert _documented_operations() == _registered_operations()


@pytest.fixture(scope="module")
def node() -> Iterator[BrokerProcess]:
    factory = BrokerFactory()
    try:
        yield factory.start()
    finally:
        factory.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_dashboard_and_openapi_are_served(node: BrokerProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{node.admin_url}/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert "/api/v1/events" in await resp.text()
    async with http.get(f"{node.admin_url}/api/v1/openapi.json") as resp:
        doc = await resp.json()
        assert doc["openapi"].startswith("3.") and "/api/v1/config/{key}" in doc["paths"]


async def test_metrics_are_prometheus_text_with_the_relay_counters(node: BrokerProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{node.admin_url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert "# TYPE rsbroker_requests_total counter" in text
    assert "rsbroker_connections_accepted_total" in text


async def test_config_put_get_delete_round_trip(node: BrokerProcess, http: aiohttp.ClientSession) -> None:
    url = f"{node.admin_url}/api/v1/config/app/feature-flags"
    async with http.put(url, json={"dark_mode": True}) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["index"] > 0
    async with http.get(url) as resp:
        assert (await resp.json())["value"] == {"dark_mode": True}
    async with http.get(url, params={"stale": "true"}) as resp:
        assert (await resp.json())["value"] == {"dark_mode": True}
    async with http.get(f"{node.admin_url}/api/v1/config", params={"prefix": "app/"}) as resp:
        assert (await resp.json())["items"]["app/feature-flags"] == {"dark_mode": True}
    async with http.delete(url) as resp:
        assert resp.status == 200
    async with http.get(url) as resp:
        assert resp.status == 404
    async with http.delete(url) as resp:
        assert resp.status == 404


@pytest.mark.parametrize(
    ("key", "body", "says"),
    [
        ("services/com.acme.greeter", {"policy": "fastest"}, "'policy' must be one of"),
        ("acl/ops", {"call": "com.acme.*"}, "'call' must be a list"),
        ("revoked/abc", {"expires_at": "tomorrow"}, "expires_at"),
        ("nonsense/key", 1, "nonsense/"),
    ],
)
async def test_bad_config_values_are_refused_with_a_reason_and_not_applied(
    node: BrokerProcess, http: aiohttp.ClientSession, key: str, body: object, says: str
) -> None:
    async with http.put(f"{node.admin_url}/api/v1/config/{key}", json=body) as resp:
        assert resp.status == 400
        assert says in (await resp.json())["error"]
    async with http.get(f"{node.admin_url}/api/v1/config/{key}") as resp:
        assert resp.status in (400, 404)


async def test_a_body_that_is_not_json_gets_400(node: BrokerProcess, http: aiohttp.ClientSession) -> None:
    async with http.put(f"{node.admin_url}/api/v1/config/app/x", data=b"{not json") as resp:
        assert resp.status == 400
        assert "JSON" in (await resp.json())["error"]


async def test_a_single_node_is_its_own_raft_leader_and_topology(node: BrokerProcess, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{node.admin_url}/api/v1/raft") as resp:
        raft = await resp.json()
    assert raft["leader"] == node.node_id and raft["role"] == "leader"
    async with http.get(f"{node.admin_url}/api/v1/topology") as resp:
        topology = await resp.json()
    assert [n["node_id"] for n in topology["nodes"]] == [node.node_id]
    assert topology["nodes"][0]["link"] == "self"
