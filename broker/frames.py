"""RSocket frame codec: the few frames the broker must read, and the few it must write.

The broker is a relay, so this module deliberately does *not* turn every frame into
an object. It offers:

* constants for frame types, flags and error codes (values from the RSocket 1.0 spec);
* ``split_frames`` for the TCP length-prefixed stream (returns offsets, copies nothing);
* ``parse_setup``, ``request_metadata``, ``parse_lease``, ``parse_error`` — readers for the
  frames whose *contents* the broker needs, each raising :class:`FrameError` with a message
  a person can act on when the bytes are malformed;
* builders for the frames the broker originates (ERROR, KEEPALIVE, LEASE, CANCEL,
  METADATA_PUSH, SETUP for broker links, and requests used by tests and tools).

Nothing here does I/O or looks at a clock. Only :class:`FrameError` (and its subclass
:class:`FrameTooLarge`) may escape a parser; Hypothesis tests hold it to that.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "ErrorCode",
    "FrameError",
    "FrameTooLarge",
    "FrameType",
    "Setup",
    "FLAG_IGNORE",
    "FLAG_METADATA",
    "FLAG_FOLLOWS",
    "FLAG_RESUME",
    "FLAG_RESPOND",
    "FLAG_LEASE",
    "FLAG_COMPLETE",
    "FLAG_NEXT",
    "MAX_FRAME_LENGTH",
    "MAX_REQUEST_N",
    "split_frames",
    "parse_setup",
    "request_metadata",
    "request_data",
    "replace_metadata",
    "parse_lease",
    "parse_error",
    "parse_request_n",
    "error_frame",
    "keepalive_frame",
    "lease_frame",
    "cancel_frame",
    "request_n_frame",
    "metadata_push_frame",
    "setup_frame",
    "request_frame",
    "payload_frame",
    "with_length_prefix",
]


class FrameType(IntEnum):
    """Frame type numbers from the RSocket 1.0 spec (6 bits on the wire)."""

    RESERVED = 0x00
    SETUP = 0x01
    LEASE = 0x02
    KEEPALIVE = 0x03
    REQUEST_RESPONSE = 0x04
    REQUEST_FNF = 0x05
    REQUEST_STREAM = 0x06
    REQUEST_CHANNEL = 0x07
    REQUEST_N = 0x08
    CANCEL = 0x09
    PAYLOAD = 0x0A
    ERROR = 0x0B
    METADATA_PUSH = 0x0C
    RESUME = 0x0D
    RESUME_OK = 0x0E
    EXT = 0x3F


class ErrorCode(IntEnum):
    """ERROR frame codes from the RSocket 1.0 spec."""

    INVALID_SETUP = 0x00000001
    UNSUPPORTED_SETUP = 0x00000002
    REJECTED_SETUP = 0x00000003
    REJECTED_RESUME = 0x00000004
    CONNECTION_ERROR = 0x00000101
    CONNECTION_CLOSE = 0x00000102
    APPLICATION_ERROR = 0x00000201
    REJECTED = 0x00000202
    CANCELED = 0x00000203
    INVALID = 0x00000204


# Flag bits within the 10-bit flags field.
FLAG_IGNORE = 0x200
FLAG_METADATA = 0x100
FLAG_FOLLOWS = 0x80  # on requests and PAYLOAD
FLAG_RESUME = 0x80  # on SETUP: resume token present
FLAG_RESPOND = 0x80  # on KEEPALIVE
FLAG_LEASE = 0x40  # on SETUP: lease will be honoured
FLAG_COMPLETE = 0x40  # on PAYLOAD and REQUEST_CHANNEL
FLAG_NEXT = 0x20  # on PAYLOAD

#: The TCP length prefix is 24 bits, so no frame can be longer than this.
MAX_FRAME_LENGTH = 0xFFFFFF
MAX_REQUEST_N = 0x7FFFFFFF
HEADER_LENGTH = 6

_HEADER = struct.Struct(">IH")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")

#: Frame types that open a stream.
REQUEST_TYPES = frozenset(
    (FrameType.REQUEST_RESPONSE, FrameType.REQUEST_FNF, FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL)
)


class FrameError(ValueError):
    """Bytes that are not a valid frame. ``code`` is the ERROR code the peer should get."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.CONNECTION_ERROR) -> None:
        super().__init__(message)
        self.code = code


class FrameTooLarge(FrameError):
    """A length prefix announces a frame larger than the configured maximum."""


# ---------------------------------------------------------------------------------------
# Reading


