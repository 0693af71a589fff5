"""The config store's Raft group on real processes: removing a dead node, and its return.

A node removed with ``DELETE /api/v1/raft/members/{id}`` right after it died must not be
added back (as a learner that never catches up) while gossip still reports it alive; when
it comes back — with its old data directory or an emptied one — it is a voter again.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import aiohttp
import pytest

from tests.support.admin import get_json, wait_for
from tests.support.cluster import ClusterFactory


async def raft_status(admin: str | None) -> dict[str, Any]:
    status, body = await get_json(admin, "/api/v1/raft")
    assert status == 200, body
    return dict(body)


@pytest.mark.parametrize("data_dir", ["kept", "emptied"])
async def test_a_removed_dead_node_stays_out_until_it_returns_then_is_a_voter_again(
    cluster_factory: ClusterFactory, data_dir: str
) -> None:
    cluster = await asyncio.to_thread(cluster_factory.start, 3)
    await cluster.wait_converged()
    leader_id = (await raft_status(cluster["n1"].admin))["leader"]
    victim = "n3" if leader_id != "n3" else "n2"
    leader = cluster[leader_id]

    cluster[victim].kill()
    async with aiohttp.ClientSession() as http:  # at once: gossip still holds the victim alive
        async with http.delete(f"http://{leader.admin}/api/v1/raft/members/{victim}") as response:
            assert response.status == 200, await response.text()
    await cluster.wait_member_state(victim, "dead")
    for _ in range(3):  # several membership-sync rounds after gossip declared it dead
        members = (await raft_status(leader.admin))["members"]
        assert victim not in members, f"{victim} was added back to the Raft group: {members}"
        await asyncio.sleep(1.0)

    if data_dir == "emptied":
        shutil.rmtree(cluster.data_dir(victim))
    await asyncio.to_thread(cluster.restart, victim)

    async def voter_again() -> bool:
        status = await raft_status(leader.admin)
        return bool(status["members"].get(victim, {}).get("voter"))

    await wait_for(voter_again, timeout=60, interval=0.2, message=f"{victim} to be a voter again")
    await cluster.wait_converged()
    leader_status = await raft_status(leader.admin)
    await wait_for(
        lambda: _caught_up(cluster[victim].admin, leader_status["commit_index"]),
        timeout=30,
        message=f"{victim} to reach the leader's commit index",
    )


async def _caught_up(admin: str | None, index: int) -> bool:
    return (await raft_status(admin))["applied_index"] >= index
