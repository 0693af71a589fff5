"""A partition of the broker links to one node, made with the loopback chaos proxy, heals.

n3 advertises the proxy's address (``--advertise``), so n1's and n2's links to n3 run
through it while gossip (UDP, its own port) does not: the partition cuts only the links.
During a partition a request from n1 for n3's provider must end (an ERROR once the link's
keepalive lifetime runs out, or at once if the link is known down) — never hang; after
healing, n1 reaches n3's provider again.
"""

from __future__ import annotations

import asyncio
import functools

import pytest

from tests.cluster.peers import REQUEST_BOUND_S, ask_who, provider, requester
from tests.support.admin import wait_for
from tests.support.chaos import ChaosProxy, Direction
from tests.support.cluster import ClusterFactory


async def _answer(client: object, service: str) -> str | None:
    """The answering instance, or None if the request failed (it must not hang)."""
    try:
        return await ask_who(client, service)  # type: ignore[arg-type]
    except TimeoutError:
        pytest.fail(f"a request hung for {REQUEST_BOUND_S} s")
    except Exception:  # noqa: BLE001 — the ERROR of a cut link, or REJECTED while no link is up
        return None


async def test_a_partition_of_the_links_to_a_node_heals(cluster_factory: ClusterFactory, service: str) -> None:
    proxy = await ChaosProxy.start()
    try:
        cluster = await asyncio.to_thread(cluster_factory.start, 3, node_args={"n3": ["--advertise", proxy.address]})
        proxy.upstream = cluster["n3"].tcp
        await cluster.wait_converged()
        async with provider(cluster["n3"], service, "behind-proxy"):
            await cluster.wait_serves(service, {"behind-proxy"})
            def links_lost() -> int:
                return cluster["n1"].output().count("link to node n3 is down")

            def lost_since(before: int) -> bool:
                return links_lost() > before

            async with requester(cluster["n1"]) as client:
                await wait_for(lambda: _answer(client, service), message="n1 reaches n3 through the proxy")
                assert proxy.stats["forwarded_bytes"] > 0

                for direction in (Direction.BOTH, Direction.UPSTREAM, Direction.DOWNSTREAM):
                    lost_before = links_lost()
                    proxy.partition(direction)
                    # requests end (as errors) while the partition lasts; the link is seen lost
                    assert await _answer(client, service) is None, direction
                    await wait_for(
                        functools.partial(lost_since, lost_before),
                        message=f"n1 to notice its link to n3 is gone ({direction})",
                    )
                    proxy.heal()
                    await wait_for(lambda: _answer(client, service), interval=0.2, message=f"healed after {direction}")
                assert proxy.stats["blackholed_bytes"] > 0
    finally:
        await proxy.close()
