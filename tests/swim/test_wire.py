"""Packet decoding under attack (Hypothesis): forged, truncated, replayed, wrongly keyed,
or plain garbage - each is dropped with the matching counter, and nothing but
``Dropped`` ever escapes the decoder."""

from __future__ import annotations

import base64
import itertools

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.crypto import Keyring, new_key
from cluster.swim.messages import (
    Ack, Alive, Dead, DecodeError, IndirectPing, MemberRecord, MemberState, Nack, Ping, PushPull, Route, Suspect,
    decode_message,
)
from cluster.swim.wire import Dropped, PacketCodec

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEY = Keyring([base64.b64decode(new_key())])
WALL = 1_700_000_000.0

names = st.text(min_size=1, max_size=20)
u64 = st.integers(0, 2**64 - 1)
ports = st.integers(1, 65535)
tags = st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4)
routes = st.builds(Route, names, u64, u64, st.text(max_size=30), st.text(max_size=10), u64, tags, u64, st.booleans())
messages = st.one_of(
    st.builds(Ping, u64, st.text(max_size=20), st.text(max_size=20)),
    st.builds(IndirectPing, u64, names, st.text(max_size=40), ports, st.booleans(), st.text(max_size=20)),
    st.builds(Ack, u64), st.builds(Nack, u64),
    st.builds(Suspect, u64, names, names), st.builds(Dead, u64, names, names),
    st.builds(Alive, u64, names, st.text(max_size=40), ports, tags),
    routes,
    st.builds(PushPull, names, st.booleans(),
              st.lists(st.builds(MemberRecord, names, st.text(max_size=40), ports, u64,
                                 st.sampled_from(list(MemberState)), tags), max_size=3).map(tuple),
              st.lists(routes, max_size=3).map(tuple)),
)
_ids = itertools.count(1)


def codec(keyring: Keyring | None = KEY) -> PacketCodec:
    return PacketCodec(keyring, max_clock_skew_s=60.0, rand64=lambda: next(_ids))


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=5), st.booleans())
def test_round_trip(msgs, sealed) -> None:
    tx, rx = codec(KEY if sealed else None), codec(KEY if sealed else None)
    assert rx.open(tx.seal(msgs, WALL), WALL + 1) == msgs


@SETTINGS
@given(st.binary(max_size=300), st.booleans())
def test_garbage_is_dropped_and_counted(data, sealed) -> None:
    rx = codec(KEY if sealed else None)
    with pytest.raises(Dropped) as err:
        rx.open(data, WALL)
    assert rx.stats[f"dropped_{err.value.reason}"] == 1
    assert err.value.reason in {"decrypt", "decode"}
    assert rx.stats["packets_in"] == 0


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_truncated_and_forged_sealed_packets_fail_authentication(msgs, data) -> None:
    packet = PacketCodec(KEY, max_clock_skew_s=60.0, rand64=lambda: 2**40).seal(msgs, WALL)  # fixed length
    rx = codec()
    cut = data.draw(st.integers(0, len(packet) - 1))
    with pytest.raises(Dropped, match="decrypt"):
        rx.open(packet[:cut], WALL)
    pos = data.draw(st.integers(0, len(packet) - 1))
    flipped = bytearray(packet)
    flipped[pos] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(Dropped, match="decrypt"):
        rx.open(bytes(flipped), WALL)
    assert rx.stats["dropped_decrypt"] == 2
    assert rx.open(packet, WALL) == msgs  # the original still opens


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=3))
def test_wrong_key_is_dropped(msgs) -> None:
    other = Keyring([base64.b64decode(new_key())])
    rx = codec()
    with pytest.raises(Dropped, match="decrypt"):
        rx.open(codec(other).seal(msgs, WALL), WALL)
    assert rx.stats["dropped_decrypt"] == 1


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=3), st.floats(0, 60))
def test_replay_within_the_window_is_dropped(msgs, later) -> None:
    packet = codec().seal(msgs, WALL)
    rx = codec()
    rx.open(packet, WALL)
    with pytest.raises(Dropped, match="replay"):
        rx.open(packet, WALL + later)
    assert rx.stats["dropped_replay"] == 1


def test_replay_after_the_window_is_stale() -> None:
    packet = codec().seal([Ack(1)], WALL)
    rx = codec()
    rx.open(packet, WALL)
    with pytest.raises(Dropped, match="stale"):
        rx.open(packet, WALL + 61)
    with pytest.raises(Dropped, match="stale"):
        rx.open(codec().seal([Ack(1)], WALL + 300), WALL)
    assert rx.stats["dropped_stale"] == 2


