"""RSocket over WebSocket on a bare asyncio protocol: one binary message per frame.

Why not aiohttp's client: it costs an ``aiohttp.ClientSession`` (connector, cookie jar,
timers), a reader task and a writer task per connection — tens of KiB and two tasks for a
device that sends a keepalive every few seconds. A fleet simulator runs thousands of
devices per process, so the client side is this protocol object and nothing else: the
HTTP upgrade (RFC 6455 §4.1) is written and checked here, then frames are parsed from
``data_received`` with :mod:`broker.websocket` (the codec the broker's listener uses) and
written synchronously, masked as a client must (§5.3).

Rules this module keeps:
* Only what RSocket needs: binary messages (fragmented ones are reassembled), ping → pong,
  close → close. A text message is a protocol error of the peer: the connection ends.
* A message larger than ``max_frame`` ends the connection before it is buffered.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl as ssl_module
from typing import Any

from broker.websocket import (
    OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, WebSocketError, accept_key, encode_frame, parse_frames,
)  # fmt: skip

__all__ = ["WebSocketProtocol", "open_websocket"]

#: the upgrade answer's headers may not grow past this (a server that never ends them)
_MAX_HANDSHAKE_BYTES = 16 * 1024


class WebSocketProtocol(asyncio.Protocol):
    """A client WebSocket delivering each binary message to the sink as one RSocket frame.

    The sink is a :class:`broker.client.transport.FrameSink`; this object is its
    :class:`~broker.client.transport.FrameTransport`.
    """

    def __init__(self, sink: Any, host: str, path: str, max_frame: int, headers: dict[str, str] | None) -> None:
        self.sink = sink
        self.max_frame = max_frame
        self.transport: asyncio.Transport | None = None
        self.peer = f"ws://{host}{path}"
        self._key = base64.b64encode(os.urandom(16))
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {self._key.decode()}", "Sec-WebSocket-Version: 13"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._buf = b""
        self._message = bytearray()  # a fragmented message being reassembled
        self._upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Nagle is off already: asyncio and uvloop set TCP_NODELAY on every TCP connection
        self.transport = transport  # type: ignore[assignment]
        transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if not self._upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HANDSHAKE_BYTES:
                    self._fail_upgrade("the upgrade answer's headers are too long")
                else:
                    self._buf = buf
                return
            self._check_upgrade(buf[:end])
            if self._upgraded.done() and self._upgraded.exception() is None:
                buf = buf[end + 4 :]
            else:
                return
        try:
            self._buf = self._parse(buf)
        except WebSocketError as exc:
            self._lose(str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._upgraded.done():  # open_websocket raises it; no connection was handed out
            self._upgraded.set_exception(ConnectionError(f"{self.peer} closed during the upgrade" + (f": {exc}" if exc else "")))
            self._lost = True
            return
        self._lose(f"WebSocket to {self.peer} closed" + (f": {exc}" if exc else ""))

    def pause_writing(self) -> None:
        self.sink.writing_paused()

    def resume_writing(self) -> None:
        self.sink.writing_resumed()

    # -- handshake ---------------------------------------------------------------------------

    def _check_upgrade(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            self._fail_upgrade(f"upgrade refused: {lines[0]}")
            return
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if fields.get("sec-websocket-accept") != accept_key(self._key):
            self._fail_upgrade("the upgrade answer's Sec-WebSocket-Accept does not match the key")
            return
        self._upgraded.set_result(None)

    def _fail_upgrade(self, reason: str) -> None:
        if not self._upgraded.done():
            self._upgraded.set_exception(WebSocketError(f"{self.peer}: {reason}"))
        if self.transport is not None:
            self.transport.close()

    async def wait_upgraded(self) -> None:
        await self._upgraded

    # -- framing ------------------------------------------------------------------------------

    def _parse(self, buf: bytes) -> bytes:
        """Handle every whole frame of ``buf``; return the incomplete rest."""
        try:
            frames, used = parse_frames(buf, self.max_frame - len(self._message))
        except WebSocketError as exc:
            raise WebSocketError(f"{self.peer}: {exc}" + (f" is over the frame limit of {self.max_frame}" if exc.size else "")) from None
        for fin, opcode, payload in frames:
            self._on_frame(fin, opcode, payload)
            if self._lost:
                return b""
        return buf[used:] if used else buf

    def _on_frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == OP_BINARY or opcode == OP_CONT:
            if fin and not self._message:
                self.sink.frame_received(payload, 0, len(payload))
                return
            self._message += payload
            if fin:
                whole, self._message = bytes(self._message), bytearray()
                self.sink.frame_received(whole, 0, len(whole))
        elif opcode == OP_PING:
            self._write(encode_frame(OP_PONG, payload, masked=True))
        elif opcode == OP_CLOSE:
            self._write(encode_frame(OP_CLOSE, payload[:2], masked=True))
            self._lose(f"WebSocket to {self.peer} closed by the server")
        elif opcode == OP_TEXT:
            raise WebSocketError(f"text message from {self.peer}: RSocket frames come in binary messages")

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _lose(self, reason: str) -> None:
        if self._lost:
            return
        self._lost = True
        if self.transport is not None:
            self.transport.close()
        self.sink.transport_lost(reason)

    # -- FrameTransport ----------------------------------------------------------------------

    def write_frames(self, frames: list[bytes]) -> None:
        if len(frames) == 1:
            self._write(encode_frame(OP_BINARY, frames[0], masked=True))
        else:
            self._write(b"".join(encode_frame(OP_BINARY, frame, masked=True) for frame in frames))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(OP_CLOSE, (1000).to_bytes(2, "big"), masked=True))
            self.transport.close()


async def open_websocket(
    sink: Any, host: str, port: int, path: str, *, ssl: ssl_module.SSLContext | None, max_frame: int,
    headers: dict[str, str] | None = None,
) -> WebSocketProtocol:
    """Connect and upgrade; raises OSError / ConnectionError when either fails."""
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: WebSocketProtocol(sink, hostport, path, max_frame, headers), host, port, ssl=ssl,
        server_hostname=host if ssl is not None else None,
    )
    try:
        await protocol.wait_upgraded()
    except BaseException:
        if protocol.transport is not None:
            protocol.transport.abort()
        raise
    return protocol
