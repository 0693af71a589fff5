"""Splitting payloads into fragments and putting them back together (pure, property-based)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from broker.client.errors import PayloadTooLarge
from broker.client.fragments import Reassembly, split
from broker.frames import FLAG_FOLLOWS, FrameError, FrameType, header, payload_frame, request_frame

KINDS = [FrameType.REQUEST_RESPONSE, FrameType.REQUEST_FNF, FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL, FrameType.PAYLOAD]


def whole(kind: int, sid: int, metadata: bytes | None, data: bytes, initial_n: int, complete: bool) -> bytes:
    if kind == FrameType.PAYLOAD:
        return payload_frame(sid, data, metadata, complete=complete)
    return request_frame(kind, sid, metadata, data, initial_n=initial_n, complete=complete)


@given(
    kind=st.sampled_from(KINDS),
    metadata=st.none() | st.binary(max_size=300),
    data=st.binary(max_size=600),
    max_frame=st.integers(min_value=24, max_value=200),
    initial_n=st.integers(min_value=1, max_value=2**31 - 1),
    complete=st.booleans(),
)
# found by Hypothesis: a fragmented REQUEST_CHANNEL's COMPLETE travels on its last fragment
@example(kind=FrameType.REQUEST_CHANNEL, metadata=None, data=bytes(15), max_frame=24, initial_n=1, complete=True)
def test_split_then_reassemble_gives_the_unfragmented_frame(
    kind: int, metadata: bytes | None, data: bytes, max_frame: int, initial_n: int, complete: bool
) -> None:
    complete = complete and kind in (FrameType.PAYLOAD, FrameType.REQUEST_CHANNEL)
    frames = split(kind, 5, metadata, data, max_frame, initial_n=initial_n, complete=complete)
    assert all(len(f) <= max_frame for f in frames)
    assert [bool(header(f)[2] & FLAG_FOLLOWS) for f in frames] == [True] * (len(frames) - 1) + [False]
    assert header(frames[0])[1] == kind and all(header(f)[1] == FrameType.PAYLOAD for f in frames[1:])
    reassembly = Reassembly(max_bytes=10_000)
    results = [reassembly.add(f, 0, len(f), 5, header(f)[1], header(f)[2]) for f in frames]
    rebuilt = results[-1] if len(frames) > 1 else frames[0]
    assert results[:-1] == [None] * (len(frames) - 1)
    assert rebuilt == whole(kind, 5, metadata, data, initial_n, complete)
    assert not reassembly


def test_a_payload_past_the_bound_is_refused_once_and_its_remaining_fragments_skipped() -> None:
    frames = split(FrameType.PAYLOAD, 7, None, bytes(1000), 100)
    reassembly = Reassembly(max_bytes=300)
    raised = 0
    for frame in frames:
        try:
            assert reassembly.add(frame, 0, len(frame), 7, FrameType.PAYLOAD, header(frame)[2]) is None
        except PayloadTooLarge:
            raised += 1
    assert raised == 1 and not reassembly
    # the stream id is free again: the next fragmented payload on it is assembled as usual
    again = split(FrameType.PAYLOAD, 7, None, bytes(150), 100)
    assert reassembly.add(again[0], 0, len(again[0]), 7, FrameType.PAYLOAD, header(again[0])[2]) is None
    assert reassembly.add(again[1], 0, len(again[1]), 7, FrameType.PAYLOAD, header(again[1])[2]) == payload_frame(7, bytes(150))


def test_another_frame_type_in_the_middle_of_a_payload_is_a_protocol_error() -> None:
    first, _ = split(FrameType.REQUEST_RESPONSE, 3, b"m", bytes(200), 100)[:2]
    reassembly = Reassembly(max_bytes=10_000)
    assert reassembly.add(first, 0, len(first), 3, FrameType.REQUEST_RESPONSE, header(first)[2]) is None
    intruder = request_frame(FrameType.REQUEST_RESPONSE, 3, None, b"x")
    with pytest.raises(FrameError, match="middle of a fragmented payload"):
        reassembly.add(intruder, 0, len(intruder), 3, FrameType.REQUEST_RESPONSE, 0)
