"""§3 of issue 12: partitions heal for gossip, links and Raft; a minority never answers a
linearizable read or a write.

A partition here is a host's link taken down on the bridge: real packets lost between real
processes on their own addresses, the way a switch port or a node's network fails.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.admin import wait_for
from tests.support.netns import Host
from tests.testbed.views import start_cluster, wait_converged, wait_state

pytestmark = pytest.mark.timeout(300)


def links_up(host: Host, peers: set[str]) -> bool:
    status, body = host.http("GET", "/api/v1/topology")
    return status == 200 and all(n["link"] == "up" for n in body["nodes"] if n["node_id"] in peers)


async def test_a_cut_off_minority_refuses_reads_and_writes_and_everything_heals(hosts: Callable[[int], list[Host]]) -> None:
    node1, node2, node3 = hosts(3)
    start_cluster([node1, node2, node3])
    await wait_converged([node1, node2, node3])
    status, body = node1.http("PUT", "/api/v1/config/app/before", {"v": 1})
    assert status == 200, body

    node3.cut()
    # the minority: no linearizable read, no write (503, never a stale 200)
    status, body = node3.http("PUT", "/api/v1/config/app/minority", {"v": 2})
    assert status == 503, (status, body)
    status, body = node3.http("GET", "/api/v1/config/app/before")
    assert status == 503, (status, body)
    status, body = node3.http("GET", "/health/ready", token=False)
    assert status == 503, (status, body)
    # the majority carries on
    await wait_state([node1, node2], "node3", "dead")
    status, body = node1.http("PUT", "/api/v1/config/app/majority", {"v": 3})
    assert status == 200, body

    node3.heal()
    await wait_converged([node1, node2, node3])  # gossip: all alive everywhere; Raft: one leader, all voters
    await wait_for(lambda: all(links_up(h, {"node1", "node2", "node3"} - {h.name}) for h in (node1, node2, node3)),
                   timeout=60, interval=0.5, message="every broker link up again")
    status, body = node3.http("GET", "/api/v1/config/app/majority")
    assert (status, body.get("value")) == (200, {"v": 3}), (status, body)
    # (the minority's write was answered 503 "outcome unknown", not refused: it may commit now)
