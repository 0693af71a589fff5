"""Transports: TCP framing and sealing on 127.0.0.1, refusal of bad streams, and the in-memory network."""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
from pathlib import Path

from cluster.crypto import Keyring
from cluster.raft.messages import Entry, Message, MsgType, encode_message
from cluster.raft.node import NodeOptions, RaftNode
from cluster.raft.transport import CHANNEL_RAFT, MAX_STREAMS_PER_PEER, InMemoryNetwork, InMemoryTransport, TcpTransport

from .test_node_tcp import eventually

KEY_A = Keyring([base64.b64decode("q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=")])
KEY_B = Keyring([bytes(32)])


async def pair(key_send: Keyring | None, key_recv: Keyring | None) -> tuple[TcpTransport, TcpTransport, list[Message]]:
    got: list[Message] = []
    addrs: dict[str, tuple[str, int]] = {}
    receiver = TcpTransport("b", addrs.get, key_recv)
    await receiver.start(got.append)
    addrs["b"] = await receiver.listen()
    sender = TcpTransport("a", addrs.get, key_send)
    await sender.start(lambda m: None)
    return sender, receiver, got


def sample(i: int = 0) -> Message:
    return Message(MsgType.APP, "b", "a", term=3, index=i, entries=[Entry(3, i + 1, data=b"payload")], commit=i)


async def test_sealed_messages_arrive_in_order() -> None:
    sender, receiver, got = await pair(KEY_A, KEY_A)
    try:
        for i in range(50):
            sender.send(sample(i))
        await eventually(lambda: len(got) == 50, "50 messages")
        assert got == [sample(i) for i in range(50)]
    finally:
        await sender.close()
        await receiver.close()


async def test_wrong_cluster_key_is_refused() -> None:
    sender, receiver, got = await pair(KEY_B, KEY_A)
    try:
        sender.send(sample())
        await asyncio.sleep(0.2)  # a negative: give a wrong delivery the chance to happen
        assert got == []
    finally:
        await sender.close()
        await receiver.close()


async def test_unsealed_when_no_key_is_configured() -> None:
    sender, receiver, got = await pair(None, None)
    try:
        sender.send(sample(7))
        await eventually(lambda: got == [sample(7)], "the message")
    finally:
        await sender.close()
        await receiver.close()


async def test_bad_streams_are_closed_without_delivery() -> None:
    got: list[Message] = []
    receiver = TcpTransport("b", lambda n: None)
    await receiver.start(got.append)
    host, port = await receiver.listen()
    try:
        for payload in (
            b"\x01",  # wrong channel byte
            bytes([CHANNEL_RAFT]) + struct.pack(">I", 1 << 30),  # oversized frame
            bytes([CHANNEL_RAFT]) + struct.pack(">I", 3) + b"\xc1\xc1\xc1",  # not msgpack
        ):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(payload)
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the broker closed it
            writer.close()
        # and a well-formed frame on a fresh connection still works
        reader, writer = await asyncio.open_connection(host, port)
        body = encode_message(sample(1))
        writer.write(bytes([CHANNEL_RAFT]) + struct.pack(">I", len(body)) + body)
        await writer.drain()
        await eventually(lambda: got == [sample(1)], "the good frame")
        writer.close()
    finally:
        await receiver.close()


async def test_unreachable_peer_drops_messages_without_blocking() -> None:
    sender = TcpTransport("a", lambda n: ("127.0.0.1", 1), connect_timeout=0.2)
    await sender.start(lambda m: None)
    for i in range(10_000):
        sender.send(sample(i))  # never blocks, even with the queue full
    await sender.close()


