"""§2 of issue 12: every node can restart with the same command line.

The first node of the compose file and of the StatefulSet starts without ``--join``. Stopped
with SIGTERM it left the cluster, and came back alone: nobody contacts a member that left.
A node now remembers the members it saw (``<data-dir>/peers.json``) and joins through them
on every start; and ``--bootstrap-expect N`` lets one command line start every node of a
brand-new cluster, the first included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from cluster.swim.config import PROFILES

from tests.support.netns import Host
from tests.testbed.views import seeds, start_cluster, wait_converged, wait_state

pytestmark = pytest.mark.timeout(300)


async def test_the_first_node_stopped_and_started_again_with_its_command_line_rejoins(
    hosts: Callable[[int], list[Host]],
) -> None:
    node1, node2, node3 = hosts(3)
    start_cluster([node1, node2, node3])  # node1 without --join, as compose and the StatefulSet did
    await wait_converged([node1, node2, node3])
    command = node1.process.command[:]  # type: ignore[union-attr]
    assert "--join" not in command
    assert node1.stop() == 0
    await wait_state([node2, node3], "node1", "left")
    # Members gossip to a departed node for a while (so a falsely accused one can refute);
    # after that window nobody contacts it again: the case of a pod restarted after a while.
    await asyncio.sleep(PROFILES["lan"].gossip_to_the_dead_s + 2)
    node1.start(node1.serve_args())  # the same command line
    await wait_converged([node1, node2, node3])


async def test_one_command_line_starts_restarts_and_bootstraps_every_node(hosts: Callable[[int], list[Host]]) -> None:
    *group, late = hosts(4)
    everyone = seeds(*group, late)

    def start(members: list[Host]) -> None:
        for host in members:  # only the node's own name differs, as a StatefulSet's pod name does
            host.start(host.serve_args("--bootstrap-expect", "3", join=everyone))

    start(group)
    await wait_converged(group)
    node1 = group[0]
    status, body = node1.http("PUT", "/api/v1/config/app/kept", {"v": 1})
    assert status == 200, body
    # a fourth node with the same command line joins the cluster instead of starting another
    start([late])
    await wait_converged([*group, late])
    status, body = late.http("GET", "/api/v1/config/app/kept")
    assert (status, body.get("value")) == (200, {"v": 1}), (status, body)

    everyone_hosts = [*group, late]
    for host in everyone_hosts:  # the whole cluster goes down and comes back from its data directories
        assert host.stop() == 0
    start(everyone_hosts)
    await wait_converged(everyone_hosts)
    for host in everyone_hosts:
        status, body = host.http("GET", "/api/v1/config/app/kept")
        assert (status, body.get("value")) == (200, {"v": 1}), (host.name, status, body)
