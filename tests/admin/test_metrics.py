"""``/metrics`` on a real two-node cluster: per-route requests by outcome with latency
histograms, bounded label sets, connection/SETUP/limit counters, gossip, links and Raft —
and every metric the Grafana dashboard in ``deploy/`` queries exists on a running node."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker import frames as fr
from broker import metadata as md
from broker.frames import ErrorCode, FrameType
from tests.support.admin import wait_for
from tests.support.cluster import Cluster, ClusterFactory
from tests.support.rawclient import RawClient

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "rsbroker-dashboard.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    factory = ClusterFactory()
    try:
        started = factory.start(
            2, "--max-streams", "2", "--metrics-max-routes-per-service", "2", "--metrics-aggregate-prefixes", "device.,sensor."
        )
        asyncio.run(started.wait_converged())
        yield started
    finally:
        factory.close()


async def scrape(admin: str | None) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://{admin}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def queryable_names(text: str) -> set[str]:
    """Names a PromQL query can use: counters as ``_total``, histograms as ``_bucket/_sum/_count``."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


async def test_requests_are_counted_per_route_and_outcome_on_both_hops(cluster: Cluster) -> None:
    n1, n2 = cluster["n1"], cluster["n2"]
    async with await RawClient.tcp(n2.tcp) as provider, await RawClient.tcp(n1.tcp) as requester:
        await provider.setup(["m.calc"], "calc-1")
        await cluster.wait_serves("m.calc", {"calc-1"})
        await requester.setup()
        ok = await requester.request(FrameType.REQUEST_RESPONSE, "m.calc.add", b"1+1")
        req = await provider.expect(FrameType.REQUEST_RESPONSE)
        await provider.send(fr.payload_frame(req.stream_id, b"2", next_=True, complete=True))
        await requester.expect(FrameType.PAYLOAD, stream_id=ok)
        bad = await requester.request(FrameType.REQUEST_RESPONSE, "m.calc.div", b"1/0")
        req = await provider.expect(FrameType.REQUEST_RESPONSE)
        await provider.send(fr.error_frame(req.stream_id, ErrorCode.APPLICATION_ERROR, "division by zero"))
        await requester.expect_error(ErrorCode.APPLICATION_ERROR, stream_id=bad)
        nobody = await requester.request(FrameType.REQUEST_RESPONSE, "m.nobody.hello")
        await requester.expect_error(ErrorCode.REJECTED, stream_id=nobody)
        open_stream = await requester.request(FrameType.REQUEST_STREAM, "m.calc.count")
        await provider.expect(FrameType.REQUEST_STREAM)
        found = samples(await scrape(n1.admin))
        assert value(found, "rsbroker_route_in_flight", service="m.calc", route="other") == 1
        await requester.send(fr.cancel_frame(open_stream))
        await provider.expect(FrameType.CANCEL)

    for node in (n1, n2):  # n1 relays to its link, n2 from its link to the provider
        found = samples(await scrape(node.admin))
        route = {"service": "m.calc", "route": "m.calc.add"}
        assert value(found, "rsbroker_route_requests_total", **route, outcome="ok") == 1, node.node_id
        assert value(found, "rsbroker_route_first_response_seconds_count", **route, outcome="ok") == 1
        assert value(found, "rsbroker_route_duration_seconds_bucket", **route, outcome="ok", le="+Inf") == 1
        assert value(found, "rsbroker_route_duration_seconds_bucket", **route, outcome="ok", le="30.0") == 1
        assert value(found, "rsbroker_route_bytes_total", **route, direction="out") > 0
        assert value(found, "rsbroker_route_bytes_total", **route, direction="in") > 0
        div = {"service": "m.calc", "route": "m.calc.div"}
        assert value(found, "rsbroker_route_requests_total", **div, outcome="application_error") == 1
        assert value(found, "rsbroker_route_in_flight", service="m.calc", route="other") == 0
    # the third route of m.calc is over the cap of 2: it is counted as 'other'
    found = samples(await scrape(n1.admin))
    assert value(found, "rsbroker_route_requests_total", service="m.calc", route="other", outcome="canceled") == 1
    assert value(found, "rsbroker_route_requests_total", service="m.nobody", route="m.nobody.hello", outcome="rejected") == 1
    assert value(found, "rsbroker_setups_accepted_total") >= 2


