"""The client's codec: which one runs, and that the compiled twin, the pure module and the
reference codec (:mod:`broker.frames`) agree byte for byte and error for error.

CI must never pass on a silently failed build: with ``CI=true`` and no
``RSBROKER_NO_EXTENSIONS``, the compiled module has to be the one loaded (as
tests/relay/test_hotpath.py requires of the relay's). Hypothesis feeds every implementation
this interpreter can load the same bytes: the readers are held to ``frames.split_frames``,
``frames.request_metadata`` and ``frames.request_data``, the writers to ``frames.request_frame``,
``frames.payload_frame`` and ``frames.with_length_prefix``, and the dispatcher runs inside a
real :class:`~broker.client.Connection` on each implementation, which must answer, resolve
futures and refuse malformed frames identically.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from broker import frames as fr
from broker import metadata as md
from broker.client import Router, codec, connection
from broker.client import _codec as pure
from broker.client.connection import Connection
from broker.frames import FrameType
from tests.relay.test_parsers_fuzz import FUZZ, frames_in, mutated, valid_frames, views

try:
    from broker.client import _codec_c as compiled
except ImportError:  # not built: test_extension_is_loaded_in_ci makes that red in CI
    compiled = None

#: every codec this interpreter can load, pure Python first
CODECS: list[ModuleType] = [pure] + ([compiled] if compiled is not None else [])
_REQUESTS = (FrameType.REQUEST_RESPONSE, FrameType.REQUEST_FNF, FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL)


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """What ``call`` did: ("ok", result) or (exception type name, message)."""
    try:
        return "ok", call()
    except Exception as exc:  # noqa: BLE001 - the twins must fail alike, whatever the error
        return type(exc).__name__, str(exc)


def _each(call: Callable[[ModuleType], Any]) -> tuple[str, Any]:
    """The outcome on every codec, which must be the same; returns it."""
    outcomes = [_outcome(lambda: call(module)) for module in CODECS]
    assert all(o == outcomes[0] for o in outcomes), dict(zip((m.__name__ for m in CODECS), outcomes, strict=True))
    return outcomes[0]


# -- which one runs -----------------------------------------------------------------------------


def _loaded(extra_env: dict[str, str], drop: tuple[str, ...] = ()) -> str:
    env = {k: v for k, v in os.environ.items() if k not in drop} | extra_env
    code = "import broker.client.codec as c; print(c.COMPILED, c.received.__module__)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_extension_is_loaded_in_ci() -> None:
    if os.environ.get("CI", "").lower() != "true":
        pytest.skip("only CI (CI=true) requires the compiled codec; a local install may lack a compiler")
    if os.environ.get("RSBROKER_NO_EXTENSIONS", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.skip("RSBROKER_NO_EXTENSIONS is set: this pass tests the pure-Python codec")
    assert codec.COMPILED, "CI runs without the compiled client codec: the build of broker/client/_codec_c.pyx failed"


def test_no_extensions_forces_pure_python() -> None:
    assert _loaded({"RSBROKER_NO_EXTENSIONS": "1"}) == "False broker.client._codec"


@pytest.mark.skipif(compiled is None, reason="the compiled codec is not built here")
def test_compiled_is_the_default_when_built() -> None:
    assert _loaded({}, drop=("RSBROKER_NO_EXTENSIONS",)) == "True broker.client._codec_c"


def test_the_connection_uses_the_chosen_codec() -> None:
    assert connection.received is codec.received


# -- readers ------------------------------------------------------------------------------------


class _Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[int, int]] = []

    def frame_received(self, buf: bytes, off: int, end: int) -> None:
        self.frames.append((off, end))


_chunks = st.one_of(
    st.binary(max_size=200),
    st.lists(valid_frames(), max_size=4).map(lambda fs: b"".join(fr.with_length_prefix(f) for f in fs)).flatmap(lambda b: mutated(st.just(b))),
)


@FUZZ
@given(buf=_chunks, max_frame=st.integers(0, 300))
@example(buf=b"\x00\x00\x07" + bytes(7) + b"\x00\x01", max_frame=300)  # a frame, then a short prefix
@example(buf=b"\x00\x00\x06" + bytes(6) + b"\x00\x01\x00", max_frame=300)  # a frame, then one too big
def test_read_frames_is_split_frames(buf: bytes, max_frame: int) -> None:
    def run(module: ModuleType) -> tuple[list[tuple[int, int]], tuple[str, Any]]:
        sink = _Sink()
        return sink.frames, _outcome(lambda: module.read_frames(sink, buf, max_frame))

    results = [run(module) for module in CODECS]
    assert all(r == results[0] for r in results), results
    delivered, (kind, value) = results[0]
    reference = _outcome(lambda: fr.split_frames(buf, 0, max_frame))
    if reference[0] == "ok":
        frames, consumed = reference[1]
        rest = buf[consumed:]
        need = 3 + int.from_bytes(rest[:3], "big") if len(rest) >= 3 else 3
        assert (kind, delivered, value) == ("ok", frames, (consumed, need))
    else:  # the same error, after the whole frames before the bad prefix
        assert (kind, value) == reference
        upto = delivered[-1][1] if delivered else 0
        assert fr.split_frames(buf[:upto], 0, max_frame) == (delivered, upto)


@FUZZ
@given(views())
def test_request_parts_is_request_metadata_and_request_data(view: tuple[bytes, int, int]) -> None:
    buf, off, end = view
    got = _each(lambda module: module.request_parts(buf, off, end))
    assert got[0] in ("ok", "FrameError"), got
    if end - off >= fr.HEADER_LENGTH and fr.header(buf, off)[1] in (*_REQUESTS, FrameType.PAYLOAD):
        flags = fr.header(buf, off)[2]

        def reference() -> tuple[bytes, bytes]:
            metadata = fr.request_metadata(buf, off, end)[0] if flags & fr.FLAG_METADATA else b""
            return metadata, fr.request_data(buf, off, end)

        assert got == _outcome(reference)


@FUZZ
@given(view=views(), off=st.integers(-3, 3), end=st.integers(-3, 3))
def test_readers_refuse_views_outside_the_buffer(view: tuple[bytes, int, int], off: int, end: int) -> None:
    buf = view[0]
    got = _each(lambda module: module.request_parts(buf, off, len(buf) + end))
    assert got[0] in ("ok", "FrameError"), got


# -- writers ------------------------------------------------------------------------------------

_bytes = st.one_of(st.binary(max_size=40), st.binary(max_size=40).map(bytearray))


@FUZZ
@given(
    ftype=st.sampled_from(_REQUESTS),
    sid=st.integers(0, 2**32 + 5),
    metadata=st.one_of(st.none(), _bytes),
    data=_bytes,
    initial_n=st.integers(0, 2**32),
    complete=st.booleans(),
)
def test_encode_request_is_request_frame(ftype: int, sid: int, metadata: bytes | None, data: bytes, initial_n: int, complete: bool) -> None:
    got = _each(lambda module: module.encode_request(ftype, sid, metadata, data, initial_n, complete))
    assert got == _outcome(lambda: fr.request_frame(ftype, sid, metadata, data, initial_n=initial_n, complete=complete))


@FUZZ
@given(sid=st.integers(0, 2**32 + 5), data=st.one_of(_bytes, st.text(max_size=3)), complete=st.booleans())
def test_encode_payload_is_payload_frame(sid: int, data: bytes, complete: bool) -> None:
    got = _each(lambda module: module.encode_payload(sid, data, complete))
    assert got == _outcome(lambda: fr.payload_frame(sid, data, complete=complete))  # a str fails alike


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=40), st.binary(max_size=40).map(bytearray)), max_size=5))
def test_prefixed_is_with_length_prefix(frames: list[bytes]) -> None:
    got = _each(lambda module: module.prefixed(frames))
    assert got == ("ok", b"".join(fr.with_length_prefix(bytes(f)) for f in frames))


def test_prefixed_refuses_a_frame_a_prefix_cannot_hold() -> None:
    assert _each(lambda module: module.prefixed([b"x", bytes(1 << 24)])) == ("OverflowError", "int too big to convert")


# -- the dispatcher, inside a real Connection -----------------------------------------------------


class _Wire:
    """The connection's transport: what it writes, batch by batch."""

    peer = "test"

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write_frames(self, frames: list[bytes]) -> None:
        self.written.extend(frames)

    def close(self) -> None:
        pass


