"""Payloads larger than one frame: splitting them (FOLLOWS) and putting them back together.

RSocket carries a payload bigger than a frame (16 MiB − 1 on TCP, less if the broker is set
lower) as a request or PAYLOAD frame with the FOLLOWS flag, then PAYLOAD frames with FOLLOWS,
the last one without. Metadata comes first, then data. This module does both directions
with the codec's builders and readers (:mod:`broker.frames`); it never touches a socket.

Reassembly is bounded: a payload growing past ``max_bytes`` is dropped (its remaining
fragments are skipped) and :class:`PayloadTooLarge` tells the connection which stream to
fail, so a peer cannot make this process buffer without limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.client.errors import PayloadTooLarge
from broker.frames import (
    FLAG_COMPLETE,
    FLAG_FOLLOWS,
    FLAG_METADATA,
    FLAG_NEXT,
    HEADER_LENGTH,
    MAX_REQUEST_N,
    FrameError,
    FrameType,
    parse_request_n,
    payload_frame,
    request_data,
    request_frame,
    request_metadata,
)

__all__ = ["Reassembly", "split"]

_PAYLOAD = FrameType.PAYLOAD
_WITH_REQUEST_N = (FrameType.REQUEST_STREAM, FrameType.REQUEST_CHANNEL)


def split(
    ftype: int,
    sid: int,
    metadata: bytes | None,
    data: bytes,
    max_frame: int,
    *,
    initial_n: int = MAX_REQUEST_N,
    next_: bool = True,
    complete: bool = False,
) -> list[bytes]:
    """A request (``ftype`` REQUEST_*) or PAYLOAD as frames of at most ``max_frame`` bytes."""
    frames: list[bytes] = []
    rest_meta = metadata
    rest_data = memoryview(data)
    kind = ftype
    while True:
        budget = max_frame - HEADER_LENGTH - (4 if kind in _WITH_REQUEST_N else 0)
        part_meta = None
        if rest_meta is not None and (rest_meta or kind == ftype):
            take = min(len(rest_meta), budget - 3)
            part_meta, rest_meta = rest_meta[:take], rest_meta[take:]
            budget -= 3 + take
        take = 0 if rest_meta else min(len(rest_data), budget)
        part_data, rest_data = bytes(rest_data[:take]), rest_data[take:]
        follows = bool(rest_meta) or len(rest_data) > 0
        if kind == _PAYLOAD:
            frames.append(payload_frame(sid, part_data, part_meta, next_=next_, complete=complete and not follows, follows=follows))
        else:
            frames.append(
                request_frame(kind, sid, part_meta, part_data, initial_n=initial_n, follows=follows, complete=complete and not follows)
            )
        if not follows:
            return frames
        kind = _PAYLOAD


@dataclass(slots=True)
class _Partial:
    ftype: int
    flags: int
    initial_n: int
    metadata: bytearray | None
    data: bytearray
    size: int = 0


class Reassembly:
    """The fragmented payloads in progress on one connection, by stream id."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        #: payloads in progress, and streams whose payload was dropped (their fragments are
        #: skipped up to the last one); the codec tests both for emptiness on every PAYLOAD
        self.partial: dict[int, _Partial] = {}
        self.skipping: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.partial or self.skipping)

    def __contains__(self, sid: int) -> bool:
        return sid in self.partial or sid in self.skipping

    def drop(self, sid: int) -> None:
        self.partial.pop(sid, None)

    def add(self, buf: bytes, off: int, end: int, sid: int, ftype: int, flags: int) -> bytes | None:
        """Take one fragment; return the whole frame (FOLLOWS cleared) once the last arrived.

        Raises :class:`PayloadTooLarge` (once per payload) when the payload passes
        ``max_bytes``, and FrameError for a fragment of another type in the middle of one.
        """
        if sid in self.skipping:
            if not flags & FLAG_FOLLOWS:
                self.skipping.discard(sid)
            return None
        part = self.partial.get(sid)
        meta = request_metadata(buf, off, end)[0] if flags & FLAG_METADATA else None
        data = request_data(buf, off, end)
        if part is None:
            initial_n = parse_request_n(buf, off, end) if ftype in _WITH_REQUEST_N else 0
            part = self.partial[sid] = _Partial(ftype, flags, initial_n, None, bytearray())
        elif ftype != _PAYLOAD:
            del self.partial[sid]
            raise FrameError(f"stream {sid}: a {FrameType(ftype).name} frame came in the middle of a fragmented payload")
        elif part.ftype == _PAYLOAD:
            part.flags = flags  # NEXT and COMPLETE count on the last fragment
        else:
            part.flags |= flags & FLAG_COMPLETE  # a channel's COMPLETE rides on its last fragment
        if meta is not None:
            if part.metadata is None:
                part.metadata = bytearray()
            part.metadata += meta
        part.data += data
        part.size += len(data) + (len(meta) if meta is not None else 0)
        if part.size > self.max_bytes:
            del self.partial[sid]
            if flags & FLAG_FOLLOWS:
                self.skipping.add(sid)
            raise PayloadTooLarge(f"fragmented payload on stream {sid} exceeds max_payload_bytes={self.max_bytes}")
        if flags & FLAG_FOLLOWS:
            return None
        del self.partial[sid]
        metadata = bytes(part.metadata) if part.metadata is not None else None
        if part.ftype == _PAYLOAD:
            return payload_frame(
                sid, bytes(part.data), metadata, next_=bool(part.flags & FLAG_NEXT), complete=bool(part.flags & FLAG_COMPLETE)
            )
        return request_frame(
            part.ftype, sid, metadata, bytes(part.data), initial_n=part.initial_n, complete=bool(part.flags & FLAG_COMPLETE)
        )
