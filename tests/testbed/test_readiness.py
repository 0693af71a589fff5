"""§4 of issue 12: ``/health/ready`` means ready; the admin API never answers 500 while starting.

Ready used to mean "listeners bound": a node that had not joined, had not caught up with the
config store, or could not reach the other nodes took clients (and a Kubernetes Service sent
them there). While the cluster side started, ``GET /api/v1/raft`` raised AttributeError (500).
"""

from __future__ import annotations

from collections.abc import Callable

from tests.support.admin import wait_for
from tests.support.netns import Host
from tests.testbed.views import seeds, start_cluster, wait_converged


def ready(host: Host) -> tuple[int, object]:
    return host.http("GET", "/health/ready", token=False)


async def test_a_node_is_not_ready_and_says_why_until_it_joined(hosts: Callable[[int], list[Host]]) -> None:
    node1, node2 = hosts(2)
    node1.start(node1.serve_args())
    node1.cut()  # node2's seed does not answer: its join hangs until the gossip TCP timeout
    node2.start(node2.serve_args(join=seeds(node1)), wait=False)
    status, body = await wait_for(lambda: (lambda r: r if r[0] else None)(node2.http("GET", "/api/v1/raft")),
                                  timeout=60, interval=0.2, message="node2's admin API to answer")
    assert status == 503 and body["reason"] == "starting", (status, body)
    for path in ("/api/v1/members", "/api/v1/topology", "/api/v1/config/app/x"):
        status, body = node2.http("GET", path)
        assert status == 503, (path, status, body)
    status, body = ready(node2)
    assert status == 503 and body["reason"], body

    node1.heal()
    await wait_for(lambda: ready(node2)[0] == 200, timeout=90, interval=0.5, message="node2 ready")
    await wait_converged([node1, node2])


async def test_ready_means_the_config_store_caught_up(hosts: Callable[[int], list[Host]]) -> None:
    node1, node2, node3 = hosts(3)
    start_cluster([node1, node2])
    await wait_converged([node1, node2])
    for i in range(20):
        status, body = node1.http("PUT", f"/api/v1/config/app/k{i}", {"i": i})
        assert status == 200, body
    node3.start(node3.serve_args(join=seeds(node1)))
    await wait_for(lambda: ready(node3)[0] == 200, timeout=90, interval=0.2, message="node3 ready")
    # ready ⇒ its own copy (a stale read, no leader asked) already holds every earlier write
    status, body = node3.http("GET", "/api/v1/config?prefix=app/&stale=true")
    assert status == 200 and len(body["items"]) == 20, body