def _router() -> Router:
    router = Router()

    @router.response("svc.echo")
    async def echo(data: bytes) -> bytes:
        return data

    @router.fire_and_forget("svc.log")
    async def log(data: bytes) -> None:
        return None

    return router


_served = st.builds(
    lambda ftype, sid, route, extra, data: fr.request_frame(ftype, sid, md.route_metadata(route) + extra, data),
    st.sampled_from([FrameType.REQUEST_RESPONSE, FrameType.REQUEST_FNF]),
    st.integers(2, 40).map(lambda n: n * 2),
    st.sampled_from(["svc.echo", "svc.log", "svc.none"]),
    st.sampled_from([b"", md.composite_entry("text/plain", b"x")]),
    st.binary(max_size=16),
)
_answers = st.builds(
    lambda sid, data, meta, next_, complete: fr.payload_frame(sid, data, meta, next_=next_, complete=complete),
    st.sampled_from([1, 3, 5, 7]),
    st.binary(max_size=16),
    st.sampled_from([None, b"", b"m"]),
    st.booleans(),
    st.booleans(),
)
_conversation = st.lists(st.one_of(_served, _answers, mutated(st.one_of(_served, _answers)), frames_in), max_size=8)


def _converse(module: ModuleType, frames: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    """Feed ``frames`` to a connection dispatching with ``module``; what it wrote and resolved."""
    monkeypatch.setattr(connection, "received", module.received)

    async def run() -> tuple[Any, ...]:
        conn = Connection(router=_router(), keepalive_s=3600, max_lifetime_s=7200)
        wire = _Wire()
        conn.attach(wire)  # type: ignore[arg-type]
        futures = {sid: asyncio.get_running_loop().create_future() for sid in (1, 3, 5)}
        conn._pending.update(futures)
        for frame in frames:
            conn.frame_received(b"\xff" + frame + b"\xee", 1, 1 + len(frame))
        conn._flush()
        resolved = {sid: (f.result() if not f.exception() else repr(f.exception())) if f.done() else None for sid, f in futures.items()}
        error = str(conn.error) if conn.error is not None else None
        conn.close()
        return wire.written, resolved, error

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


@FUZZ
@given(_conversation)
def test_a_connection_dispatches_alike_on_every_codec(frames: list[bytes]) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        outcomes = [_converse(module, frames, monkeypatch) for module in CODECS]
    assert all(o == outcomes[0] for o in outcomes), outcomes


def test_a_connection_answers_requests_and_resolves_futures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The differential test above could pass on two codecs that both do nothing: not so."""
    frames = [
        fr.request_frame(FrameType.REQUEST_RESPONSE, 2, md.route_metadata("svc.echo"), b"hi"),
        fr.payload_frame(3, b"answer", complete=True),
        fr.payload_frame(5, b"", next_=False, complete=True),
        fr.request_frame(FrameType.REQUEST_RESPONSE, 4, md.route_metadata("svc.none"), b""),
    ]
    for module in CODECS:
        written, resolved, error = _converse(module, frames, monkeypatch)
        assert written == [
            fr.payload_frame(2, b"hi", complete=True),
            fr.error_frame(4, fr.ErrorCode.REJECTED, "no handler for route 'svc.none'"),
        ]
        assert resolved == {1: None, 3: b"answer", 5: b""}
        assert error is None
        _, _, error = _converse(module, [fr.payload_frame(1, b"", b"mmmmm")[:-3]], monkeypatch)
        assert error is not None and "metadata length" in error
