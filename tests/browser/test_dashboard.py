"""The dashboard (``GET /`` on every node) in headless Chromium on a real three-node cluster:
it loads, shows every node, link and service live, a config edit made on another node, a
config write from the page (a refused value shows the reason), and a
SIGKILLed node turning dead on screen without a reload; and, on one node, a page whose event
stream is cut reconnecting by itself. Screenshots of each state are saved
under a temporary directory whose path the test prints."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, Route

from broker import frames as fr
from broker.frames import FrameType
from tests.support.brokerproc import BrokerProcess
from tests.support.cluster import Cluster, ClusterFactory, put_config
from tests.support.rawclient import RawClient

#: gossip declares a killed node dead in ~5 s at three nodes (lan profile); this bounds a busy machine
DEAD_TIMEOUT_MS = 60_000
UPDATE_TIMEOUT_MS = 20_000


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    factory = ClusterFactory()
    try:
        started = factory.start(3)
        asyncio.run(started.wait_converged())
        yield started
    finally:
        factory.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    path = Path(tempfile.mkdtemp(prefix="rsbroker-dashboard-shots-"))
    print(f"\ndashboard screenshots: {path}")
    return path


async def test_dashboard_is_live_on_a_three_node_cluster(cluster: Cluster, page: Page, shots: Path) -> None:
    n1, n2, n3 = cluster["n1"], cluster["n2"], cluster["n3"]
    await page.goto(n1.admin_url + "/")
    for node_id in ("n1", "n2", "n3"):
        await page.wait_for_selector(f'#nodes tr[data-node="{node_id}"][data-state="alive"]', timeout=UPDATE_TIMEOUT_MS)
    for a, b in (("n1", "n2"), ("n1", "n3"), ("n2", "n3")):  # a horizontal line has no height: 'attached'
        await page.wait_for_selector(f'#graph line.up[data-from="{a}"][data-to="{b}"]', state="attached", timeout=UPDATE_TIMEOUT_MS)
    loaded_at = await page.evaluate("window.dashboard.loadedAt")
    await page.screenshot(path=str(shots / "1-loaded.png"), full_page=True)

    async with await RawClient.tcp(n2.tcp) as provider, await RawClient.tcp(n1.tcp) as requester:
        await provider.setup(["dash.clock"], "clock-1")
        await cluster.wait_serves("dash.clock", {"clock-1"})
        await requester.setup()
        for _ in range(5):
            sid = await requester.request(FrameType.REQUEST_RESPONSE, "dash.clock.now")
            req = await provider.expect(FrameType.REQUEST_RESPONSE)
            await provider.send(fr.payload_frame(req.stream_id, b"12:00", next_=True, complete=True))
            await requester.expect(FrameType.PAYLOAD, stream_id=sid)
        row = await page.wait_for_selector('#services tr[data-service="dash.clock"]', timeout=UPDATE_TIMEOUT_MS)
        assert row is not None and "clock-1@n2" in await row.inner_text()
        await page.wait_for_function(
            "() => window.dashboard.last.services.some(s => s.service === 'dash.clock' && s.p99_s !== null && s.rate > 0)",
            timeout=UPDATE_TIMEOUT_MS,
        )
        await page.screenshot(path=str(shots / "2-traffic.png"), full_page=True)

    assert n2.admin is not None
    await put_config(n2.admin, "app/dashboard-test", {"edited_on": "n2"})
    await page.wait_for_selector('#config tr[data-key="app/dashboard-test"]', timeout=UPDATE_TIMEOUT_MS)
    await page.fill("#config-edit input[name=key]", "services/dash.clock")
    await page.fill("#config-edit input[name=value]", '{"policy": "fastest"}')
    await page.click("#config-edit button[type=submit]")
    await page.wait_for_selector("#config-result.error", timeout=UPDATE_TIMEOUT_MS)
    refusal = await page.inner_text("#config-result")
    assert "refused (400)" in refusal and "'policy' must be one of" in refusal
    await page.fill("#config-edit input[name=value]", '{"policy": "weighted"}')
    await page.click("#config-edit button[type=submit]")
    await page.wait_for_selector('#config tr[data-key="services/dash.clock"]', timeout=UPDATE_TIMEOUT_MS)
    await page.screenshot(path=str(shots / "3-config-edit.png"), full_page=True)

    seen_before_kill = await page.evaluate("window.dashboard.snapshots")
    n3.kill()
    await page.wait_for_selector('#nodes tr[data-node="n3"][data-state="dead"]', timeout=DEAD_TIMEOUT_MS)
    await page.wait_for_selector('#graph g.node[data-node="n3"][data-state="dead"]', timeout=UPDATE_TIMEOUT_MS)
    events = await page.inner_text("#events")
    assert "n3 alive → " in events
    await page.screenshot(path=str(shots / "4-n3-dead.png"), full_page=True)
    # the same page, updated by the feed: never reloaded
    assert await page.evaluate("window.dashboard.loadedAt") == loaded_at
    assert await page.evaluate("window.dashboard.snapshots") > seen_before_kill
    assert sorted(p.name for p in shots.iterdir()) == ["1-loaded.png", "2-traffic.png", "3-config-edit.png", "4-n3-dead.png"]


async def test_the_dashboard_reconnects_when_its_stream_fails(page: Page, broker: BrokerProcess) -> None:
    """The first two attempts at the event stream are cut by the network; the page retries
    (with a growing delay) and goes live without a reload."""
    attempts = 0

    async def cut_twice(route: Route) -> None:
        nonlocal attempts
        attempts += 1
        await (route.abort("connectionreset") if attempts <= 2 else route.continue_())

    await page.route("**/api/v1/events", cut_twice)
    await page.goto(f"{broker.admin_url}/")
    await page.wait_for_function("window.dashboard.snapshots > 0", timeout=UPDATE_TIMEOUT_MS)
    assert attempts == 3
    assert await page.text_content("#self") == broker.node_id
    assert (await page.text_content("#feed") or "").startswith("live")
    assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1
