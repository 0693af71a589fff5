"""The client's per-frame codec in plain Python: the single source of truth.

``broker/client/_codec_c.pyx`` is a compiled twin with the same behaviour, frame for frame
and error message for error message; :mod:`broker.client.codec` picks one at import (the
compiled one unless ``RSBROKER_NO_EXTENSIONS`` is set or it was not built). Hypothesis tests
(``tests/client/test_codec.py``) hold each to the reference codec (:mod:`broker.frames`) and
to each other, and ``make test`` runs ``tests/client`` once per module.

What lives here — the work a :class:`~broker.client.Connection` does for every frame, as
profiled at both ends of a request-response — and nothing else:

* :func:`read_frames` — TCP framing: hand each complete length-prefixed frame of a received
  chunk to the sink (reference ``frames.split_frames``);
* :func:`received` — read the header and dispatch by stream id: a PAYLOAD answering a
  request-response completes its future here, a request's metadata and data are read here
  and passed on with the route its metadata had last time; the rest goes to
  ``Connection._other_frame`` with the header already read;
* :func:`request_parts` — a request's metadata and data (references ``frames.request_metadata``
  and ``frames.request_data``);
* :func:`encode_request`, :func:`encode_payload`, :func:`prefixed` — the frames a requester
  and a provider write for every request (references ``frames.request_frame``,
  ``frames.payload_frame``, ``frames.with_length_prefix``).

The connection side of the contract (``broker.client.connection``): ``_heard``,
``_reassembly`` (its ``partial`` dict and ``skipping`` set, empty unless fragments are in
progress, and ``sid in`` it), ``_pending``
(request-response futures by stream id), ``_streams``, ``_routes`` (route by request
metadata), and the methods ``_on_payload(stream, data, flags)``, ``_on_request(buf, off,
end, sid, ftype, flags, metadata, data, cached_route)`` and ``_other_frame(buf, off, end,
sid, ftype, flags)``. Only :class:`~broker.frames.FrameError` may escape a reader; nothing
here does I/O.
"""

from __future__ import annotations

from typing import Any

from broker.frames import (
    FLAG_COMPLETE,
    FLAG_FOLLOWS,
    FLAG_METADATA,
    FLAG_NEXT,
    HEADER_LENGTH,
    MAX_REQUEST_N,
    FrameError,
    FrameTooLarge,
    FrameType,
)

__all__ = ["encode_payload", "encode_request", "prefixed", "read_frames", "received", "request_parts"]

_PAYLOAD = int(FrameType.PAYLOAD)
_RR = int(FrameType.REQUEST_RESPONSE)
_FNF = int(FrameType.REQUEST_FNF)
_STREAM = int(FrameType.REQUEST_STREAM)
_CHANNEL = int(FrameType.REQUEST_CHANNEL)
_MAX_PREFIXED = 0xFFFFFF


def _refuse_view(buf: Any, off: int, end: int) -> None:
    """Raise the FrameError for a view that cannot hold a frame header or lies outside ``buf``."""
    if end - off < HEADER_LENGTH:
        raise FrameError(f"frame of {max(0, end - off)} bytes is shorter than the 6-byte frame header")
    raise FrameError(f"frame bounds {off}:{end} lie outside the {len(buf)}-byte buffer")


def read_frames(sink: Any, data: bytes, max_frame: int) -> tuple[int, int]:
    """Call ``sink.frame_received(data, off, end)`` for each complete length-prefixed frame.

    Returns ``(consumed, need)``: where the first incomplete frame begins, and how many bytes
    from there the transport must hold before calling again (the whole frame once its prefix
    is known, else 3). A prefix above ``max_frame`` raises FrameTooLarge and one shorter than
    the header FrameError, after the frames before it were delivered and before any byte of
    it is buffered.
    """
    n = len(data)
    pos = 0
    while n - pos >= 3:
        length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
        if length > max_frame:
            raise FrameTooLarge(f"frame of {length} bytes exceeds the maximum frame size of {max_frame} bytes")
        if length < HEADER_LENGTH:
            raise FrameError(f"frame of {length} bytes is shorter than the 6-byte frame header")
        end = pos + 3 + length
        if end > n:
            return pos, end - pos
        sink.frame_received(data, pos + 3, end)
        pos = end
    return pos, 3


