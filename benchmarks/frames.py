"""RSocket frames as the load generator and the responder need them, and nothing more.

Rules of this module: frames are built once, as bytes, and re-stamped with a stream id on the
hot path; parsing reads the 6-byte header in place (``struct.unpack_from`` on the receive
buffer) and never builds a frame object. Layout (RSocket protocol 1.0): a TCP frame is a
3-byte big-endian length followed by the frame; the frame header is a 4-byte stream id (top
bit 0) and 16 bits holding the 6-bit frame type and 10 bits of flags. WebSocket carries one
frame per binary message without the length prefix.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import cast

# Frame types (protocol 1.0, section "Frame Types").
SETUP = 0x01
KEEPALIVE = 0x03
REQUEST_RESPONSE = 0x04
REQUEST_FNF = 0x05
REQUEST_STREAM = 0x06
REQUEST_CHANNEL = 0x07
REQUEST_N = 0x08
CANCEL = 0x09
PAYLOAD = 0x0A
ERROR = 0x0B

# Flags (the low 10 bits of the type/flags field).
FLAG_METADATA = 0x100
FLAG_RESPOND = 0x80  # KEEPALIVE only
FLAG_COMPLETE = 0x40
FLAG_NEXT = 0x20

# Error codes.
ERROR_APPLICATION = 0x201
ERROR_REJECTED = 0x202

MIME_COMPOSITE = b"message/x.rsocket.composite-metadata.v0"
MIME_OCTET_STREAM = b"application/octet-stream"
MIME_REGISTER = b"message/x.rsbroker.register.v0"
#: well-known mime id of message/x.rsocket.routing.v0 in composite metadata.
MIME_ID_ROUTING = 0x7E

#: the service every benchmark provider registers and every requester routes to.
SERVICE = "bench.responder"
ROUTE = SERVICE + ".echo"

#: stream id and type/flags, the whole header.
HEADER = struct.Struct(">IH")
_U32 = struct.Struct(">I")
_MAX_FRAME = (1 << 24) - 1


def tcp(frame: bytes) -> bytes:
    """Prefix a frame with its 3-byte length, as TCP carries it."""
    if len(frame) > _MAX_FRAME:
        raise ValueError(f"frame of {len(frame)} bytes does not fit a 24-bit length")
    return len(frame).to_bytes(3, "big") + frame


def header(stream_id: int, frame_type: int, flags: int) -> bytes:
    """The 6-byte frame header."""
    return HEADER.pack(stream_id, (frame_type << 10) | flags)


def _metadata_and_data(metadata: bytes | None, data: bytes) -> bytes:
    if metadata is None:
        return data
    return len(metadata).to_bytes(3, "big") + metadata + data


def setup(keepalive_ms: int, lifetime_ms: int, metadata: bytes | None = None) -> bytes:
    """A SETUP frame for protocol 1.0: composite metadata, octet-stream data, no lease, no resume."""
    flags = FLAG_METADATA if metadata is not None else 0
    body = struct.pack(">HHII", 1, 0, keepalive_ms, lifetime_ms)
    body += bytes([len(MIME_COMPOSITE)]) + MIME_COMPOSITE
    body += bytes([len(MIME_OCTET_STREAM)]) + MIME_OCTET_STREAM
    return header(0, SETUP, flags) + body + _metadata_and_data(metadata, b"")


def composite_entry(mime: bytes | int, content: bytes) -> bytes:
    """One composite-metadata entry; an int mime is a well-known id, bytes a custom mime type."""
    if isinstance(mime, int):
        head = bytes([0x80 | mime])
    else:
        head = bytes([len(mime) - 1]) + mime
    return head + len(content).to_bytes(3, "big") + content


def routing_metadata(route: str = ROUTE) -> bytes:
    """Composite metadata holding one routing tag."""
    tag = route.encode()
    return composite_entry(MIME_ID_ROUTING, bytes([len(tag)]) + tag)


#: W3C trace context entry of broker.tracing; its span id is a placeholder the generator rewrites
MIME_TRACE = b"message/x.rsbroker.trace-context.v0"
SPAN_PLACEHOLDER = b"0123456789abcdef"


def trace_metadata() -> bytes:
    """A trace entry (traceparent with :data:`SPAN_PLACEHOLDER` as the parent span id)."""
    return composite_entry(MIME_TRACE, b"00-4bf92f3577b34da6a3ce929d0e0e4736-" + SPAN_PLACEHOLDER + b"-01")


def register_metadata(instance: str, services: tuple[str, ...] = (SERVICE,), tags: dict[str, str] | None = None) -> bytes:
    """Composite metadata announcing a provider, per the broker's registration contract."""
    entry = {"services": list(services), "instance": instance, "weight": 1, "tags": tags or {}}
    return composite_entry(MIME_REGISTER, json.dumps(entry).encode())


