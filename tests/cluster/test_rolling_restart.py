"""A rolling restart under load: every node in turn is drained (SIGTERM) and started again
with the same ``--data-dir``, while cluster-aware providers and a requester keep working and
a writer keeps putting config keys through whichever node is up.

At the end no acknowledged write is missing on any node (read linearizably on each), every
service answers from every node, and no request ever hung (failures while a node drains are
allowed: the cluster client retries on its next node).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random

import aiohttp

from broker.client import connect_cluster
from tests.cluster.peers import SteadyLoad, ask_who, client_who_router, requester
from tests.support.admin import get_json, wait_for
from tests.support.cluster import Cluster, ClusterFactory


class Writer:
    """Puts ``app/roll/<n>`` = n through a random running node; remembers what was acknowledged."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.acknowledged: dict[str, int] = {}
        self.refused = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        n = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            while True:
                n += 1
                running = self.cluster.running
                node = random.choice(running)
                key = f"app/roll/{n}"
                try:
                    async with http.put(f"{node.admin_url}/api/v1/config/{key}", json=n) as response:
                        if response.status == 200:
                            self.acknowledged[key] = n
                        else:
                            self.refused += 1  # no leader during an election: not acknowledged
                except (TimeoutError, aiohttp.ClientError):
                    self.refused += 1  # the node went down under the request
                await asyncio.sleep(0.05)

    def more_than(self, count: int) -> bool:
        return len(self.acknowledged) > count

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def test_rolling_restart_under_load_loses_no_acknowledged_write(cluster_factory: ClusterFactory, service: str) -> None:
    cluster = await asyncio.to_thread(cluster_factory.start, 3, "--drain-timeout-s", "5")
    await cluster.wait_converged()
    addresses = cluster.tcp_addresses()
    providers = [
        connect_cluster(addresses[i:] + addresses[:i], services=[service], router=client_who_router(service, f"p{i}"), instance=f"p{i}")
        for i in range(2)
    ]
    async with providers[0], providers[1]:
        await cluster.wait_serves(service, {"p0", "p1"})
        async with connect_cluster(addresses[2:] + addresses[:2]) as client:
            load = SteadyLoad(client, service, workers=2, pause_s=0.05)
            writer = Writer(cluster)
            async with load:
                writer.start()
                try:
                    for node_id in ("n1", "n2", "n3"):
                        await wait_for(lambda: len(writer.acknowledged) >= 3, message="writes acknowledged")
                        assert await asyncio.to_thread(cluster[node_id].stop) == 0, cluster[node_id].output()
                        await asyncio.to_thread(cluster.restart, node_id)
                        await cluster.wait_converged()
                        await cluster.wait_serves(service, {"p0", "p1"})
                        await wait_for(functools.partial(writer.more_than, len(writer.acknowledged)), message="writes go on")
                finally:
                    await writer.stop()
            hung = [o for o in load.outcomes if o.result == "hung"]
            assert not hung, hung
            assert load.by_instance(), "the load never got an answer"
            print(f"\nrolling restart: {len(load.failures())} of {len(load.outcomes)} requests failed while nodes drained")

        for node in cluster:
            status, body = await get_json(str(node.admin), "/api/v1/config?prefix=app/roll/")
            assert status == 200, body
            missing = {k: v for k, v in writer.acknowledged.items() if body["items"].get(k) != v}
            assert not missing, f"{node.node_id} lost acknowledged writes: {sorted(missing)[:10]}"
            async with requester(node) as client:
                assert await ask_who(client, service) in ("p0", "p1")
