"""Route batches and push-pull digests on the wire (Hypothesis): they round-trip through
the real packet codec, a five-field push-pull of older nodes still decodes, and any
structural corruption is a DecodeError - nothing else escapes the decoder."""

from __future__ import annotations

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.swim.messages import DecodeError, Ping, PushPull, RouteBatch, RouteDigest, RouteGroup, decode_message
from cluster.swim.wire import WIRE_VERSION, PacketCodec

WALL = 1_700_000_000.0
names = st.text(min_size=1, max_size=20)
u64 = st.integers(0, 2**64 - 1)
tags = st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3)
items = st.tuples(u64, st.text(max_size=30), st.text(max_size=10), u64, u64, tags, st.booleans())
groups = st.builds(RouteGroup, names, u64, st.booleans(), u64, st.lists(items, max_size=4).map(tuple))
batches = st.builds(RouteBatch, names, st.lists(groups, max_size=3).map(tuple))
digests = st.builds(RouteDigest, names, u64, u64, u64, u64)
push_pulls = st.builds(PushPull, names, st.booleans(), st.just(()), st.just(()), st.lists(digests, max_size=4).map(tuple))


def codec() -> PacketCodec:
    return PacketCodec(None, max_clock_skew_s=60.0, rand64=iter(range(1, 10**9)).__next__)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(batches, push_pulls), min_size=1, max_size=3))
def test_batches_and_digests_round_trip(msgs) -> None:
    assert codec().open(codec().seal(msgs, WALL), WALL) == msgs


def test_a_five_field_push_pull_of_older_nodes_decodes_without_digests() -> None:
    old = [8, "n1", False, [], []]
    assert decode_message(old) == PushPull("n1", False, (), (), ())


def _mutations(value):
    """Every way of replacing one nested element with a wrong-typed one, or dropping it."""
    if isinstance(value, list):
        for i, element in enumerate(value):
            for wrong in (None, -1, "x", [], {"k": 1}, 2**70):
                yield value[:i] + [wrong] + value[i + 1:]
            yield value[:i] + value[i + 1:]
            for inner in _mutations(element):
                yield value[:i] + [inner] + value[i + 1:]


@settings(max_examples=100, deadline=None)
@given(st.one_of(batches.filter(lambda b: b.groups and b.groups[0].items), push_pulls.filter(lambda p: p.digests)))
def test_structural_corruption_is_a_decode_error(msg) -> None:
    wire = msg.to_wire()
    for corrupt in _mutations(wire):
        try:
            decoded = decode_message(corrupt)
        except DecodeError:
            continue
        # the few mutations that stay valid (e.g. a text field replaced by "x") re-encode
        assert decode_message(decoded.to_wire()) == decoded


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_inside_a_batch_is_dropped_and_counted(data) -> None:
    """The batch that does not decode is skipped and counted; the rest of the packet is used."""
    ping = Ping(1, "n0", "n1").to_wire()
    packet = msgpack.packb([WIRE_VERSION, int(WALL * 1000), 7, [[10, "n1", [["n2", 1, False, 0, [data]]]], ping]])
    rx = codec()
    assert [type(m) for m in rx.open(packet, WALL)] == [Ping]
    assert rx.stats["dropped_message_malformed"] == 1