def received(conn: Any, buf: Any, off: int, end: int) -> None:
    """Dispatch the frame at ``buf[off:end]`` (header included) on ``conn``.

    Stops here: a whole PAYLOAD for a pending request-response (its future gets the data, or
    b"" without NEXT), a whole PAYLOAD for a stream (``_on_payload`` with its data, None
    without NEXT) and a whole request (``_on_request``). Everything else — stream 0,
    fragments, ERROR, REQUEST_N, CANCEL, unknown types — goes to ``_other_frame``.
    """
    if off < 0 or end > len(buf) or end - off < HEADER_LENGTH:
        _refuse_view(buf, off, end)
    conn._heard = True
    sid = ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) & 0x7FFFFFFF
    ftype = buf[off + 4] >> 2
    flags = ((buf[off + 4] << 8) | buf[off + 5]) & 0x3FF
    if sid:
        if ftype == _PAYLOAD:
            if not flags & FLAG_FOLLOWS:
                reassembly = conn._reassembly
                if not ((reassembly.partial or reassembly.skipping) and sid in reassembly):
                    future = conn._pending.pop(sid, None)
                    if future is not None:
                        if not future.done():
                            future.set_result(_parts(buf, off, end, _PAYLOAD, flags)[1] if flags & FLAG_NEXT else b"")
                        return
                    stream = conn._streams.get(sid)
                    if stream is not None:
                        conn._on_payload(stream, _parts(buf, off, end, _PAYLOAD, flags)[1] if flags & FLAG_NEXT else None, flags)
                    return
        elif (ftype == _RR or ftype == _STREAM or ftype == _CHANNEL or ftype == _FNF) and not flags & FLAG_FOLLOWS:
            metadata, data = _parts(buf, off, end, ftype, flags)
            conn._on_request(buf, off, end, sid, ftype, flags, metadata, data, conn._routes.get(metadata))
            return
    conn._other_frame(buf, off, end, sid, ftype, flags)


def request_parts(buf: Any, off: int, end: int) -> tuple[bytes, bytes]:
    """``(metadata, data)`` of the request or PAYLOAD frame at ``buf[off:end]``; metadata is
    b"" without the METADATA flag."""
    if off < 0 or end > len(buf) or end - off < HEADER_LENGTH:
        _refuse_view(buf, off, end)
    return _parts(buf, off, end, buf[off + 4] >> 2, ((buf[off + 4] << 8) | buf[off + 5]) & 0x3FF)


def _parts(buf: Any, off: int, end: int, ftype: int, flags: int) -> tuple[bytes, bytes]:
    """:func:`request_parts` of a view known to hold a header; the reference's messages."""
    pos = off + HEADER_LENGTH + 4 if ftype == _STREAM or ftype == _CHANNEL else off + HEADER_LENGTH
    if not flags & FLAG_METADATA:
        if pos > end:
            raise FrameError("metadata length runs past the end of the frame")
        return b"", bytes(buf[pos:end])
    if pos > end:
        raise FrameError(f"frame type {ftype} of {end - off} bytes is too short for its fixed fields")
    if end - pos < 3:
        raise FrameError("frame has the metadata flag but no metadata length")
    mlen = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
    pos += 3
    if pos + mlen > end:
        raise FrameError(f"metadata length {mlen} runs past the end of the frame")
    return bytes(buf[pos : pos + mlen]), bytes(buf[pos + mlen : end])


def _head(sid: int, ftype: int, flags: int) -> bytes:
    sid &= 0x7FFFFFFF
    return bytes((sid >> 24, (sid >> 16) & 0xFF, (sid >> 8) & 0xFF, sid & 0xFF, (ftype << 2) | (flags >> 8), flags & 0xFF))


def encode_request(ftype: int, sid: int, metadata: bytes | None, data: bytes, initial_n: int, complete: bool) -> bytes:
    """A whole REQUEST_* frame (``initial_n`` ≥ 0, for streams and channels only, capped at
    MAX_REQUEST_N); ``frames.request_frame`` without ``follows``."""
    flags = FLAG_COMPLETE if complete else 0
    body = b""
    if ftype == _STREAM or ftype == _CHANNEL:
        body = min(initial_n, MAX_REQUEST_N).to_bytes(4, "big")
    if metadata is not None:
        flags |= FLAG_METADATA
        body += len(metadata).to_bytes(3, "big") + metadata
    return _head(sid, ftype, flags) + body + data


def encode_payload(sid: int, data: bytes, complete: bool) -> bytes:
    """PAYLOAD(NEXT[, COMPLETE]) without metadata; ``frames.payload_frame(sid, data, complete=…)``."""
    return _head(sid, _PAYLOAD, FLAG_NEXT | FLAG_COMPLETE if complete else FLAG_NEXT) + data


def prefixed(frames: list[bytes]) -> bytes:
    """The frames as one TCP write: each behind its 3-byte length (OverflowError past 16 MiB − 1)."""
    parts: list[bytes] = []
    for frame in frames:
        if len(frame) > _MAX_PREFIXED:
            raise OverflowError("int too big to convert")
        parts.append(len(frame).to_bytes(3, "big"))
        parts.append(frame)
    return b"".join(parts)
