"""One RSocket connection, requester and responder at once, on the project's frame codec.

Rules this module keeps:

* **Writes are coalesced per loop turn.** Every frame goes into one list; the first frame of
  a turn schedules one flush with ``call_soon``, which hands the whole list to the
  transport (one ``write`` for TCP). 64 tasks sending requests in one turn cost one system
  call.
* **No per-frame objects beyond the frame.** A request-response is one future in a dict; a
  stream is an :class:`~broker.client.streams.Inbound` (a deque, no task); a handler that
  answers without waiting runs without a task (:mod:`broker.client.eager`).
* **Per-frame work is** :mod:`broker.client.codec` (compiled when built, pure Python
  otherwise): header, dispatch by stream id, request and answer frames. It is fuzzed against
  :mod:`broker.frames`, the codec the broker's parsers are fuzzed with; the rarer frames are
  read with that codec directly.
* **Liveness:** a KEEPALIVE (respond) every ``keepalive_s``; no frame at all from the peer
  for ``max_lifetime_s`` closes the connection with :class:`ConnectionLostError`. That is
  what finds a paused or partitioned node whose socket still looks open.
* Stream ids are odd (this side opens the connection); the peer's requests have even ids.
* Payloads larger than ``fragment_size`` go out as fragments and fragmented payloads are
  put back together, up to ``max_payload_bytes`` (:mod:`broker.client.fragments`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, AsyncIterable, Callable, Iterable

from broker import metadata as md
from broker.client import eager
from broker.client.codec import encode_payload, encode_request, received
from broker.client.fragments import Reassembly, split
from broker.client.handshake import registration
from broker.client.errors import (
    ApplicationError,
    ConnectionLostError,
    PayloadTooLarge,
    RSocketError,
    error_for,
)
from broker.client.router import Handler, Request, Router
from broker.client.streams import Inbound, Outbound, as_async_iterator
from broker.client.transport import FrameTransport
from broker.frames import (
    FLAG_COMPLETE,
    FLAG_FOLLOWS,
    FLAG_IGNORE,
    FLAG_RESPOND,
    HEADER_LENGTH,
    ErrorCode,
    FrameError,
    FrameType,
    MAX_FRAME_LENGTH,
    MAX_REQUEST_N,
    cancel_frame,
    error_frame,
    keepalive_frame,
    metadata_push_frame,
    parse_error,
    parse_request_n,
    payload_frame,
    request_n_frame,
)

__all__ = ["Connection"]

log = logging.getLogger("rsbroker.client")

_PAYLOAD = FrameType.PAYLOAD
_REQUEST_N = FrameType.REQUEST_N
_CANCEL = FrameType.CANCEL
_ERROR = FrameType.ERROR
_RR = FrameType.REQUEST_RESPONSE
_STREAM = FrameType.REQUEST_STREAM
_CHANNEL = FrameType.REQUEST_CHANNEL
_FNF = FrameType.REQUEST_FNF
_REQUESTS = (_RR, _STREAM, _CHANNEL, _FNF)
#: bytes a frame adds around its metadata and data (header, request N, metadata length)
_FRAME_OVERHEAD = HEADER_LENGTH + 4 + 3
#: default bound on one reassembled (fragmented) payload
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024
#: routes whose routing metadata is cached (and, on the serving side, request metadata whose
#: route is cached); beyond this, each request is built or parsed on its own
_ROUTE_CACHE_SIZE = 4096


def _error_answer(exc: BaseException) -> tuple[int, str]:
    """The ERROR frame a handler's exception becomes."""
    if isinstance(exc, RSocketError):
        return exc.code, exc.message
    return ErrorCode.APPLICATION_ERROR, str(exc) or type(exc).__name__


class _Channel:
    """Both halves of a channel under one stream id; the stream ends when both have.
    The inbound half is held weakly, like a stream's (see :func:`_inbound_of`)."""

    __slots__ = ("inbound", "outbound")

    def __init__(self, inbound: Inbound, outbound: Outbound) -> None:
        self.inbound = weakref.ref(inbound)
        self.outbound = outbound


