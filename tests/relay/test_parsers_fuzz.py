"""Hypothesis: every parser fed from the network raises FrameError and nothing else.

Two kinds of input, as h11's fuzzing does: whole random byte strings, and valid frames
mutated byte by byte (flipped, inserted, deleted, truncated). Parsers get the same
``(buf, off, end)`` views the relay passes them, including non-zero offsets.

The relay runs the hot path (``broker.hotpath``), not the readable references in
``broker.frames``: both hot-path implementations, pure Python and compiled, are fuzzed here
and must agree with the references and with each other, result for result, error for error.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import _hotpath, tracing
from broker import frames as fr
from broker import metadata as md
from broker.frames import FrameError, FrameType

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

try:
    from broker import _hotpath_c
except ImportError:  # not built: tests/relay/test_hotpath.py makes that red in CI
    _hotpath_c = None

#: every hot-path implementation this interpreter can load, pure Python first
HOT_PATHS: list[ModuleType] = [_hotpath] + ([_hotpath_c] if _hotpath_c is not None else [])


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


# -- broker.hotpath (both implementations) against the references -------------------------


def _outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call did, comparable across implementations: its result, or its FrameError."""
    try:
        return ("ok", call())
    except FrameError as exc:
        return (type(exc), str(exc), exc.code)


class Recorder:
    """The session side of the hot path with no streams: every frame reaches ``other_frame``."""

    def __init__(self, frame_limit: int = fr.MAX_FRAME_LENGTH) -> None:
        self.streams: dict[int, Any] = {}
        self.open_cache = None  # no route cache: requests reach other_frame too
        self.frames_in = 0
        self.frame_limit = frame_limit
        self.closing = False
        self.seen: list[tuple[int, int, int, int, int]] = []
        self.refused: list[tuple[Any, ...]] = []

    def other_frame(self, buf: Any, off: int, end: int, sid: int, ftype: int, type_flags: int) -> None:
        self.seen.append((off, end, sid, ftype, type_flags))

    def refuse_oversized(self, length: int) -> None:
        self.refused.append(("oversized", length))
        self.closing = True

    def fail(self, code: int, message: str) -> None:
        self.refused.append(("fail", code, message))
        self.closing = True


_streams_in = st.one_of(
    st.binary(max_size=200),
    st.lists(valid_frames(), max_size=4).map(lambda fs: b"".join(fr.with_length_prefix(f) for f in fs)).flatmap(
        lambda b: mutated(st.just(b))
    ),
)


@FUZZ
@given(buf=_streams_in, max_length=st.integers(0, 300))
def test_hot_path_framing_matches_split_frames_and_header(buf: bytes, max_length: int) -> None:
    """read_frames relays exactly the frames split_frames finds, with frames.header's reading
    of each header, refuses where it fails (with its message), and asks for the bytes the next
    frame needs."""
    reference = _outcome(lambda: fr.split_frames(buf, 0, max_length))
    runs = []
    for hot in HOT_PATHS:
        session = Recorder(max_length)
        outcome = _outcome(lambda: hot.read_frames(session, buf))  # noqa: B023
        runs.append((outcome, session.seen, session.refused, session.frames_in))
        if reference[0] == "ok":
            frames, consumed = reference[1]
            left = len(buf) - consumed
            need = 3 + ((buf[consumed] << 16) | (buf[consumed + 1] << 8) | buf[consumed + 2]) if left >= 3 else 3
            assert outcome == ("ok", (consumed, need)) and session.refused == []
        else:
            error, message, code = reference
            last_end = session.seen[-1][1] if session.seen else 0
            frames = fr.split_frames(buf[:last_end], 0, max_length)[0]
            assert outcome == ("ok", (last_end, 0))
            if error is fr.FrameTooLarge:
                [(what, length)] = session.refused
                assert what == "oversized"
                assert message == f"frame of {length} bytes exceeds the maximum frame size of {max_length} bytes"
            else:
                assert session.refused == [("fail", code, message)]
        assert [(off, end) for off, end, *_ in session.seen] == frames
        assert session.frames_in == len(frames)
        for off, _end, sid, ftype, type_flags in session.seen:
            assert (sid & 0x7FFFFFFF, ftype, type_flags & 0x3FF) == fr.header(buf, off)
            assert type_flags >> 10 == ftype and sid == int.from_bytes(buf[off : off + 4], "big")
    assert all(run == runs[0] for run in runs)


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_hot_path_reads_the_frame_limit_for_every_frame(hot: ModuleType) -> None:
    """Accepting SETUP raises the limit: a large frame right behind it in the same read passes."""

    class Growing(Recorder):
        def other_frame(self, *args: Any) -> None:
            super().other_frame(*args)
            self.frame_limit = 1000

    small, large = fr.setup_frame(), fr.payload_frame(1, b"x" * 500)
    session = Growing(len(small))
    data = fr.with_length_prefix(small) + fr.with_length_prefix(large)
    assert hot.read_frames(session, data) == (len(data), 3)
    assert [(off, end) for off, end, *_ in session.seen] == [(3, 3 + len(small)), (6 + len(small), len(data))]
    assert session.refused == []


