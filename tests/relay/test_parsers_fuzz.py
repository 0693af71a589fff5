"""Hypothesis: every parser fed from the network raises FrameError and nothing else.

Two kinds of input, as h11's fuzzing does: whole random byte strings, and valid frames
mutated byte by byte (flipped, inserted, deleted, truncated). Parsers get the same
``(buf, off, end)`` views the relay passes them, including non-zero offsets.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import frames as fr
from broker import metadata as md
from broker.frames import FrameError, FrameType

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_frame_errors(parse: Callable[[], Any]) -> Any:
    try:
        return parse()
    except FrameError:
        return None


# -- inputs ---------------------------------------------------------------------------------

_routes = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF), min_size=1, max_size=20)


@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    """One well-formed frame of a type the broker parses."""
    route = draw(_routes)
    meta = md.route_metadata(route) + draw(st.sampled_from([b"", md.composite_entry("text/plain", b"x")]))
    data = draw(st.binary(max_size=32))
    sid = draw(st.integers(1, fr.MAX_REQUEST_N))
    choice = draw(st.integers(0, 7))
    if choice == 0:
        reg = md.Registration(services=(route,), instance=draw(st.text(min_size=1, max_size=8)), weight=draw(st.integers(1, 9)))
        return fr.setup_frame(
            metadata=md.composite_entry(md.REGISTER_MIME, reg.to_json()) + md.composite_entry(md.AUTH_MIME, b"\x81token"),
            data=data,
            lease=draw(st.booleans()),
        )
    if choice <= 4:
        ftype = (FrameType.REQUEST_RESPONSE, FrameType.REQUEST_FNF, FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL)[choice - 1]
        return fr.request_frame(ftype, sid, meta, data, initial_n=draw(st.integers(0, fr.MAX_REQUEST_N)))
    if choice == 5:
        return fr.payload_frame(sid, data, draw(st.sampled_from([None, meta])))
    if choice == 6:
        return fr.lease_frame(draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1)))
    return fr.error_frame(sid, draw(st.integers(0, 2**32 - 1)), draw(st.text(max_size=20)))


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A valid input with a few bytes flipped, inserted, deleted, or its end cut off."""
    buf = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, max(0, len(buf) - 1)))
        if op == 0 and buf:
            buf[pos] = draw(st.integers(0, 255))
        elif op == 1:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == 2 and buf:
            del buf[pos]
        else:
            del buf[pos:]
    return bytes(buf)


frames_in = st.one_of(st.binary(max_size=96), mutated(valid_frames()))


@st.composite
def views(draw: st.DrawFn, source: st.SearchStrategy[bytes] = frames_in) -> tuple[bytes, int, int]:
    """``(buf, off, end)``: the frame somewhere inside a larger buffer, as the relay sees it."""
    frame = draw(source)
    before, after = draw(st.binary(max_size=8)), draw(st.binary(max_size=8))
    return before + frame + after, len(before), len(before) + len(frame)


# -- broker.frames ----------------------------------------------------------------------------


@FUZZ
@given(buf=st.one_of(st.binary(max_size=200), st.lists(valid_frames(), max_size=4).map(
    lambda fs: b"".join(fr.with_length_prefix(f) for f in fs)
).flatmap(lambda b: mutated(st.just(b)))), start=st.integers(0, 8), max_length=st.integers(0, 300))
def test_split_frames(buf: bytes, start: int, max_length: int) -> None:
    result = _only_frame_errors(lambda: fr.split_frames(buf, start, max_length))
    if result is not None:
        found, consumed = result
        pos = start
        for off, end in found:  # contiguous, in bounds, each within the limits
            assert off == pos + 3 and fr.HEADER_LENGTH <= end - off <= max_length and end <= len(buf)
            pos = end
        assert consumed == pos


@FUZZ
@given(views())
def test_parse_setup(view: tuple[bytes, int, int]) -> None:
    _only_frame_errors(lambda: fr.parse_setup(*view))