def _inbound_of(stream: Any) -> Inbound | None:
    """The receiving half of ``stream``, if its consumer still holds it.

    The connection keeps inbound halves by weak reference only: a consumer that drops its
    iterator (``break`` out of ``async for``) lets it go at once, and its ``__del__`` sends
    CANCEL. A strong reference here would keep every abandoned stream open.
    """
    if type(stream) is weakref.ref:
        return stream()  # type: ignore[no-any-return]
    if type(stream) is _Channel:
        return stream.inbound()
    return None


class Connection:
    """An RSocket connection over a :class:`~broker.client.transport.FrameTransport`.

    Made and set up by :func:`broker.client.connect`; use its request methods.
    """

    def __init__(
        self,
        *,
        router: Router | None = None,
        metadata_mime: str = md.COMPOSITE_MIME,
        keepalive_s: float = 5.0,
        max_lifetime_s: float = 30.0,
        on_metadata_push: Callable[[bytes], None] | None = None,
        fragment_size: int = MAX_FRAME_LENGTH,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        if not _FRAME_OVERHEAD + 3 < fragment_size <= MAX_FRAME_LENGTH:
            raise ValueError(f"fragment_size must be from {_FRAME_OVERHEAD + 4} to {MAX_FRAME_LENGTH} bytes")
        self._loop = asyncio.get_running_loop()
        self.fragment_size = fragment_size
        self._reassembly = Reassembly(max_payload_bytes)
        self.router = router
        self.metadata_mime = metadata_mime
        self.keepalive_s = keepalive_s
        self.max_lifetime_s = max_lifetime_s
        self.on_metadata_push = on_metadata_push
        self.transport: FrameTransport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._next_sid = 1
        #: requester side: request-response futures by stream id
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        #: streams, channels and suspended responders, by stream id
        self._streams: dict[int, Any] = {}
        self._route_metadata: dict[str, bytes] = {}
        #: serving side: route of each distinct request metadata seen (requesters repeat theirs)
        self._routes: dict[bytes, str | None] = {}
        self._heard = False
        self._last_heard = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._pong: asyncio.Future[None] | None = None
        #: set while the transport's write buffer is over its high-water mark
        self._drained: asyncio.Future[None] | None = None
        #: KEEPALIVE answers received: the peer is alive and reading (for operators and tests)
        self.keepalives_answered = 0
        self.error: RSocketError | None = None
        self.closed: asyncio.Future[RSocketError] = self._loop.create_future()

    # -- life ------------------------------------------------------------------------------

    def attach(self, transport: FrameTransport) -> None:
        self.transport = transport
        self._last_heard = self._loop.time()
        self._timer = self._loop.call_later(self.keepalive_s, self._tick)

    async def handshake(self, setup: bytes, timeout: float) -> None:
        """Send SETUP and wait for the answer to a KEEPALIVE sent right after it.

        RSocket has no SETUP acknowledgement, but the peer handles frames in order: once the
        KEEPALIVE comes back, the SETUP was accepted (a provider is registered). A refused
        SETUP raises its :class:`SetupError`; a peer that never answers (a paused node
        accepts TCP connections in its kernel) raises :class:`ConnectionLostError`.
        """
        self._pong = self._loop.create_future()
        self._send(setup)
        self._send(keepalive_frame(True))
        try:
            await asyncio.wait_for(asyncio.shield(self._pong), timeout)
        except TimeoutError:
            self._lose(ConnectionLostError(f"{self.peer} did not answer the SETUP within {timeout:g} s"))
        if self.error is not None:
            raise self.error

    @property
    def peer(self) -> str:
        return self.transport.peer if self.transport is not None else "?"

    @property
    def is_closed(self) -> bool:
        return self.error is not None

    def close(self, reason: str = "closed by the client") -> None:
        """End the connection: requests in flight fail with ConnectionLostError(``reason``)."""
        if self.error is None:
            self._flush()
            self._lose(ConnectionLostError(reason))

    async def wait_closed(self) -> RSocketError:
        """Until the connection ends; the error it ended with."""
        return await asyncio.shield(self.closed)

    def _lose(self, error: RSocketError) -> None:
        if self.error is not None:
            return
        self.error = error
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            self._end_stream(stream, error)
        if self._pong is not None and not self._pong.done():
            self._pong.set_result(None)
        self.writing_resumed()
        if not self.closed.done():
            self.closed.set_result(error)

    @staticmethod
    def _end_stream(stream: Any, error: RSocketError) -> None:
        inbound = _inbound_of(stream)
        if inbound is not None:
            inbound.on_error(error)
        if isinstance(stream, _Channel):
            stream.outbound.cancel()
        elif not isinstance(stream, weakref.ref):  # an Outbound, or a responder's task
            stream.cancel()

    def _tick(self) -> None:
        now = self._loop.time()
        if self._heard:
            self._heard = False
            self._last_heard = now
        elif now - self._last_heard > self.max_lifetime_s:
            self._lose(
                ConnectionLostError(
                    f"no frame from {self.peer} for {now - self._last_heard:.1f} s (max lifetime "
                    f"{self.max_lifetime_s:g} s): the node is paused, partitioned or gone"
                )
            )
            return
        self._send(keepalive_frame(True))
        self._timer = self._loop.call_later(self.keepalive_s, self._tick)

    # -- writing ---------------------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out:
            out, self._out = self._out, []
            if self.transport is not None and self.error is None:
                self.transport.write_frames(out)

    # flow control from the transport (StreamOwner) ----------------------------------------

    @property
    def write_paused(self) -> bool:
        return self._drained is not None

    async def writable(self) -> None:
        """Until the transport takes more output (or the connection ends)."""
        if self._drained is not None:
            await asyncio.shield(self._drained)

    def writing_paused(self) -> None:
        if self._drained is None and self.error is None:
            self._drained = self._loop.create_future()

    def writing_resumed(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _send_request(
        self, ftype: int, sid: int, metadata: bytes, data: bytes, initial_n: int = MAX_REQUEST_N, complete: bool = False
    ) -> None:
        """A request, in fragments when it is larger than ``fragment_size``."""
        if len(metadata) + len(data) + _FRAME_OVERHEAD <= self.fragment_size:
            self._send(encode_request(ftype, sid, metadata, data, initial_n, complete))
        else:
            for frame in split(ftype, sid, metadata, data, self.fragment_size, initial_n=initial_n, complete=complete):
                self._send(frame)

    def _send_payload(self, sid: int, data: bytes, complete: bool) -> None:
        """PAYLOAD(NEXT), in fragments when it is larger than ``fragment_size``."""
        if len(data) + _FRAME_OVERHEAD <= self.fragment_size:
            self._send(encode_payload(sid, data, complete))
        else:
            for frame in split(_PAYLOAD, sid, None, data, self.fragment_size, complete=complete):
                self._send(frame)

    def _check_open(self) -> None:
        if self.error is not None:
            raise self.error

    def _new_sid(self) -> int:
        sid = self._next_sid
        self._next_sid = sid + 2 if sid < 0x7FFFFFFD else 1
        while sid in self._pending or sid in self._streams:  # only after 2^30 requests
            sid = self._next_sid
            self._next_sid = sid + 2 if sid < 0x7FFFFFFD else 1
        return sid

    def _metadata(self, route: str, metadata: bytes | None) -> bytes:
        if metadata is not None:
            return md.route_metadata(route) + metadata
        cached = self._route_metadata.get(route)
        if cached is None:
            cached = md.route_metadata(route)
            if len(self._route_metadata) < _ROUTE_CACHE_SIZE:
                self._route_metadata[route] = cached
        return cached

    # StreamOwner ---------------------------------------------------------------------------

    def send_request_n(self, sid: int, n: int) -> None:
        if self.error is None:
            self._send(request_n_frame(sid, n))

    def send_cancel(self, sid: int) -> None:
        if self.error is None:
            self._send(cancel_frame(sid))

    def send_next(self, sid: int, data: bytes) -> None:
        self._send_payload(sid, data, False)

    def send_complete(self, sid: int) -> None:
        self._send(payload_frame(sid, b"", next_=False, complete=True))

    def send_error(self, sid: int, exc: BaseException) -> None:
        code, message = _error_answer(exc)
        self._send(error_frame(sid, code, message))

    def half_closed(self, sid: int, half: object) -> None:
        stream = self._streams.get(sid)
        if stream is half:
            del self._streams[sid]
        elif type(stream) is weakref.ref:
            if stream() in (None, half):
                del self._streams[sid]
        elif type(stream) is _Channel and stream.outbound.done:
            inbound = stream.inbound()
            if inbound is None or inbound.done:
                del self._streams[sid]

    # -- requester API ---------------------------------------------------------------------

    async def request_response(self, route: str, data: bytes, metadata: bytes | None = None) -> bytes:
        """Send a request to ``route``; its answer's data. Raises an RSocketError subclass."""
        if self.error is not None:
            raise self.error
        sid = self._new_sid()
        self._send_request(_RR, sid, self._metadata(route, metadata), data)
        future = self._loop.create_future()
        self._pending[sid] = future  # after _send: no answer can arrive before this turn ends
        try:
            return await future
        except asyncio.CancelledError:
            if self._pending.pop(sid, None) is not None:
                self.send_cancel(sid)
            raise

    def request_stream(self, route: str, data: bytes = b"", window: int = 64, metadata: bytes | None = None) -> Inbound:
        """An async iterator of the stream's items, keeping ``window`` items requested."""
        self._check_open()
        sid = self._new_sid()
        self._send_request(_STREAM, sid, self._metadata(route, metadata), data, initial_n=window)
        inbound = Inbound(self, sid, window)
        self._streams[sid] = weakref.ref(inbound)
        return inbound

    def request_channel(
        self,
        route: str,
        items: AsyncIterable[bytes] | Iterable[bytes],
        window: int = 64,
        metadata: bytes | None = None,
    ) -> Inbound:
        """Send ``items`` (the first one in the REQUEST_CHANNEL frame) while the peer grants
        credit; an async iterator of what comes back, keeping ``window`` items requested.
        REQUEST_CHANNEL always carries a payload, so an empty ``items`` sends one empty item."""
        self._check_open()
        sid = self._new_sid()
        inbound = Inbound(self, sid, window)
        outbound = Outbound(self, sid, 0)
        self._streams[sid] = _Channel(inbound, outbound)
        source = as_async_iterator(items)
        route_metadata = self._metadata(route, metadata)
        consumer = weakref.ref(inbound)  # the sending task must not keep the consumer's iterator alive

        async def opened() -> AsyncIterable[bytes] | tuple[()]:
            # the first item rides in the request itself; the rest wait for REQUEST_N
            try:
                try:
                    first = await source.__anext__()
                except StopAsyncIteration:
                    self._send_request(_CHANNEL, sid, route_metadata, b"", initial_n=window, complete=True)
                    return ()
                self._send_request(_CHANNEL, sid, route_metadata, first, initial_n=window)
            except Exception as exc:
                # the request never left: nothing to tell the peer, the consumer gets the error
                outbound.done = True
                self._streams.pop(sid, None)
                held = consumer()
                if held is not None:
                    held.on_error(exc)
                raise
            return source

        outbound.start(opened())
        return inbound

    async def fire_and_forget(self, route: str, data: bytes, metadata: bytes | None = None) -> None:
        """Send a request nobody answers (it is on its way when this returns)."""
        self._check_open()
        self._send_request(_FNF, self._new_sid(), self._metadata(route, metadata), data)

    async def metadata_push(self, metadata: bytes) -> None:
        """Send METADATA_PUSH (composite metadata), e.g. a routed notification."""
        self._check_open()
        self._send(metadata_push_frame(metadata))

    async def register(
        self, services: Iterable[str], instance: str, weight: int = 1, tags: dict[str, str] | None = None
    ) -> None:
        """Replace this connection's registration with ``services`` (METADATA_PUSH of the
        registration entry; an empty list withdraws them all)."""
        entry = registration(services, instance, weight, tags).to_json()
        await self.metadata_push(md.composite_entry(md.REGISTER_MIME, entry))

    # -- reading ---------------------------------------------------------------------------

    def frame_received(self, buf: bytes, off: int, end: int) -> None:
        """One frame from the transport: dispatched by :func:`broker.client.codec.received`,
        which answers futures and starts handlers itself and hands the rest to
        :meth:`_other_frame`. Malformed input is a protocol error that ends the connection."""
        try:
            received(self, buf, off, end)
        except FrameError as exc:
            self._protocol_error(str(exc))

    def _other_frame(self, buf: bytes, off: int, end: int, sid: int, ftype: int, flags: int) -> None:
        """A frame the codec did not dispatch: stream 0, fragments, ERROR, REQUEST_N, CANCEL,
        a PAYLOAD for a stream being reassembled, unknown types."""
        if sid == 0:
            self._connection_frame(buf, off, end, ftype, flags)
        elif ftype == _PAYLOAD or (ftype in _REQUESTS and flags & FLAG_FOLLOWS):
            self._fragment(buf, off, end, sid, ftype, flags)
        elif ftype == _ERROR:
            code, message = parse_error(buf, off, end)
            self._on_error(sid, error_for(code, message))
        elif ftype == _REQUEST_N:
            stream = self._streams.get(sid)
            outbound = stream.outbound if isinstance(stream, _Channel) else stream
            if isinstance(outbound, Outbound):
                outbound.on_request_n(parse_request_n(buf, off, end))
        elif ftype == _CANCEL:
            self._on_cancel(sid)
        elif not flags & FLAG_IGNORE:
            self._protocol_error(f"frame type 0x{ftype:02x} is not valid on stream {sid}")

    def transport_lost(self, reason: str) -> None:
        self._lose(ConnectionLostError(reason))

    def _protocol_error(self, message: str) -> None:
        log.warning("closing connection to %s: %s", self.peer, message)
        self._send(error_frame(0, ErrorCode.CONNECTION_ERROR, message))
        self._flush()
        self._lose(ConnectionLostError(f"protocol error: {message}"))

    def _fragment(self, buf: bytes, off: int, end: int, sid: int, ftype: int, flags: int) -> None:
        try:
            whole = self._reassembly.add(buf, off, end, sid, ftype, flags)
        except PayloadTooLarge as exc:
            self._on_error(sid, exc)
            if sid & 1:  # an answer to our request: give up on it
                self.send_cancel(sid)
            else:  # the peer's request (or its side of a channel): refuse it
                self._send(error_frame(sid, exc.code, exc.message))
            return
        if whole is not None:
            self.frame_received(whole, 0, len(whole))

    def _connection_frame(self, buf: bytes, off: int, end: int, ftype: int, flags: int) -> None:
        if ftype == FrameType.KEEPALIVE:
            if end - off < HEADER_LENGTH + 8:
                raise FrameError("KEEPALIVE frame is shorter than its 8-byte position field")
            if flags & FLAG_RESPOND:
                self._send(keepalive_frame(False, bytes(buf[off + HEADER_LENGTH + 8 : end])))
            else:
                self.keepalives_answered += 1
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(None)
        elif ftype == _ERROR:
            code, message = parse_error(buf, off, end)
            self._lose(error_for(code, message))
        elif ftype == FrameType.METADATA_PUSH:
            self._on_metadata_push(bytes(buf[off + HEADER_LENGTH : end]))
        elif ftype == FrameType.LEASE:
            pass  # this client never asks for leases; a peer that sends one anyway is ignored
        elif not flags & FLAG_IGNORE:
            raise FrameError(f"frame type 0x{ftype:02x} is not valid on stream 0")

    def _on_payload(self, stream: Any, data: bytes | None, flags: int) -> None:
        """A whole PAYLOAD for a stream or channel; ``data`` is None without NEXT."""
        inbound = _inbound_of(stream)
        if inbound is None:
            return
        if data is not None:
            inbound.on_next(data, bool(flags & FLAG_COMPLETE))
        elif flags & FLAG_COMPLETE:
            inbound.on_complete()

    def _on_error(self, sid: int, error: RSocketError) -> None:
        self._reassembly.drop(sid)
        future = self._pending.pop(sid, None)
        if future is not None:
            if not future.done():
                future.set_exception(error)
            return
        stream = self._streams.pop(sid, None)
        if stream is not None:
            self._end_stream(stream, error)

    def _on_cancel(self, sid: int) -> None:
        self._reassembly.drop(sid)
        stream = self._streams.get(sid)
        if isinstance(stream, _Channel):
            stream.outbound.cancel()
        elif stream is not None and type(stream) is not weakref.ref:
            del self._streams[sid]
            stream.cancel()  # an Outbound, or the task of a suspended handler

    def _on_metadata_push(self, metadata: bytes) -> None:
        if self.on_metadata_push is not None:
            self.on_metadata_push(metadata)
        if self.router is None:
            return
        route = md.route_of(metadata, self.metadata_mime)
        handler = self.router.find(FrameType.METADATA_PUSH, route) if route else None
        if handler is not None and route is not None:
            eager.start(handler.call(metadata, Request(route, metadata)), self._log_failure(route))

    # -- responder side --------------------------------------------------------------------

    def _on_request(
        self, buf: bytes, off: int, end: int, sid: int, ftype: int, flags: int, metadata: bytes, data: bytes, route: str | None
    ) -> None:
        """A whole request, read by the codec; ``route`` is what ``_routes`` held for its
        metadata (None: not seen yet, or no route)."""
        if route is None:
            try:
                route = md.route_of(metadata, self.metadata_mime) if metadata else None
            except FrameError as exc:
                if ftype != _FNF:
                    self._send(error_frame(sid, ErrorCode.INVALID, str(exc)))
                return
            if len(self._routes) < _ROUTE_CACHE_SIZE:
                self._routes[metadata] = route
        handler = self.router.find(ftype, route) if self.router is not None and route else None
        if handler is None:
            if ftype != _FNF:
                self._send(error_frame(sid, ErrorCode.REJECTED, f"no handler for route {route!r}"))
            return
        # most handlers take the data only: build their Request only for those that ask for it
        request = Request(route, metadata) if handler.wants_request else None  # type: ignore[arg-type]
        if ftype == _RR:
            self._respond(sid, handler, data, request, route)  # type: ignore[arg-type]
        elif ftype == _STREAM:
            outbound = Outbound(self, sid, parse_request_n(buf, off, end))
            self._streams[sid] = outbound
            outbound.start(self._call(handler, data, request))
        elif ftype == _CHANNEL:
            inbound = Inbound(self, sid, 64)
            inbound.on_next(data, bool(flags & FLAG_COMPLETE))
            outbound = Outbound(self, sid, parse_request_n(buf, off, end))
            if not inbound.done:
                self._send(request_n_frame(sid, 63))  # the first item came with the request
            self._streams[sid] = _Channel(inbound, outbound)
            outbound.start(self._call(handler, inbound, request))
        else:
            eager.start(handler.call(data, request), self._log_failure(route))  # type: ignore[arg-type]

    @staticmethod
    async def _call(handler: Handler, first: Any, request: Request | None) -> Any:
        """A stream handler's iterable: an async generator's, or what a coroutine returns."""
        result = handler.call(first, request)
        if hasattr(result, "__await__"):
            result = await result
        return result

    def _respond(self, sid: int, handler: Handler, data: bytes, request: Request | None, route: str) -> None:
        started: list[asyncio.Task[Any]] = []  # the task, when the handler suspended

        def done(result: Any, exc: BaseException | None) -> None:
            if started:
                if self._streams.get(sid) is not started[0]:
                    return  # canceled by the requester, or the connection ended
                del self._streams[sid]
            if self.error is not None:
                return
            if exc is None:
                try:
                    self._send_payload(sid, b"" if result is None else result, True)
                    return
                except TypeError:
                    exc = ApplicationError(f"handler for {route!r} returned {type(result).__name__}, not bytes")
            if not isinstance(exc, asyncio.CancelledError):
                if not isinstance(exc, RSocketError):
                    log.info("handler for %r failed: %s", route, exc, exc_info=exc)
                self.send_error(sid, exc)

        task = eager.start(handler.call(data, request), done)
        if task is not None:
            started.append(task)
            self._streams[sid] = task

    @staticmethod
    def _log_failure(route: str) -> Callable[[Any, BaseException | None], None]:
        def done(result: Any, exc: BaseException | None) -> None:
            if exc is not None and not isinstance(exc, asyncio.CancelledError):
                log.warning("handler for %r failed: %s", route, exc, exc_info=exc)

        return done

