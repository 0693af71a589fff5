"""The RFC 6455 codec both WebSocket ends use (``broker.websocket``), fuzzed: whole, split
at every byte, and on arbitrary bytes, where only ``WebSocketError`` may escape."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.websocket import (
    OP_BINARY, OP_CLOSE, OP_PING, WebSocketError, accept_key, encode_frame, frame_header, parse_frames,
)  # fmt: skip

frames_strategy = st.lists(
    st.tuples(st.sampled_from([OP_BINARY, OP_PING, OP_CLOSE]), st.binary(max_size=300), st.booleans()).map(
        lambda t: (t[0], t[1][:125] if t[0] != OP_BINARY else t[1], t[2])
    ),
    max_size=6,
)


def test_accept_key_matches_the_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3


@given(frames_strategy)
def test_encoded_frames_parse_back_whole_and_from_every_split(frames: list[tuple[int, bytes, bool]]) -> None:
    wire = b"".join(encode_frame(op, payload, masked) for op, payload, masked in frames)
    parsed, used = parse_frames(wire, 1 << 20)
    assert used == len(wire)
    assert parsed == [(0x80, op, payload) for op, payload, _ in frames]
    for cut in range(len(wire) + 1):
        head, used = parse_frames(wire[:cut], 1 << 20)
        rest, used_rest = parse_frames(wire[used:], 1 << 20)
        assert head + rest == parsed and used + used_rest == len(wire)


@settings(max_examples=500)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=1 << 16))
def test_arbitrary_bytes_raise_only_the_protocol_error(data: bytes, limit: int) -> None:
    try:
        frames, used = parse_frames(data, limit)
    except WebSocketError:
        return
    assert 0 <= used <= len(data)
    assert all(len(payload) <= limit for _, _, payload in frames)


@pytest.mark.parametrize("length", [126, 70_000, 1 << 40])
def test_a_frame_over_the_limit_is_refused_from_its_header(length: int) -> None:
    with pytest.raises(WebSocketError) as caught:
        parse_frames(frame_header(OP_BINARY, length, masked=True), 125)  # no key, no payload yet
    assert caught.value.size == length


def test_control_frames_must_be_short_and_whole() -> None:
    with pytest.raises(WebSocketError, match="control frame"):
        parse_frames(frame_header(OP_PING, 126) + b"x" * 126, 1 << 20)
    with pytest.raises(WebSocketError, match="reserved bits"):
        parse_frames(bytes((0x80 | 0x40 | OP_BINARY, 0)), 1 << 20)