def split_frames(buf: bytes | bytearray | memoryview, start: int, max_length: int) -> tuple[list[tuple[int, int]], int]:
    """Find the complete length-prefixed frames in ``buf[start:]``.

    Returns ``(frames, consumed)`` where each frame is ``(offset, end)`` of the frame body
    (without its 3-byte prefix) and ``consumed`` is where the first incomplete frame begins.
    Raises FrameTooLarge as soon as a prefix announces more than ``max_length`` bytes, and
    FrameError for a frame shorter than the 6-byte header, so a hostile peer cannot make
    the broker wait for (or buffer) a frame it will never accept.
    """
    frames: list[tuple[int, int]] = []
    pos = start
    total = len(buf)
    while total - pos >= 3:
        length = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
        if length > max_length:
            raise FrameTooLarge(f"frame of {length} bytes exceeds the maximum frame size of {max_length} bytes")
        if length < HEADER_LENGTH:
            raise FrameError(f"frame of {length} bytes is shorter than the 6-byte frame header")
        end = pos + 3 + length
        if end > total:
            break
        frames.append((pos + 3, end))
        pos = end
    return frames, pos


def header(buf: bytes | bytearray | memoryview, off: int = 0) -> tuple[int, int, int]:
    """``(stream_id, frame_type, flags)`` of the frame starting at ``off``."""
    stream_id, type_flags = _HEADER.unpack_from(buf, off)
    return stream_id & 0x7FFFFFFF, type_flags >> 10, type_flags & 0x3FF


def _need_header(off: int, end: int, what: str, code: ErrorCode = ErrorCode.CONNECTION_ERROR) -> None:
    """Refuse a view too short for the 6-byte header before anything unpacks it."""
    if end - off < HEADER_LENGTH:
        raise FrameError(f"{what} of {max(0, end - off)} bytes is shorter than the 6-byte frame header", code)


def _u24(buf: bytes | bytearray | memoryview, off: int) -> int:
    return (buf[off] << 16) | (buf[off + 1] << 8) | buf[off + 2]


@dataclass(frozen=True, slots=True)
class Setup:
    """The parts of a SETUP frame the broker acts on."""

    major: int
    minor: int
    keepalive_ms: int
    max_lifetime_ms: int
    lease: bool
    metadata_mime: str
    data_mime: str
    metadata: bytes
    data: bytes


def _mime(buf: bytes, off: int, end: int, what: str) -> tuple[str, int]:
    if off >= end:
        raise FrameError(f"SETUP ends before its {what} MIME type length", ErrorCode.INVALID_SETUP)
    length = buf[off]
    off += 1
    if off + length > end:
        raise FrameError(f"SETUP {what} MIME type of {length} bytes runs past the end of the frame", ErrorCode.INVALID_SETUP)
    raw = buf[off : off + length]
    try:
        text = bytes(raw).decode("ascii")
    except UnicodeDecodeError:
        raise FrameError(f"SETUP {what} MIME type is not ASCII", ErrorCode.INVALID_SETUP) from None
    if not text:
        raise FrameError(f"SETUP {what} MIME type is empty", ErrorCode.INVALID_SETUP)
    return text, off + length


def parse_setup(buf: bytes, off: int, end: int) -> Setup:
    """Parse a SETUP frame occupying ``buf[off:end]`` (header included).

    Raises FrameError with code INVALID_SETUP for lengths that run past the frame, and
    UNSUPPORTED_SETUP for a resume token (the broker does not offer resumption).
    """
    _need_header(off, end, "SETUP", ErrorCode.INVALID_SETUP)
    _, ftype, flags = header(buf, off)
    if ftype != FrameType.SETUP:
        raise FrameError(f"expected SETUP, got frame type {ftype}", ErrorCode.INVALID_SETUP)
    pos = off + HEADER_LENGTH
    if end - pos < 12:
        raise FrameError("SETUP is shorter than its fixed fields (version, keepalive, lifetime)", ErrorCode.INVALID_SETUP)
    major, minor = _U16.unpack_from(buf, pos)[0], _U16.unpack_from(buf, pos + 2)[0]
    keepalive = _U32.unpack_from(buf, pos + 4)[0]
    lifetime = _U32.unpack_from(buf, pos + 8)[0]
    pos += 12
    if flags & FLAG_RESUME:
        raise FrameError(
            "SETUP asks for resumption (resume token present), which this broker does not support; "
            "reconnect without a resume token",
            ErrorCode.UNSUPPORTED_SETUP,
        )
    metadata_mime, pos = _mime(buf, pos, end, "metadata")
    data_mime, pos = _mime(buf, pos, end, "data")
    metadata = b""
    if flags & FLAG_METADATA:
        if end - pos < 3:
            raise FrameError("SETUP has the metadata flag but no metadata length", ErrorCode.INVALID_SETUP)
        mlen = _u24(buf, pos)
        pos += 3
        if pos + mlen > end:
            raise FrameError(f"SETUP metadata length {mlen} runs past the end of the frame", ErrorCode.INVALID_SETUP)
        metadata = bytes(buf[pos : pos + mlen])
        pos += mlen
    return Setup(
        major=major,
        minor=minor,
        keepalive_ms=keepalive & 0x7FFFFFFF,
        max_lifetime_ms=lifetime & 0x7FFFFFFF,
        lease=bool(flags & FLAG_LEASE),
        metadata_mime=metadata_mime,
        data_mime=data_mime,
        metadata=metadata,
        data=bytes(buf[pos:end]),
    )


