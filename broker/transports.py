"""Transport shells: TCP (length-prefixed frames) and WebSocket (one frame per message).

Each shell turns bytes from its socket into ``Session.handle_frame`` calls and turns the
session's queued output into socket writes. All relay logic stays in ``broker.session``.

TCP reads are processed in place: complete frames are handed over as offsets into the
received ``bytes`` object; only a frame split across reads is buffered, and the buffer is
not re-scanned until enough bytes for that frame have arrived (so a 16 MiB frame arriving
in 64 KiB pieces costs one copy, not hundreds).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from aiohttp import WSMsgType, web

from broker.auth.tls import peer_principal
from broker.frames import HEADER_LENGTH, ErrorCode
from broker.origins import NodeNames, OriginPolicy
from broker.relay import Broker
from broker.session import Session, State

log = logging.getLogger("rsbroker.transport")

#: A connection the broker closes gets this long to take its last frames (the ERROR saying
#: why, say) before it is aborted. A graceful close waits for queued output to reach the
#: peer, and a peer that stopped reading would otherwise hold the connection open forever,
#: and with it every stream it took part in and every provider paused on its account.
CLOSE_GRACE_S = 5.0


class TcpSession(Session, asyncio.Protocol):
    """A client connected over TCP (optionally TLS)."""

    transport_name = "tcp"

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker, None)
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = 0
        self._out = bytearray()
        self._queued = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        self.peer = transport.get_extra_info("peername")
        if transport.get_extra_info("sslcontext") is not None:
            self.transport_name = "tls"
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
        n = len(data)
        pos = 0
        handle = self.handle_frame
        while n - pos >= 3:
            length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
            if length > self.frame_limit:  # read each time: it grows once SETUP is accepted
                self.refuse_oversized(length)
                return
            if length < HEADER_LENGTH:
                self.fail(ErrorCode.CONNECTION_ERROR, f"frame of {length} bytes is shorter than the 6-byte header")
                return
            end = pos + 3 + length
            if end > n:
                self._need = end - pos
                break
            handle(data, pos + 3, end)
            if self.closing:
                return
            pos = end
        else:
            self._need = 3
        if pos < n:
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
        out = self._out
        out += (end - off).to_bytes(3, "big")
        out += sid
        out += memoryview(buf)[off + 4 : end]
        self.frames_out += 1
        if not self._queued:
            self._queued = True
            self.broker.mark_dirty(self)

    def send_frame(self, frame: bytes) -> None:
        if self.state is State.CLOSED:
            return
        self._out += len(frame).to_bytes(3, "big")
        self._out += frame
        self.frames_out += 1
        if not self._queued:
            self._queued = True
            self.broker.mark_dirty(self)

    def flush(self) -> None:
        self._queued = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            data, self._out = self._out, bytearray()
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


#: aiohttp refuses a message of ``max_msg_size`` bytes or more before buffering it, closing the
#: socket with code 1009 and no RSocket ERROR. Accepting a little more than the frame limit
#: lets a slightly oversized frame arrive whole, so it gets ERROR(CONNECTION_ERROR) naming its
#: size as it would on TCP; memory stays bounded by the limit plus this margin.
WS_OVERSIZE_MARGIN = 64 * 1024


class WsSession(Session):
    """A client connected over WebSocket: one RSocket frame per binary message.

    An idle device must cost little (issue 13: tens of thousands per node), so a session
    holds no task and no event of its own while idle: output is written by a short-lived
    task started on the flush that finds frames queued, which ends when the queue is empty;
    a paused reader waits on a future made only while reading is paused.
    """

    transport_name = "ws"

    def __init__(
        self, broker: Broker, peer: Any, ws: web.WebSocketResponse, transport: asyncio.Transport | None = None
    ) -> None:
        super().__init__(broker, peer)
        self.ws = ws
        #: the underlying socket's transport, aborted if a graceful close cannot finish
        self._raw_transport = transport
        self._out: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        self._queued = False
        #: the task writing ``_out`` (and closing the socket once asked to), while there is work
        self.writer: asyncio.Task[None] | None = None
        #: set while reading is paused; the reader waits on it
        self._resume: asyncio.Future[None] | None = None

    def forward(self, sid: bytes, buf: Any, off: int, end: int) -> None:
        self._enqueue(sid + memoryview(buf)[off + 4 : end])

    def send_frame(self, frame: bytes) -> None:
        if self.state is not State.CLOSED:
            self._enqueue(frame)

    def _enqueue(self, frame: bytes) -> None:
        self._out.append(frame)
        self._pending_bytes += len(frame)
        self.frames_out += 1
        if self._pending_bytes > self.broker.settings.max_pending_bytes:
            self.write_paused = True
        if not self._queued:
            self._queued = True
            self.broker.mark_dirty(self)

    def flush(self) -> None:
        self._queued = False
        if self._out or self.closing:
            self._start_writer()

    def _start_writer(self) -> None:
        if self.writer is None or self.writer.done():
            self.writer = self.broker.loop.create_task(self._write_loop())

    async def _write_loop(self) -> None:
        """Send queued frames in order; close the socket once asked to and drained."""
        ws = self.ws
        low = self.broker.settings.max_pending_bytes // 4
        try:
            while self._out:
                frame = self._out.popleft()
                self._pending_bytes -= len(frame)
                await ws.send_bytes(frame)
                if self.write_paused and self._pending_bytes <= low:
                    self.on_write_resumed()
            if self.closing or self.state is State.CLOSED:
                await ws.close()
        except (ConnectionError, RuntimeError) as exc:
            log.debug("websocket %s write failed: %s", self.id, exc)
        except asyncio.CancelledError:
            pass

    def _close_transport(self) -> None:
        self._start_writer()
        self.resume_reading()
        self.broker.loop.call_later(CLOSE_GRACE_S, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.state is not State.CLOSED and self._raw_transport is not None:
            log.info("websocket %s did not take its last frames within %g s: aborted", self.id, CLOSE_GRACE_S)
            self._raw_transport.abort()

    def pause_reading(self) -> None:
        if self._resume is None:
            self._resume = self.broker.loop.create_future()

    def resume_reading(self) -> None:
        resume, self._resume = self._resume, None
        if resume is not None and not resume.done():
            resume.set_result(None)

    async def serve(self) -> None:
        """Read messages until the socket or the session closes."""
        ws = self.ws
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    data = msg.data
                    self.last_recv = self.broker.clock()
                    if len(data) < HEADER_LENGTH:
                        self.fail(ErrorCode.CONNECTION_ERROR, f"frame of {len(data)} bytes is shorter than the 6-byte header")
                    elif len(data) > self.frame_limit:
                        self.refuse_oversized(len(data))
                    else:
                        self.handle_frame(data, 0, len(data))
                elif msg.type == WSMsgType.TEXT:
                    self.fail(ErrorCode.CONNECTION_ERROR, "text messages are not RSocket frames: send binary messages")
                elif msg.type == WSMsgType.ERROR:
                    self.close_reason = f"websocket error: {ws.exception()}"
                    break
                if self.closing:
                    break
                if self._resume is not None:
                    await self._resume
        finally:
            if self.closing and self.writer is not None:
                # let the writer send the ERROR frame (if any) and close the socket
                try:
                    await asyncio.wait_for(asyncio.shield(self.writer), timeout=CLOSE_GRACE_S)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    pass
            self.connection_closed()
            if self.writer is not None:
                self.writer.cancel()


def _local_host(request: web.Request) -> str | None:
    """The address this request arrived on (one of this node's, whatever the listener's bind)."""
    local = request.transport.get_extra_info("sockname") if request.transport else None
    return str(local[0]) if local else None


def websocket_app(broker: Broker) -> web.Application:
    """The aiohttp application serving ``/rsocket``.

    A browser page may open it only if the Origin policy allows its origin (see
    ``broker.origins``): refused upgrades get HTTP 403 saying why, before any RSocket frame.
    """
    policy = OriginPolicy(NodeNames.of(broker.settings), broker.settings.ws_allowed_origins)

    async def handler(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        refusal = policy.refusal(request.headers.get("Origin"), _local_host(request))
        if refusal:
            broker.stats["ws_origins_refused"] += 1
            log.info("refused a WebSocket upgrade from %s: %s", peer, refusal)
            return web.Response(status=403, text=refusal)
        ws = web.WebSocketResponse(max_msg_size=broker.settings.max_frame_size + WS_OVERSIZE_MARGIN, compress=False)
        await ws.prepare(request)
        refusal = broker.admit(peer)
        session = WsSession(broker, peer, ws, request.transport)
        if request.transport is not None and request.transport.get_extra_info("sslcontext") is not None:
            session.transport_name = "wss"
            session.tls_principal = peer_principal(request.transport)
        broker.add_session(session)
        if refusal:
            session.fail(ErrorCode.REJECTED_SETUP, refusal)
        await session.serve()
        return ws

    app = web.Application()
    app.router.add_get("/rsocket", handler)
    return app