def test_key_rotation_accepts_old_and_new_sends_with_new() -> None:
    old, new = base64.b64decode(new_key()), base64.b64decode(new_key())
    before, during = Keyring([old]), Keyring([new, old])
    assert codec(during).open(codec(before).seal([Ack(1)], WALL), WALL) == [Ack(1)]
    with pytest.raises(Dropped):
        codec(before).open(codec(during).seal([Ack(2)], WALL), WALL)
    live = codec(before)
    live.set_keyring(during)  # rotated in place: now seals with the new key
    assert codec(Keyring([new])).open(live.seal([Ack(3)], WALL), WALL) == [Ack(3)]
    with pytest.raises(ValueError):
        codec(None).set_keyring(during)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70).filter(lambda i: -2**63 <= i < 2**64)
    | st.text(max_size=8) | st.binary(max_size=8) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=20,
)


@SETTINGS
@given(st.lists(msgpack_values, max_size=8))
def test_decoder_only_raises_decode_error_on_any_structure(value) -> None:
    try:
        decode_message(value)
    except DecodeError:
        pass


@SETTINGS
@given(st.integers(1, 9), st.lists(msgpack_values, max_size=10))
def test_wrongly_typed_fields_are_skipped_by_the_codec(kind, fields) -> None:
    rx = codec(None)
    plain = msgpack.packb([1, int(WALL * 1000), 5, [[kind, *fields], Ack(1).to_wire()]])
    got = rx.open(plain, WALL)
    assert got[-1] == Ack(1)
    assert len(got) == 2 or rx.stats["dropped_message_malformed"] == 1


# ---- rolling upgrades: skip what cannot be read, keep the rest of the packet ------------------

def _plain(items: list, version: int = 1, *extra: object) -> bytes:
    return msgpack.packb([version, int(WALL * 1000), next(_ids), items, *extra])


#: messages of types no release knows yet (type numbers are append-only, so a newer one is higher)
future_messages = st.builds(lambda kind, fields: [kind, *fields], st.integers(100, 2**32), st.lists(msgpack_values, max_size=4))


@SETTINGS
@given(st.lists(st.tuples(messages, st.lists(future_messages, max_size=2)), min_size=1, max_size=4))
def test_unknown_messages_are_skipped_and_the_rest_of_the_packet_is_used(pairs) -> None:
    known = [m for m, _ in pairs]
    items = [x for m, futures in pairs for x in (m.to_wire(), *futures)]
    rx = codec(None)
    assert rx.open(_plain(items), WALL) == known
    assert rx.stats["dropped_message_unknown"] == sum(len(f) for _, f in pairs)
    assert rx.stats["packets_in"] == 1


def test_a_malformed_message_costs_only_itself() -> None:
    alive = Alive(3, "n1", "127.0.0.1", 7946, {})
    long_name = Route("n1", 1, 2, "s" * 300, "i", 1, {}, 0, False).to_wire()
    rx = codec(None)
    assert rx.open(_plain([alive.to_wire(), long_name, [3, "not a number"], Ack(9).to_wire()]), WALL) == [alive, Ack(9)]
    assert rx.stats["dropped_message_malformed"] == 2
    assert rx.stats["dropped_decode"] == 0


def test_push_pull_keeps_every_item_that_decodes() -> None:
    good = Route("n1", 1, 2, "svc", "i", 1, {}, 0, False)
    member = MemberRecord("n1", "127.0.0.1", 7946, 1, MemberState.ALIVE, {})
    wire = PushPull("n1", False, (member,), (good,)).to_wire()
    wire[3].append(["n2", "h", 0, 1, 0, {}])  # port 0: not a member record
    wire[4].append(Route("n1", 1, 3, "s" * 300, "i", 1, {}, 0, False).to_wire())
    rx = codec(None)
    [push] = rx.open(_plain([wire]), WALL)
    assert (push.members, push.routes) == ((member,), (good,))
    assert rx.stats["dropped_message_malformed"] == 2


def test_a_newer_wire_version_with_appended_fields_is_read() -> None:
    """Version 2 may append envelope fields and message fields; version 1 reads what it knows."""
    ping = Ping(5, "n2", "n1")
    rx = codec(None)
    assert rx.open(_plain([[*ping.to_wire(), "a field of v2"]], 2, {"v2": True}), WALL) == [ping]
    for bad_version in (0, -1, "1"):
        with pytest.raises(Dropped, match="decode"):
            rx.open(_plain([ping.to_wire()], bad_version), WALL)  # type: ignore[arg-type]