@FUZZ
@given(views(), st.integers(-3, 3), st.integers(-3, 3))
def test_hot_path_relay_frame_bounds(view: tuple[bytes, int, int], shift_off: int, shift_end: int) -> None:
    """Any view, in bounds or not: both implementations read the same header or refuse alike."""
    buf, off, end = view
    off, end = off + shift_off, end + shift_end
    runs = []
    for hot in HOT_PATHS:
        session = Recorder()
        runs.append((_outcome(lambda: hot.relay_frame(session, buf, off, end)), session.seen))  # noqa: B023
    if 0 <= off and end <= len(buf) and end - off >= fr.HEADER_LENGTH:
        assert runs[0] == (("ok", None), [(off, end, *_raw_header(buf, off))])
    else:
        assert runs[0][0][0] is FrameError and not runs[0][1]
    assert all(run == runs[0] for run in runs)


def _raw_header(buf: bytes, off: int) -> tuple[int, int, int]:
    sid, type_flags = int.from_bytes(buf[off : off + 4], "big"), int.from_bytes(buf[off + 4 : off + 6], "big")
    return sid, type_flags >> 10, type_flags


@FUZZ
@given(views())
def test_hot_path_request_metadata_matches_reference(view: tuple[bytes, int, int]) -> None:
    reference = _outcome(lambda: fr.request_metadata(*view))
    for hot in HOT_PATHS:
        assert _outcome(lambda: hot.request_metadata(*view)) == reference  # noqa: B023


#: the fields of a well-formed ``traceparent`` (two choices each), and wrong values of each
_GOOD = {"version": ["00"], "trace": ["ab" * 16, "0" * 31 + "1"], "parent": ["cd" * 8, "0" * 15 + "1"], "flags": ["01", "00"]}
_BAD = {
    "version": ["01", "0", "ff"],
    "trace": ["0" * 32, "AB" * 16, "ab" * 15 + "ag", "ab" * 16 + "a"],
    "parent": ["0" * 16, "cD" * 8, "cd" * 7, "-" * 16],
    "flags": ["1", "fF", "0x"],
}
_GOOD_STATES = [b"", b"\nk=v", b"\n", b"\n" + b"v" * 512]
_BAD_STATES = [b"\n" + b"v" * 513, b"\nk=\x7f", b"\n\xff", b"x", b"\r\nk=v", b"\n\n"]


@st.composite
def trace_contents(draw: st.DrawFn) -> bytes:
    """A trace entry's content: well formed, or wrong in exactly one place (a field or the state)."""
    fields = {name: draw(st.sampled_from(values)) for name, values in _GOOD.items()}
    wrong = draw(st.sampled_from([None, None, None, "state", *_BAD]))
    if wrong in _BAD:
        fields[wrong] = draw(st.sampled_from(_BAD[wrong]))
    state = draw(st.sampled_from(_BAD_STATES if wrong == "state" else _GOOD_STATES))
    return "-".join(fields.values()).encode() + state


