"""Load-aware routing across nodes on real processes: each node's provider loads reach the
others by gossip, and ``p2c`` gives a slow provider a clearly smaller share than round robin.

Shares are asserted with wide margins, never timings: the machine is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

from benchmarks.balance_bench import measure
from broker.client import Router, connect
from tests.support.admin import get_text, services, wait_for
from tests.support.cluster import ClusterFactory, put_config


@contextlib.asynccontextmanager
async def _holding_provider(address: str, service: str, instance: str, release: asyncio.Event) -> AsyncIterator[None]:
    """A provider that answers nothing until ``release`` is set."""
    router = Router()

    @router.response(f"{service}.hold")
    async def hold(data: bytes) -> bytes:
        await release.wait()
        return instance.encode()

    async with connect(address, services=[service], router=router, instance=instance):
        yield


async def _load_seen(admin: str, service: str, instance: str) -> int:
    entry = (await services(admin)).get(service)
    found = [p["load"] for p in entry["providers"] if p["instance"] == instance] if entry else []
    return found[0] if found else -1


async def test_a_providers_open_streams_reach_the_other_node(cluster_factory: ClusterFactory) -> None:
    service = "c.balance.gossip"
    cluster = cluster_factory.start(2)
    await cluster.wait_converged()
    n1, n2 = cluster["n1"], cluster["n2"]
    await put_config(n1, f"services/{service}", {"policy": "p2c"})  # prefer_local: n2 keeps its requests
    release = asyncio.Event()
    async with _holding_provider(str(n2.tcp), service, "held", release), _holding_provider(
        str(n1.tcp), service, "idle", release
    ), connect(str(n2.tcp)) as client:
        await cluster.wait_serves(service, {"held", "idle"})
        calls = [asyncio.create_task(client.request_response(f"{service}.hold", b"")) for _ in range(6)]

        async def n1_sees(low: int, high: int) -> bool:
            return low <= await _load_seen(str(n1.admin), service, "held") <= high

        # n1 sends nothing to "held": what it shows is n2's gossiped figure, not its own streams
        await wait_for(lambda: n1_sees(6, 6), message="n1 to learn that 'held' has 6 open streams on n2")
        release.set()
        assert await asyncio.gather(*calls) == [b"held"] * 6
        await wait_for(lambda: n1_sees(0, 0), message="n1 to learn that 'held' is idle again")
    status, text = await get_text(str(n2.admin), "/metrics")
    updates = re.search(r"^rsbroker_load_updates_total (\S+)$", text, re.M)
    assert status == 200 and updates is not None and float(updates.group(1)) >= 2


async def test_a_slow_provider_gets_a_smaller_share_under_p2c() -> None:
    """Four providers on two nodes, one 100 ms slow: round robin gives it its quarter; p2c,
    comparing open streams, far less (a benchmark run gives it under 1 %)."""
    result = await measure(requests=800, inflight=16, slow_ms=100.0)
    round_robin, p2c = result["round_robin"]["slow_share"], result["p2c"]["slow_share"]
    assert round_robin >= 0.15, result
    assert p2c <= round_robin / 3, result
    assert sum(result["p2c"]["shares"].values()) > 0.99  # every request answered, by someone