@FUZZ
@given(views())
def test_request_metadata_and_data(view: tuple[bytes, int, int]) -> None:
    _only_frame_errors(lambda: fr.request_metadata(*view))
    _only_frame_errors(lambda: fr.request_data(*view))


@FUZZ
@given(views())
def test_parse_lease_error_request_n(view: tuple[bytes, int, int]) -> None:
    for parse in (fr.parse_lease, fr.parse_error, fr.parse_request_n):
        _only_frame_errors(lambda: parse(*view))  # noqa: B023


@FUZZ
@given(valid_frames())
def test_valid_frames_parse(frame: bytes) -> None:
    """The other half of the contract: what the builders make, the parsers accept."""
    _, ftype, _ = fr.header(frame)
    if ftype == FrameType.SETUP:
        setup = fr.parse_setup(frame, 0, len(frame))
        assert md.find_entry(setup.metadata, md.REGISTER_MIME) is not None
    elif ftype == FrameType.LEASE:
        fr.parse_lease(frame, 0, len(frame))
    elif ftype == FrameType.ERROR:
        fr.parse_error(frame, 0, len(frame))
    else:
        metadata, _ = fr.request_metadata(frame, 0, len(frame))
        if metadata:
            assert md.route_of(metadata, md.COMPOSITE_MIME)
    assert fr.split_frames(fr.with_length_prefix(frame), 0, len(frame)) == ([(3, 3 + len(frame))], 3 + len(frame))


# -- broker.metadata --------------------------------------------------------------------------

_composites = st.lists(
    st.tuples(st.sampled_from([md.ROUTING_MIME, md.REGISTER_MIME, md.AUTH_MIME, "text/plain", "x" * 128]), st.binary(max_size=16)),
    max_size=3,
).map(lambda entries: b"".join(md.composite_entry(m, c) for m, c in entries))
metadata_in = st.one_of(st.binary(max_size=64), mutated(_composites), mutated(st.just(md.route_metadata("a.b.c"))))


@FUZZ
@given(metadata_in)
def test_iter_composite_and_find_entry(metadata: bytes) -> None:
    _only_frame_errors(lambda: list(md.iter_composite(metadata)))
    _only_frame_errors(lambda: md.find_entry(metadata, md.REGISTER_MIME))


@FUZZ
@given(st.one_of(st.binary(max_size=64), mutated(st.just(md.routing("svc.method", "tag2")))))
def test_parse_routing(tags: bytes) -> None:
    _only_frame_errors(lambda: md.parse_routing(tags))


@FUZZ
@given(metadata_in, st.sampled_from([md.COMPOSITE_MIME, md.ROUTING_MIME]))
def test_route_of(metadata: bytes, mime: str) -> None:
    route = _only_frame_errors(lambda: md.route_of(metadata, mime))
    assert route is None or isinstance(route, str)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
_registration_objects = st.fixed_dictionaries(
    {},
    optional={
        "services": st.one_of(_json_values, st.lists(st.text(max_size=6), max_size=3)),
        "instance": _json_values,
        "weight": st.one_of(_json_values, st.integers(-2, 2_000_000)),
        "tags": st.one_of(_json_values, st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)),
    },
)
registration_in = st.one_of(
    st.binary(max_size=64),
    _registration_objects.map(lambda o: json.dumps(o).encode()),
    mutated(_registration_objects.map(lambda o: json.dumps(o).encode())),
)


@FUZZ
@given(registration_in)
def test_registration_from_json(raw: bytes) -> None:
    reg = _only_frame_errors(lambda: md.Registration.from_json(raw, "default"))
    if reg is not None:
        assert all(isinstance(s, str) and s.strip() for s in reg.services)
        assert 1 <= reg.weight <= 1_000_000 and reg.instance


def test_deeply_nested_registration_is_a_frame_error() -> None:
    """json.loads recurses: nesting deeper than the interpreter's stack must not escape as RecursionError."""
    assert _only_frame_errors(lambda: md.Registration.from_json(b"[" * 100_000 + b"]" * 100_000, "d")) is None
