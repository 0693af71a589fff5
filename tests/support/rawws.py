"""A raw WebSocket connection for tests of the broker's listener: any frame out, frames back.

Unlike ``RawClient.ws`` (a well-behaved aiohttp client), the test decides every WebSocket
frame here, headers included: pings, fragments, text, a length the payload never follows.
Built on :mod:`broker.websocket`, the codec both ends of the project use.
"""

from __future__ import annotations

import asyncio
import base64
import os

from broker.websocket import OP_CLOSE, accept_key, encode_frame, frame_header, parse_frames
from tests.support.rawclient import DEFAULT_TIMEOUT_S

__all__ = ["RawWebSocket"]


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._buf = b""

    @classmethod
    async def upgrade(cls, address: str, headers: dict[str, str] | None = None) -> tuple[int, "RawWebSocket"]:
        """Send an upgrade request to ``/rsocket``; the HTTP status and the connection."""
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        fields = {"Host": address, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key,
                  "Sec-WebSocket-Version": "13", **(headers or {})}
        writer.write(("GET /rsocket HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v) + "\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEFAULT_TIMEOUT_S)
        status = int(head.split(b" ", 2)[1])
        if status == 101:
            assert accept_key(key).encode() in head, head
        return status, cls(reader, writer)

    def send(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        frame = encode_frame(opcode, payload, masked=True)
        if not fin:
            frame = bytes((frame[0] & 0x7F,)) + frame[1:]
        self.writer.write(frame)

    def send_header_only(self, opcode: int, length: int) -> None:
        """A masked frame's header and key, its payload never sent."""
        self.writer.write(frame_header(opcode, length, masked=True) + b"\0\0\0\0")

    async def recv(self, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[int, bytes]:
        """The next whole frame ``(opcode, payload)``; EOFError when the socket closes first."""
        async with asyncio.timeout(timeout):
            while True:
                frames, used = parse_frames(self._buf, 1 << 25)
                if frames:
                    _, opcode, payload = frames[0]
                    consumed = len(frame_header(opcode, len(payload)))
                    self._buf = self._buf[consumed + len(payload):]
                    return opcode, payload
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError("the broker closed the connection")
                self._buf += data

    async def recv_until_close(self, timeout: float = DEFAULT_TIMEOUT_S) -> list[tuple[int, bytes]]:
        got: list[tuple[int, bytes]] = []
        try:
            while True:
                frame = await self.recv(timeout)
                got.append(frame)
                if frame[0] == OP_CLOSE:
                    return got
        except EOFError:
            return got

    def close(self) -> None:
        self.writer.close()