_trace_entries = trace_contents().map(lambda content: md.composite_entry(tracing.TRACE_MIME, content))
_metadata_entries = st.one_of(
    st.builds(md.route_metadata, _routes),
    _trace_entries,
    _trace_entries,
    st.sampled_from([md.composite_entry("text/plain", b"x"), md.composite_entry("x" * 128, b""), b"\x01\xffa\x00\x00\x00"]),
    st.binary(max_size=6),
)
#: whole entries to put before a trace entry; the last has a MIME type that is not ASCII
_prefix_entries = st.lists(
    st.sampled_from([md.route_metadata("a.b"), md.composite_entry("text/plain", b"x"), b"\x01\xffa\x00\x00\x00"]), max_size=2
)
traced_metadata = st.one_of(
    st.tuples(_prefix_entries.map(b"".join), _trace_entries, st.lists(_metadata_entries, max_size=2).map(b"".join)).map(b"".join),
    st.lists(_metadata_entries, max_size=5).map(b"".join),
    mutated(st.lists(_metadata_entries, min_size=1, max_size=4).map(b"".join)),
)


def _trace_entry_reference(metadata: bytes, max_entries: int) -> tuple[bytes, int]:
    """``trace_entry`` spelled with the readable readers: ``entry_spans`` up to the first trace
    entry, ``tracing.ENTRY`` on its content."""
    try:
        for mime, start, end in md.entry_spans(metadata, max_entries=max_entries):
            if mime == tracing.TRACE_MIME:
                if tracing.ENTRY.fullmatch(metadata[start:end]) is None:
                    return metadata, -1
                return metadata[: start - 3] + bytes(3) + metadata[end:], start
    except FrameError:
        pass
    return metadata, -1


@FUZZ
@given(traced_metadata, st.integers(1, 6))
def test_hot_path_trace_entry_matches_reference(metadata: bytes, max_entries: int) -> None:
    """Both implementations find the same trace entry as the readable readers, refuse the same
    ill-formed contexts, and give a route key that a full read routes as it routes ``metadata``;
    a stream traced from it keeps the entry's content as its ``trace`` (the compiled ``Stream``
    holds a lone ``traceparent`` in a C field, any other content as bytes)."""
    reference = _trace_entry_reference(metadata, max_entries)
    for hot in HOT_PATHS:
        assert hot.trace_entry(metadata, max_entries) == reference
    key, at = reference
    if at >= 0:
        assert _outcome(lambda: md.route_of(key, md.COMPOSITE_MIME, max_entries)) == _outcome(
            lambda: md.route_of(metadata, md.COMPOSITE_MIME, max_entries)
        )
        content = metadata[at : at + int.from_bytes(metadata[at - 3 : at], "big")]
        for hot in HOT_PATHS:
            stream = hot.Stream(FrameType.REQUEST_RESPONSE, None, 1)
            assert stream.trace is None
            hot.trace_stream(stream, metadata, at, None)
            assert stream.trace == content and stream.span


def test_hot_path_trace_entry_checks_every_byte_of_the_ids_and_flags() -> None:
    """Every byte value in every place of the trace id, the parent id and the flags: each
    implementation accepts exactly what ``tracing.ENTRY`` accepts (the compiled twin checks the
    ids eight bytes a step, where a wrong byte next to a good one must not hide)."""
    good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    for at in [*range(3, 35), *range(36, 52), 53, 54]:
        for value in range(256):
            content = good[:at] + bytes((value,)) + good[at + 1 :]
            metadata = md.route_metadata("a.b") + md.composite_entry(tracing.TRACE_MIME, content)
            reference = _trace_entry_reference(metadata, 8)
            assert all(hot.trace_entry(metadata, 8) == reference for hot in HOT_PATHS), (at, value)