async def test_close_ends_a_sender_whose_connect_to_a_dead_peer_fails_as_it_is_cancelled() -> None:
    """A node stopping while it retries a dead peer (the usual fail-over teardown): ``close``
    cancels the sender, and the cancellation may land as the connect is refused. On Python 3.11
    ``asyncio.wait_for`` then handed the sender the refusal instead, it went on waiting for
    messages nobody would send, and ``close`` never returned (a CI teardown hung for 120 s).
    Each round cancels one scheduler step later, so some round lands in that window."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead = probe.getsockname()
    probe.close()  # nothing listens there: each connect is refused at once
    for steps in range(48):
        transport = TcpTransport("a", lambda node: dead)
        await transport.start(lambda m: None)
        transport.send(sample())
        for _ in range(steps % 12):
            await asyncio.sleep(0)
        try:
            async with asyncio.timeout(5):
                await transport.close()
        except TimeoutError:
            for peer in transport._peers.values():
                peer.task.cancel()  # let the test end; the assertion says what went wrong
            raise AssertionError(f"close() did not return when cancelling {steps % 12} steps after the send") from None


async def test_in_memory_network_partition_and_heal(tmp_path: Path) -> None:
    net = InMemoryNetwork()
    opts = NodeOptions(tick_interval=0.01, request_timeout=10.0, fsync=False)
    nodes = {n: RaftNode(n, tmp_path / n, InMemoryTransport(net, n), options=opts, seed=i) for i, n in enumerate("abc")}
    await nodes["a"].start(bootstrap=True)
    await eventually(lambda: nodes["a"].is_leader, "a to lead")
    for n in "bc":
        await nodes[n].start()
        await nodes["a"].add_member(n)
    try:
        await nodes["b"].put("app/x", 1)
        net.isolate("a")
        await eventually(lambda: nodes["b"].is_leader or nodes["c"].is_leader, "a new leader on the majority side")
        leader = nodes["b"] if nodes["b"].is_leader else nodes["c"]
        await leader.put("app/x", 2)
        assert nodes["a"].list()["app/x"] == 1  # the minority did not see it
        net.heal()
        assert await nodes["a"].get("app/x") == 2  # linearizable read after healing
        assert await nodes["a"].get("app/x", linearizable=False) == 2  # applied locally by now
    finally:
        for node in nodes.values():
            await node.stop()


async def _raw_stream(address: tuple[str, int], data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(bytes([CHANNEL_RAFT]) + data)
    await writer.drain()
    return reader, writer


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


async def test_bad_seal_closes_the_stream_and_is_counted_before_decoding() -> None:
    got: list[Message] = []
    receiver = TcpTransport("b", lambda n: None, KEY_A)
    await receiver.start(got.append)
    address = await receiver.listen()
    try:
        for body in (encode_message(sample(1)), KEY_B.seal(encode_message(sample(2)), aad=b"raft")):
            reader, writer = await _raw_stream(address, _frame(body) + _frame(KEY_A.seal(encode_message(sample(3)), aad=b"raft")))
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at the bad frame: the good one after it is not read
            writer.close()
        assert got == [] and receiver.stats["dropped_seal"] == 2
    finally:
        await receiver.close()


async def test_sealed_but_undecodable_frame_is_skipped_and_the_stream_goes_on() -> None:
    """A member of a newer release may send a message this one cannot read: skip it, keep the stream."""
    got: list[Message] = []
    receiver = TcpTransport("b", lambda n: None, KEY_A)
    await receiver.start(got.append)
    address = await receiver.listen()
    try:
        future = KEY_A.seal(b"\x93\xcc\xc8\xa1b\xa1a", aad=b"raft")  # [200, "b", "a"]: a message type from the future
        good = KEY_A.seal(encode_message(sample(4)), aad=b"raft")
        _, writer = await _raw_stream(address, _frame(future) + _frame(good))
        await eventually(lambda: got == [sample(4)], "the frame after the unknown one")
        assert receiver.stats["dropped_decode"] == 1
        writer.close()
    finally:
        await receiver.close()


async def test_per_peer_limits_oversize_read_timeout_and_stream_count() -> None:
    receiver = TcpTransport("b", lambda n: None, KEY_A, max_message=1024, read_timeout=0.3)
    await receiver.start(lambda m: None)
    address = await receiver.listen()
    try:
        reader, writer = await _raw_stream(address, struct.pack(">I", 1025))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert receiver.stats["dropped_oversize"] == 1
        reader, writer = await _raw_stream(address, struct.pack(">I", 1000) + b"x" * 10)  # and then nothing
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert receiver.stats["dropped_timeout"] == 1
        # Streams that delivered a sealed frame are members' (several may share a host): never capped.
        good = _frame(KEY_A.seal(encode_message(sample(5)), aad=b"raft"))
        members = [await _raw_stream(address, good) for _ in range(MAX_STREAMS_PER_PEER + 1)]
        await eventually(lambda: receiver.stats["messages_in"] == len(members), "every member's frame")
        streams = [await _raw_stream(address, b"") for _ in range(MAX_STREAMS_PER_PEER + 1)]
        assert await asyncio.wait_for(streams[0][0].read(), 5) == b""  # the oldest unauthenticated one made room
        await eventually(lambda: receiver.stats["dropped_peer_limit"] == 1, "the peer-limit drop counted")
        members[0][1].write(good)  # the first member's stream outlived the eviction
        await eventually(lambda: receiver.stats["messages_in"] == len(members) + 1, "a member's next frame")
        for _, w in members + streams:
            w.close()
    finally:
        await receiver.close()
