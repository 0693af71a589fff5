"""Three real GossipNodes on 127.0.0.1 (UDP + TCP, sealed): join, routes, crash, leave.

Waits are on conditions with generous limits, never on fixed sleeps, so a busy machine
only makes the test slower.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from typing import Callable

import pytest

from cluster.crypto import Keyring, new_key
from cluster.routing_table import RoutesChanged, ServiceEntry
from cluster.swim.config import profile
from cluster.swim.node import GossipNode

FAST = profile("local").replace(probe_interval_s=0.3, probe_timeout_s=0.15, gossip_interval_s=0.05,
                                push_pull_interval_s=2.0, tcp_timeout_s=2.0, leave_propagate_s=1.0)


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def state(node: GossipNode, of: str) -> str | None:
    return next((m["state"] for m in node.members() if m["node_id"] == of), None)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring([base64.b64decode(new_key())])


@pytest.fixture
async def cluster(keyring: Keyring):
    nodes = [GossipNode(f"n{i}", ("127.0.0.1", 0), config=FAST, keyring=keyring,
                        meta={"tcp": f"127.0.0.1:{7000 + i}"}) for i in range(3)]
    for node in nodes:
        await node.start()
    seed = "%s:%d" % nodes[0].address
    assert await nodes[1].join([seed]) == 1
    assert await nodes[2].join([seed]) == 1
    await until(lambda: all(len([m for m in n.members() if m["state"] == "alive"]) == 3 for n in nodes))
    yield nodes
    for node in nodes:
        await node.stop()


async def test_join_spreads_metadata_and_routes(cluster: list[GossipNode]) -> None:
    n0, n1, n2 = cluster
    assert {m["node_id"]: m["metadata"]["tcp"] for m in n2.members()} == {
        "n0": "127.0.0.1:7000", "n1": "127.0.0.1:7001", "n2": "127.0.0.1:7002"}
    seen: list[RoutesChanged] = []
    n2.on_routes_changed(seen.append)
    n0.set_local_services([ServiceEntry("com.acme.greeter", "greeter-1", 2, {"zone": "a"}, 5)])
    await until(lambda: len(n2.lookup("com.acme.greeter")) == 1 and len(n1.lookup("com.acme.greeter")) == 1)
    entry = n2.lookup("com.acme.greeter")[0]
    assert (entry.node, entry.entry.instance, entry.entry.weight, dict(entry.entry.tags), entry.entry.load) == (
        "n0", "greeter-1", 2, {"zone": "a"}, 5)
    assert any(e.node == "n0" and "com.acme.greeter" in e.services for e in seen)
    listed = {m["node_id"]: m for m in n1.members()}["n0"]
    assert listed["routes"] == 1 and n1.table.entries("n0", "com.acme.greeter")[0].instance == "greeter-1"
    assert listed["address"] == "%s:%d" % n0.address
    n0.set_local_services([])
    await until(lambda: not n2.lookup("com.acme.greeter"))


async def test_stopped_node_is_declared_dead_and_its_routes_dropped(cluster: list[GossipNode]) -> None:
    n0, n1, n2 = cluster
    n2.set_local_services([ServiceEntry("com.acme.billing", "b-1")])
    await until(lambda: bool(n0.lookup("com.acme.billing")) and bool(n1.lookup("com.acme.billing")))
    await n2.stop()  # no leave: looks like a crash
    await until(lambda: state(n0, "n2") == "dead" and state(n1, "n2") == "dead")
    assert n0.lookup("com.acme.billing") == [] and n1.lookup("com.acme.billing") == []


async def test_graceful_leave_is_left_not_dead(cluster: list[GossipNode]) -> None:
    n0, n1, n2 = cluster
    await n1.leave()
    await until(lambda: state(n0, "n1") == "left" and state(n2, "n1") == "left", timeout=10)


async def test_garbage_and_wrong_key_datagrams_are_counted(cluster: list[GossipNode]) -> None:
    n0 = cluster[0]
    before = n0.stats()
    other = Keyring([base64.b64decode(new_key())])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x01" + b"x" * 60, n0.address)
        s.sendto(other.seal(b"\x94\x01\x00\x00\x90", b"gossip"), n0.address)
    await until(lambda: n0.stats().get("dropped_decrypt", 0) >= before.get("dropped_decrypt", 0) + 2)


async def test_extra_tcp_channel_gets_its_connections(cluster: list[GossipNode]) -> None:
    n0 = cluster[0]
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def raft(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.set_result(await reader.readexactly(5))

    n0.add_tcp_channel(0x02, raft)
    reader, writer = await asyncio.open_connection(*n0.address)
    writer.write(b"\x02hello")
    await writer.drain()
    assert await asyncio.wait_for(got, 10) == b"hello"
    writer.close()


def test_refuses_public_bind_without_key() -> None:
    with pytest.raises(ValueError, match="without a cluster key"):
        GossipNode("x", ("10.1.2.3", 7946))
    GossipNode("x", ("10.1.2.3", 7946), allow_insecure=True)  # explicitly told: accepted


async def test_replayed_datagram_and_garbage_tcp_frame_are_counted(cluster: list[GossipNode], keyring: Keyring) -> None:
    import struct
    import time

    from cluster.swim.messages import Ping
    from cluster.swim.wire import PacketCodec

    n0 = cluster[0]
    before = n0.stats()
    packet = PacketCodec(keyring, max_clock_skew_s=60, rand64=lambda: 424242).seal([Ping(1, "n0", "x")], time.time())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(packet, n0.address)
        s.sendto(packet, n0.address)  # captured and replayed
    await until(lambda: n0.stats().get("dropped_replay", 0) == before.get("dropped_replay", 0) + 1)
    reader, writer = await asyncio.open_connection(*n0.address)
    writer.write(b"\x01" + struct.pack(">I", 40) + b"\x00" * 40)
    await writer.drain()
    await reader.read()  # the node closes the connection
    writer.close()
    assert n0.stats().get("dropped_decrypt", 0) >= before.get("dropped_decrypt", 0) + 1


async def test_entry_too_big_for_a_datagram_travels_over_tcp(cluster: list[GossipNode]) -> None:
    n0, n1, _ = cluster
    tags = {f"tag{i}": "v" * 200 for i in range(20)}  # ~4 KB: far over one datagram
    n0.set_local_services([ServiceEntry("com.acme.big", "big-1", 1, tags, 0)])
    await until(lambda: bool(n1.lookup("com.acme.big")))
    assert dict(n1.lookup("com.acme.big")[0].entry.tags) == tags
    assert n1.stats().get("tcp_errors", 0) == 0
    assert n0.stats().get("tcp_sent", 0) >= 1  # the oversized path, not only push-pull