def _payload_start(ftype: int, off: int) -> int:
    """Offset of the optional metadata length in a request/payload frame starting at ``off``."""
    if ftype == FrameType.REQUEST_STREAM or ftype == FrameType.REQUEST_CHANNEL:
        return off + HEADER_LENGTH + 4  # initial request N
    return off + HEADER_LENGTH


def request_metadata(buf: bytes | memoryview, off: int, end: int) -> tuple[bytes, bool]:
    """Metadata of a request, PAYLOAD or METADATA_PUSH frame at ``buf[off:end]``.

    Returns ``(metadata, has_data)``; ``has_data`` tells whether payload data follows the
    metadata in this frame, which for a fragmented request means the metadata is complete.
    """
    _need_header(off, end, "frame")
    _, ftype, flags = header(buf, off)
    if ftype == FrameType.METADATA_PUSH:
        return bytes(buf[off + HEADER_LENGTH : end]), False
    pos = _payload_start(ftype, off)
    if pos > end:
        raise FrameError(f"frame type {ftype} of {end - off} bytes is too short for its fixed fields")
    if not flags & FLAG_METADATA:
        return b"", pos < end
    if end - pos < 3:
        raise FrameError("frame has the metadata flag but no metadata length")
    mlen = _u24(buf, pos)
    pos += 3
    if pos + mlen > end:
        raise FrameError(f"metadata length {mlen} runs past the end of the frame")
    return bytes(buf[pos : pos + mlen]), pos + mlen < end


def request_data(buf: bytes | memoryview, off: int, end: int) -> bytes:
    """Payload data of a request or PAYLOAD frame (used by tools and tests, not the relay)."""
    _need_header(off, end, "frame")
    _, ftype, flags = header(buf, off)
    pos = _payload_start(ftype, off)
    if flags & FLAG_METADATA:
        if end - pos < 3:
            raise FrameError("frame has the metadata flag but no metadata length")
        pos += 3 + _u24(buf, pos)
    if pos > end:
        raise FrameError("metadata length runs past the end of the frame")
    return bytes(buf[pos:end])


def replace_metadata(buf: bytes | memoryview, off: int, end: int, metadata: bytes) -> bytes:
    """The request frame at ``buf[off:end]`` with its metadata replaced by ``metadata``.

    Stream id, type, flags (follows, complete), initial N and data are kept. The relay uses
    it to re-encode a request's metadata for a peer that reads another metadata MIME type.
    """
    _need_header(off, end, "frame")
    sid, ftype, flags = header(buf, off)
    if ftype not in REQUEST_TYPES:
        raise FrameError(f"frame type {ftype} is not a request")
    initial_n = parse_request_n(buf, off, end) if ftype in (FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL) else 0
    return request_frame(
        ftype,
        sid,
        metadata,
        request_data(buf, off, end),
        initial_n=initial_n,
        follows=bool(flags & FLAG_FOLLOWS),
        complete=bool(flags & FLAG_COMPLETE),
    )


def parse_request_n(buf: bytes | memoryview, off: int, end: int) -> int:
    """The N of a REQUEST_N frame, or the initial N of REQUEST_STREAM/REQUEST_CHANNEL."""
    if end - off < HEADER_LENGTH + 4:
        raise FrameError("frame is too short to hold its request N")
    return _U32.unpack_from(buf, off + HEADER_LENGTH)[0] & 0x7FFFFFFF


def parse_lease(buf: bytes | memoryview, off: int, end: int) -> tuple[int, int]:
    """``(ttl_ms, number_of_requests)`` of a LEASE frame."""
    if end - off < HEADER_LENGTH + 8:
        raise FrameError("LEASE frame is shorter than its TTL and request count")
    ttl = _U32.unpack_from(buf, off + HEADER_LENGTH)[0] & 0x7FFFFFFF
    count = _U32.unpack_from(buf, off + HEADER_LENGTH + 4)[0] & 0x7FFFFFFF
    return ttl, count


