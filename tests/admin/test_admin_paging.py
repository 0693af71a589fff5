"""The list endpoints at fleet size, on a real single node: counts first, filters, pages that
join up without gaps or repeats, and a clear 400 naming the parameter for a bad value."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.admin import get_json
from tests.support.brokerproc import BrokerFactory, BrokerProcess
from tests.support.fleet import close_devices, connect_devices, service_of, wait_routes_everywhere

DEVICES = 250


@pytest.fixture(scope="module")
def node() -> Iterator[BrokerProcess]:
    factory = BrokerFactory()
    try:
        yield factory.start()
    finally:
        factory.close()


async def _all_pages(admin: str, path: str, key: str, limit: int) -> tuple[int, list]:
    """Follow ``next_cursor`` to the end; the total of the first page and every item."""
    items: list = []
    cursor = ""
    total = None
    while True:
        sep = "&" if "?" in path else "?"
        status, body = await get_json(admin, f"{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200, body
        total = body["total"] if total is None else total
        page = body[key]
        items.extend(page if isinstance(page, list) else page.keys())
        assert len(page) <= limit
        cursor = body["next_cursor"]
        if cursor is None:
            return total, items
        cursor = str(cursor)


async def test_services_and_connections_count_filter_and_page(node: BrokerProcess) -> None:
    devices = await connect_devices([node], range(DEVICES), per_connection=5)
    admin = str(node.admin)
    try:
        await wait_routes_everywhere([node], DEVICES, timeout=30)  # a SETUP has no answer: wait until all are in
        total, names = await _all_pages(admin, "/api/v1/services?prefix=device.", "services", 40)
        assert total == DEVICES and names == [service_of(n) for n in range(DEVICES)]
        status, one = await get_json(admin, f"/api/v1/services?prefix={service_of(7)}")
        assert one["total"] == 1 and list(one["services"]) == [service_of(7)]
        status, none = await get_json(admin, "/api/v1/services?node=elsewhere")
        assert status == 200 and none["total"] == 0 and none["services"] == {}

        total, conns = await _all_pages(admin, "/api/v1/connections?prefix=device.", "connections", 7)
        assert total == DEVICES // 5 == len(conns) == len({c["id"] for c in conns})
        assert sorted(s for c in conns for s in c["services"]) == [service_of(n) for n in range(DEVICES)]

        status, members = await get_json(admin, "/api/v1/members?prefix=device.&limit=3")
        [me] = members["members"]
        assert members["total"] == 1 and me["services_total"] == DEVICES and me["services"] == [service_of(n) for n in range(3)]
        status, topology = await get_json(admin, "/api/v1/topology?limit=2")
        assert topology["total"] == 1 and topology["nodes"][0]["services_total"] == DEVICES
        assert len(topology["nodes"][0]["services"]) == 2
    finally:
        await close_devices(devices)


@pytest.mark.parametrize("path", ["/api/v1/services", "/api/v1/connections", "/api/v1/members", "/api/v1/topology"])
@pytest.mark.parametrize("limit", ["0", "-1", "abc", "10001"])
async def test_a_bad_limit_is_refused_with_the_parameter_named(node: BrokerProcess, path: str, limit: str) -> None:
    status, body = await get_json(str(node.admin), f"{path}?limit={limit}")
    assert status == 400 and body["parameter"] == "limit" and "1..10000" in body["error"]


async def test_a_bad_connection_cursor_is_refused(node: BrokerProcess) -> None:
    status, body = await get_json(str(node.admin), "/api/v1/connections?cursor=x")
    assert status == 400 and body["parameter"] == "cursor"
