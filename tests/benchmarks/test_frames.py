"""The suite's frame builders against rsocket-py's parser: an independent reading of the same bytes."""

from __future__ import annotations

import json

import pytest
from rsocket.extensions.composite_metadata import CompositeMetadata
from rsocket.extensions.routing import RoutingMetadata
from rsocket.frame import (
    CancelFrame,
    KeepAliveFrame,
    RequestNFrame,
    RequestResponseFrame,
    RequestStreamFrame,
    SetupFrame,
    parse_or_ignore,
)

from benchmarks import frames


def parse(frame: bytes):
    return parse_or_ignore(frame)


def test_setup_carries_versions_keepalive_and_mime_types() -> None:
    parsed = parse(frames.setup(20_000, 120_000))
    assert isinstance(parsed, SetupFrame)
    assert (parsed.major_version, parsed.minor_version) == (1, 0)
    assert (parsed.keep_alive_milliseconds, parsed.max_lifetime_milliseconds) == (20_000, 120_000)
    assert parsed.metadata_encoding == frames.MIME_COMPOSITE
    assert parsed.data_encoding == frames.MIME_OCTET_STREAM


def test_provider_setup_holds_the_registration_entry() -> None:
    parsed = parse(frames.setup(20_000, 120_000, frames.register_metadata("r-1")))
    assert isinstance(parsed, SetupFrame)
    composite = CompositeMetadata()
    composite.parse(parsed.metadata)
    (entry,) = composite.items
    assert entry.encoding == frames.MIME_REGISTER
    assert json.loads(entry.content) == {"services": [frames.SERVICE], "instance": "r-1", "weight": 1, "tags": {}}


@pytest.mark.parametrize("stream_id", [1, 3, 2**31 - 1])
def test_request_response_stamped_with_a_stream_id_routes_to_the_bench_service(stream_id: int) -> None:
    body = frames.request_body(frames.REQUEST_RESPONSE, b"x" * 100, frames.routing_metadata())
    parsed = parse(stream_id.to_bytes(4, "big") + body)
    assert isinstance(parsed, RequestResponseFrame)
    assert parsed.stream_id == stream_id
    assert parsed.data == b"x" * 100
    composite = CompositeMetadata()
    composite.parse(parsed.metadata)
    (routing,) = composite.items
    assert isinstance(routing, RoutingMetadata)
    assert routing.tags == [frames.ROUTE.encode()]


def test_request_stream_has_its_initial_credit() -> None:
    body = frames.request_body(frames.REQUEST_STREAM, b"abc", frames.routing_metadata(), initial_n=64)
    parsed = parse((5).to_bytes(4, "big") + body)
    assert isinstance(parsed, RequestStreamFrame)
    assert (parsed.stream_id, parsed.initial_request_n, parsed.data) == (5, 64, b"abc")


def test_flow_control_and_keepalive_frames() -> None:
    request_n = parse(frames.request_n(7, 32))
    assert isinstance(request_n, RequestNFrame) and (request_n.stream_id, request_n.request_n) == (7, 32)
    cancel = parse(frames.cancel(9))
    assert isinstance(cancel, CancelFrame) and cancel.stream_id == 9
    keepalive = parse(frames.keepalive(True, b"hi"))
    assert isinstance(keepalive, KeepAliveFrame) and keepalive.flags_respond and keepalive.data == b"hi"


def test_data_offset_skips_metadata_and_fixed_fields() -> None:
    metadata = frames.routing_metadata()
    frame = (1).to_bytes(4, "big") + frames.request_body(frames.REQUEST_STREAM, b"DATA", metadata, initial_n=1)
    _, type_flags = frames.HEADER.unpack_from(frame, 0)
    assert frame[frames.data_offset(frame, 0, type_flags, fixed=4) :] == b"DATA"


def test_tcp_prefix_is_the_24_bit_length() -> None:
    assert frames.tcp(b"abcdef") == b"\x00\x00\x06abcdef"
    with pytest.raises(ValueError):
        frames.tcp(bytes(1 << 24))