def parse_error(buf: bytes | memoryview, off: int, end: int) -> tuple[int, str]:
    """``(code, message)`` of an ERROR frame."""
    if end - off < HEADER_LENGTH + 4:
        raise FrameError("ERROR frame is shorter than its error code")
    code = _U32.unpack_from(buf, off + HEADER_LENGTH)[0]
    return code, bytes(buf[off + HEADER_LENGTH + 4 : end]).decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------
# Writing (frames are returned without the TCP length prefix)


def _head(stream_id: int, ftype: int, flags: int) -> bytes:
    return _HEADER.pack(stream_id & 0x7FFFFFFF, (ftype << 10) | (flags & 0x3FF))


def _u24b(n: int) -> bytes:
    return n.to_bytes(3, "big")


def with_length_prefix(frame: bytes) -> bytes:
    """The TCP form of ``frame``: a 3-byte big-endian length then the frame."""
    return _u24b(len(frame)) + frame


def error_frame(stream_id: int, code: int, message: str) -> bytes:
    return _head(stream_id, FrameType.ERROR, 0) + _U32.pack(code) + message.encode("utf-8")


def keepalive_frame(respond: bool, data: bytes = b"", last_position: int = 0) -> bytes:
    return _head(0, FrameType.KEEPALIVE, FLAG_RESPOND if respond else 0) + last_position.to_bytes(8, "big") + data


def lease_frame(ttl_ms: int, count: int) -> bytes:
    return _head(0, FrameType.LEASE, 0) + _U32.pack(ttl_ms & 0x7FFFFFFF) + _U32.pack(count & 0x7FFFFFFF)


def cancel_frame(stream_id: int) -> bytes:
    return _head(stream_id, FrameType.CANCEL, 0)


def request_n_frame(stream_id: int, n: int) -> bytes:
    return _head(stream_id, FrameType.REQUEST_N, 0) + _U32.pack(min(n, MAX_REQUEST_N))


def metadata_push_frame(metadata: bytes) -> bytes:
    return _head(0, FrameType.METADATA_PUSH, FLAG_METADATA) + metadata


def _payload_body(metadata: bytes | None, data: bytes) -> tuple[int, bytes]:
    if metadata is None:
        return 0, data
    return FLAG_METADATA, _u24b(len(metadata)) + metadata + data


def setup_frame(
    *,
    keepalive_ms: int = 20_000,
    max_lifetime_ms: int = 90_000,
    metadata_mime: str = "message/x.rsocket.composite-metadata.v0",
    data_mime: str = "application/octet-stream",
    metadata: bytes | None = None,
    data: bytes = b"",
    lease: bool = False,
    version: tuple[int, int] = (1, 0),
) -> bytes:
    flags, body = _payload_body(metadata, data)
    if lease:
        flags |= FLAG_LEASE
    mm, dm = metadata_mime.encode("ascii"), data_mime.encode("ascii")
    return (
        _head(0, FrameType.SETUP, flags)
        + _U16.pack(version[0])
        + _U16.pack(version[1])
        + _U32.pack(keepalive_ms)
        + _U32.pack(max_lifetime_ms)
        + bytes((len(mm),))
        + mm
        + bytes((len(dm),))
        + dm
        + body
    )


def request_frame(
    ftype: int,
    stream_id: int,
    metadata: bytes | None,
    data: bytes,
    *,
    initial_n: int = MAX_REQUEST_N,
    follows: bool = False,
    complete: bool = False,
) -> bytes:
    """A REQUEST_* frame; ``initial_n`` applies to streams and channels only."""
    flags, body = _payload_body(metadata, data)
    if follows:
        flags |= FLAG_FOLLOWS
    if complete:
        flags |= FLAG_COMPLETE
    if ftype in (FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL):
        body = _U32.pack(min(initial_n, MAX_REQUEST_N)) + body
    return _head(stream_id, ftype, flags) + body


def payload_frame(
    stream_id: int,
    data: bytes,
    metadata: bytes | None = None,
    *,
    next_: bool = True,
    complete: bool = False,
    follows: bool = False,
) -> bytes:
    flags, body = _payload_body(metadata, data)
    flags |= (FLAG_NEXT if next_ else 0) | (FLAG_COMPLETE if complete else 0) | (FLAG_FOLLOWS if follows else 0)
    return _head(stream_id, FrameType.PAYLOAD, flags) + body
