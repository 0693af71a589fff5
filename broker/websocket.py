"""RFC 6455 framing, sans-IO: the opening handshake's key, frame headers, masking, parsing.

Both ends of the project's WebSocket use it: the broker's listener (``broker.transports``)
after the upgrade and the client (``broker.client.websocket``). No socket in sight: bytes
in, ``(fin, opcode, payload)`` out; payload in, frame bytes out.

Rules: a frame whose declared length passes the caller's limit raises :class:`WebSocketError`
before its payload is buffered; control frames (close, ping, pong) are at most 125 bytes
and never fragmented (§5.5); reserved bits must be zero (no extension is negotiated).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from typing import Mapping

__all__ = ["OP_BINARY", "OP_CLOSE", "OP_CONT", "OP_PING", "OP_PONG", "OP_TEXT", "MAX_REQUEST_HEAD", "UpgradeRequest",
           "WebSocketError", "accept_key", "encode_frame", "frame_header", "mask", "parse_frames", "parse_upgrade_request",
           "upgrade_refusal", "upgrade_response"]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WebSocketError(ConnectionError):
    """The peer broke the WebSocket protocol; ``size`` is set when the error is a too-large frame."""

    def __init__(self, message: str, size: int = 0) -> None:
        super().__init__(message)
        self.size = size


def accept_key(key: str | bytes) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (§4.2.2)."""
    raw = key.encode() if isinstance(key, str) else key
    return base64.b64encode(hashlib.sha1(raw.strip() + _GUID).digest()).decode()


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (§5.3), as one big-integer XOR."""
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def frame_header(opcode: int, length: int, masked: bool = False) -> bytes:
    """The header of one final frame of ``length`` payload bytes (mask key not included)."""
    bit = 0x80 if masked else 0
    if length < 126:
        return bytes((0x80 | opcode, bit | length))
    if length < 65536:
        return bytes((0x80 | opcode, bit | 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, bit | 127)) + length.to_bytes(8, "big")


def encode_frame(opcode: int, payload: bytes, masked: bool = False) -> bytes:
    """One final frame; a client's (``masked``) with a fresh random key."""
    if not masked:
        return frame_header(opcode, len(payload)) + payload
    key = os.urandom(4)
    return frame_header(opcode, len(payload), True) + key + mask(payload, key)


def parse_frames(buf: bytes, limit: int) -> tuple[list[tuple[int, int, bytes]], int]:
    """Every whole frame at the start of ``buf`` as ``(fin, opcode, payload)`` (unmasked), and
    how many bytes they took. Raises :class:`WebSocketError` for a frame longer than ``limit``
    (as soon as its header is in) or one that breaks §5.2 / §5.5."""
    frames: list[tuple[int, int, bytes]] = []
    pos, n = 0, len(buf)
    while n - pos >= 2:
        b0, b1 = buf[pos], buf[pos + 1]
        if b0 & 0x70:
            raise WebSocketError("frame with reserved bits set (no extension was negotiated)")
        opcode = b0 & 0x0F
        length, head = b1 & 0x7F, 2
        if length == 126:
            if n - pos < 4:
                break
            length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            if n - pos < 10:
                break
            length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
        if opcode >= 0x8 and (length > 125 or not b0 & 0x80):
            raise WebSocketError("control frame longer than 125 bytes or fragmented")
        if length > limit:
            raise WebSocketError(f"message of {length} bytes", size=length)
        key = b""
        if b1 & 0x80:
            if n - pos < head + 4:
                break
            key = buf[pos + head : pos + head + 4]
            head += 4
        end = pos + head + length
        if end > n:
            break
        payload = buf[pos + head : end]
        frames.append((b0 & 0x80, opcode, mask(payload, key) if key else payload))
        pos = end
    return frames, pos


#: the longest request head :func:`parse_upgrade_request` reads (aiohttp's line limit)
MAX_REQUEST_HEAD = 8190


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """An HTTP/1.1 GET request head: its path (query cut off) and headers (names lowercased,
    the first of repeated ones kept, as aiohttp's ``headers.get`` answers)."""

    path: str
    headers: dict[str, str]


def parse_upgrade_request(head: bytes) -> UpgradeRequest | None:
    """The request head ``head`` (up to, not including, the blank line) if it is a plain
    ``GET ... HTTP/1.1`` without a body; None for anything else (the caller hands such
    requests to a full HTTP server, which answers them or says what is wrong)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or parts[2] != b"HTTP/1.1" or not parts[1].startswith(b"/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name:
            return None  # folded or malformed: the full server's to refuse
        key = name.decode("latin-1").lower()
        if key not in headers:
            headers[key] = value.strip().decode("latin-1")
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        return None
    return UpgradeRequest(parts[1].partition(b"?")[0].decode("latin-1"), headers)


def upgrade_refusal(headers: Mapping[str, str]) -> str:
    """Why a request with ``headers`` (looked up by lowercase name) is not a WebSocket
    upgrade a server takes (RFC 6455 §4.2.1), or ''."""
    if headers.get("upgrade", "").lower() != "websocket":
        return "this endpoint speaks RSocket over WebSocket: send an upgrade request (Upgrade: websocket)"
    if "upgrade" not in headers.get("connection", "").lower():
        return "the upgrade request's Connection header must include 'upgrade'"
    if headers.get("sec-websocket-version") != "13":
        return "Sec-WebSocket-Version must be 13"
    try:
        key_ok = len(base64.b64decode(headers.get("sec-websocket-key", ""), validate=True)) == 16
    except (ValueError, binascii.Error):
        key_ok = False
    if not key_ok:
        return "Sec-WebSocket-Key must be 16 bytes in base64"
    return ""


def upgrade_response(key: str) -> bytes:
    """The server's 101 answer to an upgrade request carrying ``Sec-WebSocket-Key: key``."""
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n")
