"""Three real GossipNodes on 127.0.0.1 (UDP + TCP, sealed): join, routes, crash, leave.

Waits are on conditions with generous limits, never on fixed sleeps, so a busy machine
only makes the test slower.
"""

from __future__ import annotations

import asyncio
import base64
import random
import socket
from typing import Callable

import pytest

from cluster.crypto import Keyring, new_key
from cluster.routing_table import RoutesChanged, ServiceEntry
from cluster.swim.config import profile
from cluster.swim.node import GossipNode
from cluster.swim.wire import PacketCodec

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


async def test_an_unannounceable_service_name_costs_only_itself(cluster: list[GossipNode]) -> None:
    """A provider that registers a name gossip cannot carry must not make peers drop its node's
    packets (and declare it dead): the name stays local, everything else spreads."""
    n0, n1, n2 = cluster
    n0.set_local_services([ServiceEntry("s" * 300, "i-1"), ServiceEntry("c.fine", "i-1")])
    await until(lambda: bool(n1.lookup("c.fine")) and bool(n2.lookup("c.fine")))
    assert n0.stats()["routes_not_announced"] >= 1
    seen = n1.stats()["packets_in"]
    await until(lambda: n1.stats()["packets_in"] >= seen + 40)  # many probe rounds later
    assert state(n1, "n0") == state(n2, "n0") == "alive"
    assert n1.lookup("s" * 300) == [] and n1.stats().get("dropped_decode", 0) == 0


class _FutureMessage:
    """A message of a later release: a type number this release does not know."""

    def to_wire(self) -> list[object]:
        return [200, "from a newer release", {"any": "shape"}]


class _NewerCodec(PacketCodec):
    """The codec of a newer node: it adds its new message to every packet it sends."""

    def seal(self, messages, wall: float) -> bytes:  # type: ignore[no-untyped-def]
        return super().seal([*messages, _FutureMessage()], wall)  # type: ignore[list-item]


async def test_a_newer_node_sending_unknown_messages_converges_with_an_older_one(keyring: Keyring) -> None:
    old = GossipNode("old", ("127.0.0.1", 0), config=FAST, keyring=keyring, meta={"tcp": "127.0.0.1:7100"})
    new = GossipNode("new", ("127.0.0.1", 0), config=FAST, keyring=keyring, meta={"tcp": "127.0.0.1:7101"})
    new._codec = _NewerCodec(keyring, max_clock_skew_s=FAST.max_clock_skew_s, rand64=lambda: random.getrandbits(64))
    await old.start()
    await new.start()
    try:
        assert await new.join(["%s:%d" % old.address]) == 1  # push-pull over TCP carries the new message too
        new.set_local_services([ServiceEntry("c.upgraded", "u-1")])
        old.set_local_services([ServiceEntry("c.legacy", "l-1")])
        await until(lambda: bool(old.lookup("c.upgraded")) and bool(new.lookup("c.legacy")))
        await until(lambda: old.stats().get("dropped_message_unknown", 0) >= 40)  # many rounds of new messages
        assert state(old, "new") == "alive" and state(new, "old") == "alive"
        assert old.stats().get("dropped_decode", 0) == 0
    finally:
        await new.stop()
        await old.stop()


async def test_unauthenticated_gossip_streams_per_address_are_capped(cluster: list[GossipNode]) -> None:
    """Each stream may declare a 32 MiB frame and trickle it for tcp_timeout_s: one address
    may hold only MAX_UNOPENED_PER_PEER of them; a new one closes the oldest."""
    import struct

    from cluster.swim.node import MAX_UNOPENED_PER_PEER

    n0 = cluster[0]
    streams = []
    for _ in range(MAX_UNOPENED_PER_PEER + 1):
        reader, writer = await asyncio.open_connection(*n0.address)
        writer.write(b"\x01" + struct.pack(">I", 1 << 20) + b"x" * 100)
        await writer.drain()
        streams.append((reader, writer))
    assert await asyncio.wait_for(streams[0][0].read(), 10) == b""
    await until(lambda: n0.stats().get("dropped_peer_limit", 0) == 1)
    for _, writer in streams:
        writer.close()
    assert state(cluster[1], "n0") == "alive"  # members' own exchanges go on
