"""Three RaftNodes over real TCP on 127.0.0.1: election, forwarding, fail-over, restart from disk.

Waits are on conditions with generous deadlines, never on fixed sleeps, so a busy
machine makes the tests slower, not flaky.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.crypto import Keyring
from cluster.raft.errors import NotLeader, ValidationError
from cluster.raft.node import NodeOptions, RaftNode
from cluster.raft.transport import TcpTransport

KEY = Keyring([base64.b64decode("q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=")])
OPTS = NodeOptions(tick_interval=0.02, request_timeout=10.0, snapshot_every=20)


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Cluster:
    """Nodes n1..nN with their own data dirs and TCP listeners; a dict is the resolver."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.addrs: dict[str, tuple[str, int]] = {}
        self.nodes: dict[str, RaftNode] = {}

    async def start(self, node_id: str, bootstrap: bool = False) -> RaftNode:
        transport = TcpTransport(node_id, self.addrs.get, keyring=KEY)
        self.addrs[node_id] = await transport.listen("127.0.0.1", 0)
        node = RaftNode(node_id, self.tmp / node_id, transport, options=OPTS)
        await node.start(bootstrap=bootstrap)
        self.nodes[node_id] = node
        return node

    async def stop(self, node_id: str) -> None:
        await self.nodes.pop(node_id).stop()

    def leader(self) -> RaftNode | None:
        leaders = [n for n in self.nodes.values() if n.is_leader]
        return leaders[0] if len(leaders) == 1 else None

    async def wait_leader(self) -> RaftNode:
        await eventually(lambda: self.leader() is not None, "a single leader")
        leader = self.leader()
        assert leader is not None
        return leader

    async def close(self) -> None:
        for node_id in list(self.nodes):
            await self.stop(node_id)


@pytest.fixture
async def cluster(tmp_path: Path):
    c = Cluster(tmp_path)
    n1 = await c.start("n1", bootstrap=True)
    await eventually(lambda: n1.is_leader, "n1 to lead its new cluster")
    for n in ("n2", "n3"):
        await c.start(n)
        await n1.add_member(n)
    yield c
    await c.close()


async def test_bootstrap_and_join_make_three_voters(cluster: Cluster) -> None:
    leader = await cluster.wait_leader()
    members = leader.status()["members"]
    assert sorted(members) == ["n1", "n2", "n3"]
    assert all(m["voter"] for m in members.values())
    await eventually(
        lambda: all(n.core.voters == {"n1", "n2", "n3"} for n in cluster.nodes.values()), "voters everywhere"
    )


async def test_write_on_follower_is_forwarded_and_read_linearizably(cluster: Cluster) -> None:
    leader = await cluster.wait_leader()
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    index = await follower.put("app/greeting", {"text": "hello"})
    assert index > 0
    other = next(n for n in cluster.nodes.values() if n not in (leader, follower))
    assert await other.get("app/greeting") == {"text": "hello"}  # ReadIndex through the leader
    assert await follower.delete("app/greeting") is True
    assert await leader.get("app/greeting") is None


async def test_invalid_value_is_refused_and_nothing_applied(cluster: Cluster) -> None:
    leader = await cluster.wait_leader()
    with pytest.raises(ValidationError, match="policy"):
        await leader.put("services/com.acme.greeter", {"policy": "random"})
    assert leader.list("services/") == {}


async def test_killing_the_leader_elects_a_new_one_that_accepts_writes(cluster: Cluster) -> None:
    old = await cluster.wait_leader()
    await old.put("app/before", 1)
    await cluster.stop(old.node_id)
    new = await cluster.wait_leader()
    assert new.node_id != old.node_id
    await new.put("app/after", 2)
    survivor = next(n for n in cluster.nodes.values() if n is not new)
    assert await survivor.get("app/before") == 1
    assert await survivor.get("app/after") == 2


async def test_write_to_a_follower_during_failover_reaches_the_new_leader(cluster: Cluster) -> None:
    old = await cluster.wait_leader()
    follower = next(n for n in cluster.nodes.values() if n is not old)
    await cluster.stop(old.node_id)
    # The follower still forwards to the dead leader first; it proposes again on the
    # leader change, and the write is applied exactly once.
    index = await follower.put("app/during-failover", 1, timeout=15)
    assert follower.list()["app/during-failover"] == 1
    assert follower.core.log.applied >= index


async def test_restarted_node_recovers_from_disk_and_catches_up(cluster: Cluster) -> None:
    leader = await cluster.wait_leader()
    victim = next(n for n in cluster.nodes.values() if n is not leader).node_id
    for i in range(30):  # more than snapshot_every, so the restart also loads a snapshot
        await leader.put(f"app/k{i}", i)
    before = cluster.nodes[victim]
    await eventually(lambda: before.list().get("app/k29") == 29, "the victim to apply every write")
    await cluster.stop(victim)
    await leader.put("app/while-down", True)
    node = await cluster.start(victim)
    assert node.list("app/k")["app/k29"] == 29  # from its own disk, before hearing anyone
    await eventually(lambda: node.list().get("app/while-down") is True, "the restarted node to catch up")


async def test_whole_cluster_restarts_from_disk(cluster: Cluster) -> None:
    leader = await cluster.wait_leader()
    await leader.put("app/durable", "yes")
    await cluster.close()
    for n in ("n1", "n2", "n3"):
        await cluster.start(n)  # no bootstrap: everything comes from the data dirs
    new = await cluster.wait_leader()
    assert await new.get("app/durable") == "yes"
    await new.put("app/again", 1)


async def test_transfer_leadership_then_remove_a_dead_member(cluster: Cluster) -> None:
    leader = await cluster.wait_leader()
    target = next(n for n in cluster.nodes if n != leader.node_id)
    assert await leader.transfer_leadership(target) == target
    new = await cluster.wait_leader()
    assert new.node_id == target
    with pytest.raises(NotLeader) as info:
        await leader.remove_member(target)
    assert info.value.leader == target
    dead = next(n for n in cluster.nodes if n != target)
    await cluster.stop(dead)  # a dead node is removed by command
    await new.remove_member(dead)
    assert dead not in new.status()["members"]
    await new.put("app/two-voters", True)  # commits with both remaining voters
