"""The RFC 6455 codec both WebSocket ends use (``broker.websocket``), fuzzed: whole, split
at every byte, and on arbitrary bytes, where only ``WebSocketError`` may escape."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.websocket import (
    OP_BINARY, OP_CLOSE, OP_PING, UpgradeRequest, WebSocketError, accept_key, encode_frame, frame_header, parse_frames,
    parse_upgrade_request, upgrade_refusal,
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


# -- the listener's upgrade request head (broker.transports.UpgradeSniffer) -------------------

header_names = st.sampled_from(["Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Origin", "X-A"])
header_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_request_heads_give_a_request_or_none(head: bytes) -> None:
    request = parse_upgrade_request(head)
    assert request is None or isinstance(request, UpgradeRequest)
    if request is not None:
        assert isinstance(upgrade_refusal(request.headers), str)


@given(st.lists(st.tuples(header_names, header_values), max_size=8), st.sampled_from(["/rsocket", "/rsocket?a=1", "/rpc/x"]))
def test_a_get_head_parses_to_its_path_and_first_headers(fields: list[tuple[str, str]], target: str) -> None:
    head = (f"GET {target} HTTP/1.1\r\n" + "\r\n".join(f"{k}: {v}" for k, v in fields)).encode()
    request = parse_upgrade_request(head.rstrip(b"\r\n") if not fields else head)
    assert request is not None and request.path == target.partition("?")[0]
    first: dict[str, str] = {}
    for name, value in fields:
        first.setdefault(name.lower(), value)
    assert request.headers == first


@pytest.mark.parametrize("head", [
    b"POST /rsocket HTTP/1.1\r\nHost: a",
    b"GET /rsocket HTTP/1.0\r\nHost: a",
    b"GET /rsocket HTTP/1.1\r\nHost: a\r\n folded",
    b"GET /rsocket HTTP/1.1\r\nno colon here",
    b"GET /rsocket HTTP/1.1\r\nContent-Length: 5",
    b"GET /rsocket HTTP/1.1\r\nTransfer-Encoding: chunked",
])
def test_heads_the_fast_path_leaves_to_the_http_server(head: bytes) -> None:
    assert parse_upgrade_request(head) is None