async def test_device_services_fold_into_their_prefix(cluster: Cluster) -> None:
    async with await RawClient.tcp(cluster["n1"].tcp) as requester:
        await requester.setup()
        for device in range(20):
            sid = await requester.request(FrameType.REQUEST_RESPONSE, f"device.d{device}.read")
            await requester.expect_error(ErrorCode.REJECTED, stream_id=sid)
    text = await scrape(cluster["n1"].admin)
    found = samples(text)
    assert value(found, "rsbroker_route_requests_total", service="device.*", route="device.*.read", outcome="rejected") == 20
    assert not re.search(r'service="device\.d\d+"', text)


async def test_setup_refusals_and_limits_are_counted_by_reason(cluster: Cluster) -> None:
    async with await RawClient.tcp(cluster["n2"].tcp) as client:
        await client.send(fr.setup_frame(keepalive_ms=0, max_lifetime_ms=1000))
        await client.expect_error(ErrorCode.INVALID_SETUP)
    async with await RawClient.tcp(cluster["n2"].tcp) as client:
        await client.setup()
        for _ in range(2):  # fragmented requests whose metadata never ends hold their stream
            sid = client.next_stream_id()
            await client.send(fr.request_frame(FrameType.REQUEST_RESPONSE, sid, md.route_metadata("m.x.y"), b"", follows=True))
        await client.request(FrameType.REQUEST_RESPONSE, "m.x.y")
        await client.expect_error(ErrorCode.REJECTED, stream_id=sid + 2, contains="limit 2")
    found = samples(await scrape(cluster["n2"].admin))
    assert value(found, "rsbroker_setups_refused_total", reason="INVALID_SETUP") == 1
    assert value(found, "rsbroker_limit_hits_total", limit="max_streams") == 1
    assert value(found, "rsbroker_limit_hits_total", limit="max_frame_size") == 0


async def test_cluster_families_report_gossip_links_and_raft(cluster: Cluster) -> None:
    async def probed() -> Samples | None:
        found = samples(await scrape(cluster["n1"].admin))
        return found if value(found, "rsbroker_gossip_probes_total") > 0 else None

    found = await wait_for(probed, timeout=30, interval=0.2, message="n1 to count a gossip probe")
    assert value(found, "rsbroker_gossip_members", state="alive") == 2
    assert value(found, "rsbroker_gossip_members", state="dead") == 0
    assert value(found, "rsbroker_gossip_packets_total", direction="sent") > 0
    assert value(found, "rsbroker_gossip_bytes_total", direction="received") > 0
    assert value(found, "rsbroker_link_up", peer="n2") == 1
    assert value(found, "rsbroker_link_connects_total", peer="n2") >= 1
    assert value(found, "rsbroker_raft_term") >= 1
    assert value(found, "rsbroker_raft_commit_index") >= 1
    assert value(found, "rsbroker_raft_fsync_seconds_count") >= 1
    leaders = [dict(labels)["leader"] for name, labels in found if name == "rsbroker_raft_leader"]
    assert leaders and leaders[0] in ("n1", "n2")


async def test_every_metric_the_grafana_dashboard_queries_exists(cluster: Cluster) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"\brsbroker_[a-z_]+", target["expr"])
    }
    assert len(queried) >= 25
    exposed = queryable_names(await scrape(cluster["n1"].admin))
    assert queried - exposed == set()


async def test_streams_of_a_connection_that_missed_its_keepalive_end_as_timeout(cluster: Cluster) -> None:
    n1 = cluster["n1"]
    async with await RawClient.tcp(n1.tcp) as provider, await RawClient.tcp(n1.tcp) as requester:
        await provider.setup(["m.sleepy"], "sleepy-1", keepalive_ms=200, max_lifetime_ms=1000)
        await cluster.wait_serves("m.sleepy", {"sleepy-1"})
        await requester.setup()
        sid = await requester.request(FrameType.REQUEST_RESPONSE, "m.sleepy.nap")
        await provider.expect(FrameType.REQUEST_RESPONSE)
        # the provider sends nothing more, not even KEEPALIVE: the broker drops it after 1 s
        await requester.expect_error(ErrorCode.APPLICATION_ERROR, stream_id=sid, contains="went away", timeout=30)
    found = samples(await scrape(n1.admin))
    assert value(found, "rsbroker_route_requests_total", service="m.sleepy", route="m.sleepy.nap", outcome="timeout") == 1
    assert value(found, "rsbroker_route_duration_seconds_count", service="m.sleepy", route="m.sleepy.nap", outcome="timeout") == 1
    assert value(found, "rsbroker_keepalive_timeouts_total") >= 1
