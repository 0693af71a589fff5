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
def test_wrongly_typed_fields_are_dropped_by_the_codec(kind, fields) -> None:
    rx = codec(None)
    plain = msgpack.packb([1, int(WALL * 1000), 5, [[kind, *fields]]])
    try:
        rx.open(plain, WALL)
    except Dropped as drop:
        assert drop.reason == "decode"