@FUZZ
@given(
    st.lists(_metadata_entries, max_size=3).map(b"".join),
    st.binary(max_size=8).map(lambda b: b"\n" + b if b else b""),
    st.sampled_from([FrameType.REQUEST_RESPONSE, FrameType.REQUEST_FNF, FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL]),
    st.binary(max_size=16),
    st.integers(1, 2**64 - 1),
    st.binary(max_size=4),
    st.sampled_from([bytes, bytearray, memoryview]),
)
def test_hot_path_stamp_parent_rewrites_only_the_parent_id(
    before: bytes, state: bytes, ftype: FrameType, data: bytes, span: int, pad: bytes, kind: type
) -> None:
    """The frame the provider gets is the request the relay read with the 16 digits of the
    parent id replaced by the hop's span id: the frame a requester would have built with that
    parent, byte for byte, on both implementations and from any buffer type."""
    content = b"00-" + b"ab" * 16 + b"-" + b"cd" * 8 + b"-01" + state
    metadata = before + md.composite_entry(tracing.TRACE_MIME, content) + md.route_metadata("a.b")
    _, at = _trace_entry_reference(metadata, 64)
    if at < 0:  # an entry before it made the metadata unreadable, or hid the trace entry
        return
    frame = fr.request_frame(ftype, 7, metadata, data, initial_n=3)
    parent = at + tracing.PARENT_AT  # the first trace entry's (``before`` may hold one)
    expected = fr.request_frame(ftype, 7, metadata[:parent] + b"%016x" % span + metadata[parent + 16 :], data, initial_n=3)
    buf = kind(pad + frame + pad)
    for hot in HOT_PATHS:
        stamped = hot.stamp_parent(buf, len(pad), len(pad) + len(frame), parent, span)
        assert type(stamped) is bytes and stamped == expected


@FUZZ
@given(views(), st.integers(-3, 200), st.sampled_from([0, 1, 2**64 - 1, 2**64]))
def test_hot_path_stamp_parent_refuses_fields_outside_the_frame(view: tuple[bytes, int, int], at: int, span: int) -> None:
    """Any frame, any offset, any span id: both implementations stamp the same bytes or refuse
    with the same FrameError; nothing is written outside the copy."""
    runs = [_outcome(lambda: hot.stamp_parent(*view, at, span)) for hot in HOT_PATHS]  # noqa: B023
    assert all(run == runs[0] for run in runs)
    if runs[0][0] == "ok":
        buf, off, end = view
        assert len(runs[0][1]) == end - off and 0 < span < 2**64


class Broker:
    def __init__(self) -> None:
        self.dirty: list[Any] = []

    def mark_dirty(self, session: Any) -> None:
        self.dirty.append(session)


class Wire:
    """A length-prefixed destination: what the TCP shell holds between flushes."""

    def __init__(self) -> None:
        self.wire_out = bytearray()
        self.frames_out = 0
        self._queued = False
        self.broker = Broker()


class Whole:
    """A destination taking whole frames (WebSocket's way)."""

    wire_out = None

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def forward(self, sid: bytes, buf: Any, off: int, end: int) -> None:
        self.got.append(sid + bytes(buf[off + 4 : end]))


@FUZZ
@given(st.lists(st.tuples(views(st.binary(min_size=6, max_size=64)), st.binary(min_size=4, max_size=4)), min_size=1, max_size=4))
def test_hot_path_forward_coalesces_rewritten_frames(items: list[tuple[tuple[bytes, int, int], bytes]]) -> None:
    """Frames forwarded in one turn come out as one buffer of prefixed frames with the new ids,
    the destination marked for flushing once; a whole-frame destination gets each frame."""
    expected = [sid + buf[off + 4 : end] for (buf, off, end), sid in items]
    for hot in HOT_PATHS:
        wire, whole = Wire(), Whole()
        for (buf, off, end), sid in items:
            hot.forward(wire, sid, buf, off, end)
            hot.forward(whole, sid, buf, off, end)
        assert bytes(wire.wire_out) == b"".join(fr.with_length_prefix(f) for f in expected)
        assert wire.frames_out == len(items) and wire._queued and wire.broker.dirty == [wire]
        assert whole.got == expected


@pytest.mark.parametrize("hot", HOT_PATHS, ids=lambda m: m.__name__)
def test_hot_path_forward_refuses_views_outside_the_buffer(hot: ModuleType) -> None:
    frame = fr.payload_frame(1, b"data")
    for off, end in ((0, len(frame) + 1), (-1, 6), (2, 7)):
        with pytest.raises(FrameError):
            hot.forward(Wire(), b"\0\0\0\2", frame, off, end)


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
