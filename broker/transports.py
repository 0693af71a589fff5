"""Transport shells: TCP (length-prefixed frames) and WebSocket (one frame per message).

Each shell turns bytes from its socket into frames for the relay (``Session.handle_frame``, or
for TCP ``broker.hotpath.read_frames``, which splits and relays a whole read) and turns the
session's queued output into socket writes. All relay logic stays in ``broker.session`` and
``broker.hotpath``.

TCP reads are processed in place: complete frames are handed over as offsets into the
received ``bytes`` object; only a frame split across reads is buffered, and the buffer is
not re-scanned until enough bytes for that frame have arrived (so a 16 MiB frame arriving
in 64 KiB pieces costs one copy, not hundreds).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from aiohttp import web

from broker.auth.tls import peer_principal
from broker.frames import HEADER_LENGTH, ErrorCode
from broker.gateway import Gateway
from broker.hotpath import forward, read_frames
from broker.origins import NodeNames, OriginPolicy
from broker.relay import Broker
from broker.session import Session, State
from broker.websocket import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, WebSocketError, accept_key, frame_header, parse_frames

log = logging.getLogger("rsbroker.transport")

#: A connection the broker closes gets this long to take its last frames (the ERROR saying
#: why, say) before it is aborted. A graceful close waits for queued output to reach the
#: peer, and a peer that stopped reading would otherwise hold the connection open forever,
#: and with it every stream it took part in and every provider paused on its account.
CLOSE_GRACE_S = 5.0


class TcpSession(Session, asyncio.Protocol):
    """A client connected over TCP (optionally TLS)."""

    __slots__ = ("transport", "_buf", "_need", "_queued")

    plain_name = "tcp"
    #: the name when the socket is TLS
    tls_name = "tls"

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker, None)
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = 0
        self.wire_out: bytearray = bytearray()
        self._queued = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        self.peer = transport.get_extra_info("peername")
        if transport.get_extra_info("sslcontext") is not None:
            self.transport_name = self.tls_name
            self.tls_principal = peer_principal(transport)
        high = self.broker.settings.max_pending_bytes
        transport.set_write_buffer_limits(high=high, low=high // 4)  # type: ignore[attr-defined]
        refusal = self.broker.admit(self.peer)
        self.broker.add_session(self)
        if refusal:
            self.fail(ErrorCode.REJECTED_SETUP, refusal)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_recv = self.broker.clock()
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return
            data = bytes(self._buf)
            self._buf = bytearray()
        pos, self._need = read_frames(self, data)
        if pos < len(data) and not self.closing:
            self._buf = bytearray(memoryview(data)[pos:])

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.close_reason:
            self.close_reason = str(exc) or type(exc).__name__
        self.connection_closed()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.on_write_resumed()

    # -- Session hooks ----------------------------------------------------------------------

    def forward(self, sid: bytes, buf: Any, off: int, end: int) -> None:
        forward(self, sid, buf, off, end)

    def send_frame(self, frame: bytes) -> None:
        if self.state is State.CLOSED:
            return
        self.wire_out += len(frame).to_bytes(3, "big")
        self.wire_out += frame
        self.frames_out += 1
        if not self._queued:
            self._queued = True
            self.broker.mark_dirty(self)

    def flush(self) -> None:
        self._queued = False
        if self.wire_out and self.transport is not None and not self.transport.is_closing():
            data, self.wire_out = self.wire_out, bytearray()
            self.transport.write(data)

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.flush()
            self.transport.close()
            self.broker.loop.call_later(CLOSE_GRACE_S, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.state is not State.CLOSED and self.transport is not None:
            log.info("connection %s did not take its last frames within %g s: aborted", self.id, CLOSE_GRACE_S)
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class WsSession(TcpSession):
    """A client connected over WebSocket: one RSocket frame per binary message.

    aiohttp answers the HTTP side (routing, the Origin check, refusals); once a request is
    a valid upgrade, :func:`websocket_app` writes the 101 itself and moves the socket to
    this protocol, so an established connection costs what a TCP one does (issue 13: an
    aiohttp request handler, request, WebSocketResponse, reader, writer and task per idle
    device were most of its 18 KiB). Frames are parsed with :mod:`broker.websocket`; a
    message longer than the frame limit is refused when its header arrives, unbuffered.
    """

    __slots__ = ("_out", "_message")

    plain_name = "ws"
    tls_name = "wss"

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        # No length-prefixed coalescing: the hot path hands every relayed frame to
        # :meth:`forward`, which frames it as one WebSocket message into ``_out``.
        self.wire_out = None  # type: ignore[assignment]  # Session.wire_out: None means 'through forward'
        self._out = bytearray()
        #: a message arriving in several WebSocket frames (continuations), rarely used
        self._message: bytearray | None = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_recv = self.broker.clock()
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return
            data = bytes(self._buf)
            self._buf = bytearray()
        try:
            frames, used = parse_frames(data, self.frame_limit)
        except WebSocketError as exc:
            if exc.size:
                self.refuse_oversized(exc.size)
            else:
                self.fail(ErrorCode.CONNECTION_ERROR, f"WebSocket protocol error: {exc}")
            return
        for fin, opcode, payload in frames:
            if opcode == OP_BINARY or opcode == OP_CONT:
                self._on_message_part(fin, opcode, payload)
            elif opcode == OP_PING:
                self._write_ws(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.close_reason = self.close_reason or "closed by the client"
                self.close()
            elif opcode == OP_TEXT:
                self.fail(ErrorCode.CONNECTION_ERROR, "text messages are not RSocket frames: send binary messages")
            if self.closing:
                return
        self._need = 0
        if used < len(data):
            self._buf = bytearray(memoryview(data)[used:])
            self._need = len(self._buf) + 1  # at least one more byte before parsing again

    def _on_message_part(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == OP_BINARY and fin and self._message is None:
            self._handle_message(payload)
            return
        if (opcode == OP_BINARY) == (self._message is not None):
            self.fail(ErrorCode.CONNECTION_ERROR, "WebSocket protocol error: continuation frame out of place")
            return
        message = self._message = (self._message or bytearray()) + payload
        if len(message) > self.frame_limit:
            self.refuse_oversized(len(message))
        elif fin:
            self._message = None
            self._handle_message(bytes(message))

    def _handle_message(self, data: bytes) -> None:
        if len(data) < HEADER_LENGTH:
            self.fail(ErrorCode.CONNECTION_ERROR, f"frame of {len(data)} bytes is shorter than the 6-byte header")
        else:
            self.handle_frame(data, 0, len(data))

    # -- Session hooks ----------------------------------------------------------------------

    def forward(self, sid: bytes, buf: Any, off: int, end: int) -> None:
        out = self._out
        out += frame_header(OP_BINARY, end - off)
        out += sid
        out += memoryview(buf)[off + 4 : end]
        self.frames_out += 1
        if not self._queued:
            self._queued = True
            self.broker.mark_dirty(self)

    def send_frame(self, frame: bytes) -> None:
        if self.state is State.CLOSED:
            return
        self._write_ws(OP_BINARY, frame)
        self.frames_out += 1

    def _write_ws(self, opcode: int, payload: bytes) -> None:
        self._out += frame_header(opcode, len(payload))
        self._out += payload
        if not self._queued:
            self._queued = True
            self.broker.mark_dirty(self)

    def flush(self) -> None:
        self._queued = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            data, self._out = self._out, bytearray()
            self.transport.write(data)

    def _close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._write_ws(OP_CLOSE, (1000).to_bytes(2, "big"))
        super()._close_transport()


def _upgrade_refusal(request: web.Request) -> str:
    """Why ``request`` is not a WebSocket upgrade this listener takes (RFC 6455 §4.2.1), or ''."""
    headers = request.headers
    if headers.get("Upgrade", "").lower() != "websocket":
        return "this endpoint speaks RSocket over WebSocket: send an upgrade request (Upgrade: websocket)"
    if "upgrade" not in headers.get("Connection", "").lower():
        return "the upgrade request's Connection header must include 'upgrade'"
    if headers.get("Sec-WebSocket-Version") != "13":
        return "Sec-WebSocket-Version must be 13"
    try:
        key_ok = len(base64.b64decode(headers.get("Sec-WebSocket-Key", ""), validate=True)) == 16
    except ValueError:
        key_ok = False
    if not key_ok:
        return "Sec-WebSocket-Key must be 16 bytes in base64"
    return ""


def _local_host(request: web.Request) -> str | None:
    """The address this request arrived on (one of this node's, whatever the listener's bind)."""
    local = request.transport.get_extra_info("sockname") if request.transport else None
    return str(local[0]) if local else None


def websocket_app(broker: Broker) -> web.Application:
    """The aiohttp application serving ``/rsocket`` and the HTTP gateway's ``/rpc/{route}``.

    A browser page may open it only if the Origin policy allows its origin (see
    ``broker.origins``): refused upgrades get HTTP 403 saying why, before any RSocket frame.
    """
    policy = OriginPolicy(NodeNames.of(broker.settings), broker.settings.ws_allowed_origins)

    async def handler(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        refusal = policy.refusal(request.headers.get("Origin"), _local_host(request))
        if refusal:
            broker.stats["ws_origins_refused"] += 1
            log.info("refused a WebSocket upgrade from %s: %s", peer, refusal)
            return web.Response(status=403, text=refusal)
        refusal = _upgrade_refusal(request)
        if refusal:
            return web.Response(status=400, text=refusal)
        if transport is None or transport.is_closing():
            return web.Response(status=400, text="connection closed")
        # From here on, nothing awaits: no byte can reach aiohttp between the 101 and the move.
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(request.headers["Sec-WebSocket-Key"]).encode() + b"\r\n\r\n"
        )
        # aiohttp lets go of the socket as if it were gone: without a transport it neither
        # reads, writes nor closes it again, and its handler and request are freed once this
        # returns ...
        protocol = request.protocol
        protocol.transport = None
        protocol.connection_lost(None)
        # ... and the session owns it from now on.
        session = WsSession(broker)
        transport.set_protocol(session)
        session.connection_made(transport)
        # aiohttp's attempt to send this finds no socket and ends the request quietly
        return web.Response(status=101)

    app = web.Application()
    app.router.add_get("/rsocket", handler)
    Gateway(broker, policy).routes(app)  # /rpc/{route}: HTTP clients of the relay (broker.gateway)
    return app
