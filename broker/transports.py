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
import logging
import ssl
from typing import Any, Callable

from aiohttp import web

from broker.auth.tls import peer_principal
from broker.frames import HEADER_LENGTH, ErrorCode
from broker.gateway import Gateway
from broker.hotpath import forward, read_frames
from broker.origins import NodeNames, OriginPolicy
from broker.relay import Broker
from broker.session import Session, State
from broker.websocket import (
    MAX_REQUEST_HEAD, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, WebSocketError, frame_header, parse_frames,
    parse_upgrade_request, upgrade_refusal, upgrade_response,
)  # fmt: skip

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
        self._last_recv = now = self.broker.clock()  # Session.last_recv's own field: no property call per read
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return
            data = bytes(self._buf)
            self._buf = bytearray()
        pos, self._need = read_frames(self, data, now)
        if pos < len(data) and not self.closing:
            self._buf = bytearray(memoryview(data)[pos:])

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self.close_reason:
            self.close_reason = str(exc) or type(exc).__name__
        self.connection_closed()
        self._release_buffers()

    def _release_buffers(self) -> None:
        """Let a closed connection's buffers go at once: the session object may live on while a
        kept trace span (an ended stream, ``broker.tracing``) names it, until the span leaves its
        bounded ring."""
        self._buf = bytearray()
        self.wire_out = bytearray()

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
        self._last_recv = self.broker.clock()
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

    def _release_buffers(self) -> None:
        self._buf = bytearray()
        self._out = bytearray()
        self._message = None

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

    def write_raw(self, data: bytes) -> None:
        """Queue bytes that are not a WebSocket frame (the upgrade's 101) before any frame."""
        self._out += data
        if not self._queued:
            self._queued = True
            self.broker.mark_dirty(self)

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


def _local_host(request: web.Request) -> str | None:
    """The address this request arrived on (one of this node's, whatever the listener's bind)."""
    local = request.transport.get_extra_info("sockname") if request.transport else None
    return str(local[0]) if local else None


def websocket_app(broker: Broker, policy: OriginPolicy) -> web.Application:
    """The aiohttp application serving ``/rsocket`` and the HTTP gateway's ``/rpc/{route}``.

    A browser page may open it only if the Origin policy allows its origin (see
    ``broker.origins``): refused upgrades get HTTP 403 saying why, before any RSocket frame.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        refusal = policy.refusal(request.headers.get("Origin"), _local_host(request))
        if refusal:
            broker.stats["ws_origins_refused"] += 1
            log.info("refused a WebSocket upgrade from %s: %s", peer, refusal)
            return web.Response(status=403, text=refusal)
        refusal = upgrade_refusal(request.headers)
        if refusal:
            return web.Response(status=400, text=refusal)
        if transport is None or transport.is_closing():
            return web.Response(status=400, text="connection closed")
        # From here on, nothing awaits: no byte can reach aiohttp between the 101 and the move.
        transport.write(upgrade_response(request.headers["Sec-WebSocket-Key"]))
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


class UpgradeSniffer(asyncio.Protocol):
    """The first protocol of every connection to the ``--ws`` listener: it reads the request
    head and, when it is an upgrade to ``/rsocket`` that the Origin policy allows, answers
    101 and moves the socket to a :class:`WsSession` itself. Anything else (the gateway's
    ``/rpc/{route}``, a refused or malformed upgrade, a request it cannot read) goes, bytes
    and all, to aiohttp, which answers it as before. A socket whose request head is not
    complete by the SETUP deadline gets HTTP 408 naming ``setup_timeout_s`` and is closed.

    Why: in a connect storm aiohttp's per-request machinery (protocol, parser, request,
    task, middleware chain, response) was most of a WebSocket connect's CPU; a device's
    upgrade needs one ``find``, one split and one SHA-1 (issue 13).
    """

    __slots__ = ("broker", "policy", "http", "transport", "_buf", "_deadline", "_accepted_at")

    def __init__(self, broker: Broker, policy: OriginPolicy, http: Callable[[], asyncio.BaseProtocol]) -> None:
        self.broker = broker
        self.policy = policy
        self.http = http
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._deadline: asyncio.TimerHandle | None = None
        self._accepted_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        # a socket that never finishes its request head must not hold a descriptor forever:
        # it gets the SETUP deadline, as a TCP client that sends no SETUP does (and, like it,
        # not counting the time this node's loop was behind: broker.looplag)
        broker = self.broker
        self._accepted_at = broker.clock()
        self._deadline = broker.loop.call_later(broker.settings.setup_timeout_s, self._timed_out)

    def _timed_out(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        broker = self.broker
        timeout = broker.settings.setup_timeout_s
        left = self._accepted_at + timeout + min(broker.lag.since(self._accepted_at), timeout) - broker.clock()
        if left > 0:
            self._deadline = broker.loop.call_later(left, self._timed_out)
            return
        broker.stats["setup_timeouts"] += 1
        reason = f"no complete upgrade request within {timeout:g} s (setup_timeout_s)".encode()
        transport.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(reason), reason))
        transport.close()

    def _hand_over(self) -> asyncio.Transport:
        """Stop the deadline: the socket goes to a session or to aiohttp, with their own."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        assert self.transport is not None
        return self.transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        end = buf.find(b"\r\n\r\n", 0, MAX_REQUEST_HEAD + 4)
        if end < 0:
            if len(buf) > MAX_REQUEST_HEAD:
                self._to_http(buf)  # aiohttp says what is too long
            else:
                self._buf = buf
            return
        request = parse_upgrade_request(buf[:end])
        if request is None or request.path != "/rsocket" or upgrade_refusal(request.headers) or self._origin_refused(request):
            self._to_http(buf)
            return
        transport = self._hand_over()
        session = WsSession(self.broker)
        # the 101 leaves with the session's first frames (one write, not two)
        session.write_raw(upgrade_response(request.headers["sec-websocket-key"]))
        transport.set_protocol(session)
        session.connection_made(transport)
        if len(buf) > end + 4 and not session.closing:  # frames sent right behind the request
            session.data_received(buf[end + 4 :])

    def _origin_refused(self, request: Any) -> bool:
        assert self.transport is not None
        local = self.transport.get_extra_info("sockname")
        return bool(self.policy.refusal(request.headers.get("origin"), str(local[0]) if local else None))

    def _to_http(self, buf: bytes) -> None:
        transport = self._hand_over()
        protocol = self.http()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(buf)  # type: ignore[attr-defined]  # aiohttp's RequestHandler

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


async def serve_websocket(
    broker: Broker, host: str, port: int, ssl_context: ssl.SSLContext | None, backlog: int
) -> tuple[asyncio.Server, web.AppRunner]:
    """Listen for WebSocket devices and HTTP gateway clients on ``host:port``: device upgrades
    are answered by :class:`UpgradeSniffer`, the rest by :func:`websocket_app`'s aiohttp
    runner. The caller closes the server (no new connections) and cleans the runner up."""
    policy = OriginPolicy(NodeNames.of(broker.settings), broker.settings.ws_allowed_origins)
    runner = web.AppRunner(websocket_app(broker, policy), access_log=None, handle_signals=False)
    await runner.setup()
    http = runner.server
    assert http is not None
    server = await asyncio.get_running_loop().create_server(
        lambda: UpgradeSniffer(broker, policy, http), host, port, ssl=ssl_context, reuse_address=True, backlog=backlog
    )
    return server, runner
