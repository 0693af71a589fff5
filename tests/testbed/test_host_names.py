"""§1 of issue 12: nodes on their own hosts advertise and join by host name.

Under uvloop a UDP send to a host name raised, killed gossip's timer task and left a
cluster that never finished forming. Names are now resolved off the hot path, cached, and
re-resolved, so a host that keeps its name and changes its address is followed.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.support.admin import wait_for
from tests.support.netns import Host
from tests.testbed.views import members, seeds, start_cluster, wait_converged, wait_state


async def test_a_cluster_forms_by_host_name_and_detects_a_crash(hosts: Callable[[int], list[Host]]) -> None:
    node1, node2, node3 = hosts(3)
    start_cluster([node1, node2, node3])
    await wait_converged([node1, node2, node3])
    for host in (node1, node2, node3):
        view = members(host)
        assert {m["address"] for m in view.values()} == {"node1:7946", "node2:7946", "node3:7946"}, view
    node3.kill()
    await wait_state([node1, node2], "node3", "dead")  # failure detection still runs


async def test_a_host_that_changes_address_is_followed(hosts: Callable[[int], list[Host]]) -> None:
    node1, node2, node3 = hosts(3)
    start_cluster([node1, node2, node3])
    await wait_converged([node1, node2, node3])
    node3.kill()
    node3.move(str(node3.bed.subnet.network_address + 99))  # same name, new address
    node3.start(node3.serve_args(join=seeds(node1)))
    await wait_converged([node1, node2, node3])

    def resolved_everywhere() -> bool:
        return all(members(h).get("node3", {}).get("resolved") == node3.address for h in (node1, node2))

    await wait_for(resolved_everywhere, timeout=60, interval=0.5, message="node1 and node2 to resolve node3 anew")