def request_body(frame_type: int, data: bytes, metadata: bytes | None, initial_n: int = 0) -> bytes:
    """A request frame without its stream id: stamp 4 id bytes in front to send it."""
    flags = FLAG_METADATA if metadata is not None else 0
    body = ((frame_type << 10) | flags).to_bytes(2, "big")
    if frame_type == REQUEST_STREAM:
        body += _U32.pack(initial_n)
    return body + _metadata_and_data(metadata, data)


def request_n(stream_id: int, n: int) -> bytes:
    return header(stream_id, REQUEST_N, 0) + _U32.pack(n)


def cancel(stream_id: int) -> bytes:
    return header(stream_id, CANCEL, 0)


def error(stream_id: int, code: int, message: str) -> bytes:
    return header(stream_id, ERROR, 0) + _U32.pack(code) + message.encode()


def keepalive(respond: bool, data: bytes = b"") -> bytes:
    """KEEPALIVE with last-received position 0 (no resumption)."""
    return header(0, KEEPALIVE, FLAG_RESPOND if respond else 0) + bytes(8) + data


def data_offset(buf: bytes | bytearray, start: int, flags: int, fixed: int = 0) -> int:
    """Where the data of a frame starting at ``start`` begins, past ``fixed`` type-specific bytes and metadata."""
    offset = start + 6 + fixed
    if flags & FLAG_METADATA:
        offset += 3 + ((buf[offset] << 16) | (buf[offset + 1] << 8) | buf[offset + 2])
    return offset


class FrameProtocol(asyncio.Protocol):
    """A TCP connection that splits the byte stream into frames and batches what it writes.

    Subclasses implement :meth:`frame_received` and append replies to ``self.out``; whatever is
    there when a read has been handled goes out in one ``write`` call. KEEPALIVE frames that ask
    for an answer are answered here, and the connection sends its own keepalives, so a broker
    that enforces keepalive never drops a benchmark connection.
    """

    keepalive_ms = 20_000
    lifetime_ms = 120_000

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.out = bytearray()
        self.now = 0.0
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._keepalive: asyncio.TimerHandle | None = None
        self._write_ok = asyncio.Event()
        self._write_ok.set()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=1 << 20)
        self._schedule_keepalive()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        self._write_ok.set()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._write_ok.clear()

    def resume_writing(self) -> None:
        self._write_ok.set()

    def data_received(self, data: bytes) -> None:
        self.now = time.perf_counter()
        buf = self._buf
        buf += data
        size = len(buf)
        offset = 0
        while size - offset >= 3:
            end = offset + 3 + ((buf[offset] << 16) | (buf[offset + 1] << 8) | buf[offset + 2])
            if end > size:
                break
            self.frame_received(buf, offset + 3, end)
            offset = end
        if offset:
            del buf[:offset]
        self.flush()

    # for subclasses
    def frame_received(self, buf: bytearray, start: int, end: int) -> None:
        """Handle the frame ``buf[start:end]`` (header included, length prefix excluded)."""
        raise NotImplementedError

    def connection_frame(self, frame_type: int, flags: int, buf: bytearray, start: int, end: int) -> None:
        """Stream-0 frames: answer keepalives, close on a connection ERROR."""
        if frame_type == KEEPALIVE and flags & FLAG_RESPOND:
            self.out += tcp(keepalive(False, bytes(buf[start + 14 : end])))
        elif frame_type == ERROR and self.transport is not None:
            self.transport.close()

    @property
    def is_open(self) -> bool:
        """Connected and not closing: writes still go somewhere."""
        return self.transport is not None and not self.transport.is_closing()

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes(self.out))
        self.out.clear()

    async def writable(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        await self._write_ok.wait()

    def _schedule_keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        self._keepalive = loop.call_later(self.keepalive_ms / 1000, self._send_keepalive)

    def _send_keepalive(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(tcp(keepalive(True)))
            self._schedule_keepalive()
