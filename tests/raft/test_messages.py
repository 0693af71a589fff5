"""Wire codec of Raft messages: round trips, and untrusted bytes only ever raise WireError."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.raft.messages import (
    Entry,
    EntryType,
    Message,
    MsgType,
    Snapshot,
    WireError,
    decode_message,
    encode_message,
)

WIRE_TYPES = [t for t in MsgType if t not in (MsgType.HUP, MsgType.BEAT, MsgType.CHECK_QUORUM)]
u64 = st.integers(min_value=0, max_value=2**63)
names = st.text(min_size=1, max_size=8)

entries = st.builds(Entry, u64, u64, st.sampled_from(list(EntryType)), st.binary(max_size=32))
snapshots = st.builds(
    Snapshot,
    u64,
    u64,
    st.lists(names, max_size=3).map(tuple),
    st.lists(names, max_size=2).map(tuple),
    st.binary(max_size=32),
)
messages = st.builds(
    Message,
    st.sampled_from(WIRE_TYPES),
    names,
    names,
    u64,
    u64,
    u64,
    st.lists(entries, max_size=3),
    u64,
    st.booleans(),
    u64,
    st.binary(max_size=16),
    st.none() | snapshots,
)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_round_trip(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    try:
        decode_message(data)
    except WireError:
        pass


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_damaged_messages_raise_only_wire_error(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(encode_message(msg))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    else:
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= data.draw(st.integers(1, 255))
    try:
        decode_message(bytes(raw))
    except WireError:
        pass


def test_local_types_and_negative_counters_are_refused() -> None:
    for bad in (
        Message(MsgType.HUP, "a", "b").to_wire(),
        [*Message(MsgType.APP, "a", "b").to_wire()[:3], -1, *Message(MsgType.APP, "a", "b").to_wire()[4:]],
        [99, "a", "b", 0, 0, 0, [], 0, False, 0, b"", None],
    ):
        try:
            decode_message(msgpack.packb(bad))
        except WireError:
            continue
        raise AssertionError(f"accepted {bad!r}")
