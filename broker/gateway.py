"""The HTTP → RSocket gateway: ``/rpc/{route}`` on the ``--ws`` listener.

Rules of this module:

* The gateway is a client of the relay, not a second relay. Each HTTP request gets a
  :class:`GatewaySession`, a :class:`~broker.session.Session` with no socket: it is
  authenticated by ``Broker.authenticate`` (the SETUP path, so a bearer token is verified
  exactly as an RSocket client's, ``--jwt-max-ttl-s`` included; no token means protected
  mode) and its request enters ``Session.handle_frame`` as a frame a client sent. Route
  normalisation, access rules, limits, the registry, broker links to other nodes and every
  traffic rule apply because the request takes the one path every request takes.
* The session is in ``Broker.sessions`` while its HTTP request lasts, so drain, the
  per-source connection limit, token expiry and the admin API see it as a connection.
* Flow control is end to end: a stream is asked for ``STREAM_WINDOW`` items and for half a
  window more each time half a window has been written to (and drained by) the HTTP client;
  a client that goes away cancels the stream at the provider.

Conventions (README, "HTTP gateway"): the request's ``Content-Type`` travels as the
composite ``message/x.rsocket.mime-type.v0`` entry and comes back as the response's, unless
the provider's payload metadata names another; NDJSON lines are the payloads as sent
(a payload holding a newline is sent as a JSON string); SSE events carry one payload each.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any

from aiohttp import web

from broker import metadata as md
from broker.auth.metadata import encode_auth_metadata
from broker.auth.tls import peer_principal
from broker.frames import (
    FLAG_COMPLETE,
    FLAG_FOLLOWS,
    FLAG_NEXT,
    ErrorCode,
    FrameError,
    FrameType,
    cancel_frame,
    header,
    parse_error,
    request_data,
    request_frame,
    request_metadata,
    request_n_frame,
)
from broker.metering import RouteMeter
from broker.origins import OriginPolicy
from broker.relay import Broker
from broker.session import Session, State

log = logging.getLogger("rsbroker.gateway")

MIME_ENTRY = "message/x.rsocket.mime-type.v0"
#: items a stream may have in flight towards one HTTP client
STREAM_WINDOW = 32
#: how often a stream waiting for its provider checks that its HTTP client is still there, s
DISCONNECT_POLL_S = 0.5
#: ``Retry-After`` on a 503/429: long enough for a provider to (re)connect or a bucket to refill
RETRY_AFTER_S = 1
#: stream id of the one request a gateway session makes
_SID = 1


class Refusal(Exception):
    """A request the gateway refuses before the relay sees it, with the RSocket code it maps from."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def http_status(code: int, message: str) -> int:
    """The HTTP status of an RSocket error (table in the README)."""
    if code == ErrorCode.REJECTED:
        if message.startswith("access denied"):
            return 403
        if message.startswith("rate limit"):
            return 429
        return 503
    if code in (ErrorCode.REJECTED_SETUP, ErrorCode.INVALID_SETUP):
        return 401
    if code == ErrorCode.APPLICATION_ERROR:
        return 502
    if code == ErrorCode.INVALID:
        return 400
    if code == ErrorCode.CANCELED:
        return 504
    return 502


def error_response(code: int, message: str) -> web.Response:
    """``{"error": <RSocket error name>, "message": ...}`` with the mapped status."""
    status = http_status(code, message)
    headers = {}
    if status in (503, 429):
        headers["Retry-After"] = str(RETRY_AFTER_S)
    elif status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="rsbroker"'
    return web.json_response({"error": _name(code), "message": message}, status=status, headers=headers)


class GatewaySession(Session):
    """The relay's view of one HTTP request: a connection without a socket.

    Frames the relay sends it are decoded into events (:meth:`next_event`):
    ``("next", data, metadata, complete)``, ``("complete",)`` or ``("error", code, message)``.
    """

    __slots__ = ("events", "_waiter", "_parts", "_parts_bytes", "_writable")

    plain_name = "http"

    def __init__(self, broker: Broker, peer: Any) -> None:
        super().__init__(broker, peer)
        self.events: collections.deque[tuple[Any, ...]] = collections.deque()
        #: set when an event arrives (or the disconnect poll is due) while the handler waits
        self._waiter: asyncio.Future[None] | None = None
        #: fragments of a payload that is not complete yet, and their size
        self._parts: list[bytes] = []
        self._parts_bytes = 0
        self._writable = asyncio.Event()
        self._writable.set()

    def accept(self, auth_entry: bytes | None) -> None:
        """The SETUP path of an RSocket client, for the HTTP request's credentials."""
        self.principal = self.broker.authenticate(self, auth_entry)
        self._transition("setup_ok")
        # no keepalives over HTTP: the HTTP connection's own life bounds the session
        self.max_lifetime_ms = 2**31 - 1
        self.frame_limit = self.broker.settings.max_frame_size

    # -- what a client would send ----------------------------------------------------------

    async def send(self, frame: bytes) -> None:
        """Hand a frame to the relay as if read from a socket (waiting while back-pressured)."""
        await self._writable.wait()
        if self.state is State.SERVING and not self.closing:
            self.handle_frame(frame, 0, len(frame))

    # -- Session hooks: what the relay sends ----------------------------------------------

    def forward(self, sid: bytes, buf: Any, off: int, end: int) -> None:
        self._receive(bytes(buf[off:end]))

    def send_frame(self, frame: bytes) -> None:
        if self.state is not State.CLOSED:
            self._receive(frame)

    def _receive(self, frame: bytes) -> None:
        self.frames_out += 1
        _, ftype, flags = header(frame)
        if ftype == FrameType.ERROR:
            try:
                code, message = parse_error(frame, 0, len(frame))
            except FrameError as exc:
                code, message = ErrorCode.APPLICATION_ERROR, str(exc)
            self._event(("error", code, message))
        elif ftype == FrameType.PAYLOAD:
            self._payload(frame, flags)
        # REQUEST_N and CANCEL only flow on channels, which the gateway does not open

    def _payload(self, frame: bytes, flags: int) -> None:
        try:
            metadata, _ = request_metadata(frame, 0, len(frame))
            data = request_data(frame, 0, len(frame))
        except FrameError as exc:
            self._event(("error", ErrorCode.APPLICATION_ERROR, f"unreadable payload from the provider: {exc}"))
            return
        if flags & FLAG_FOLLOWS or self._parts:
            self._parts.append(data)
            self._parts_bytes += len(data)
            limit = self.broker.settings.max_reassembly_bytes
            if self._parts_bytes > limit:
                self.broker.limit_hit("max_reassembly_bytes")
                self._event(
                    ("error", ErrorCode.APPLICATION_ERROR, f"response exceeds max_reassembly_bytes ({limit} bytes)")
                )
                self.close()
                return
            if flags & FLAG_FOLLOWS:
                return
            data, self._parts, self._parts_bytes = b"".join(self._parts), [], 0
        if flags & FLAG_NEXT:
            self._event(("next", data, metadata, bool(flags & FLAG_COMPLETE)))
        elif flags & FLAG_COMPLETE:
            self._event(("complete",))

    def _event(self, event: tuple[Any, ...]) -> None:
        self.events.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_event(self, request: web.Request) -> tuple[Any, ...]:
        """The next event; ConnectionResetError once the HTTP client has gone.

        One future and one timer per wait, no task: the timer only makes the handler look
        at its HTTP connection every DISCONNECT_POLL_S while the provider is silent.
        """
        loop = self.broker.loop
        while not self.events:
            self._waiter = loop.create_future()
            poll = loop.call_later(DISCONNECT_POLL_S, self._wake)
            try:
                await self._waiter
            finally:
                poll.cancel()
                self._waiter = None
            transport = request.transport
            if not self.events and (transport is None or transport.is_closing()):
                raise ConnectionResetError("the HTTP client went away")
        return self.events.popleft()

    def flush(self) -> None:
        pass  # events are delivered as they come; there is no socket to write

    def _close_transport(self) -> None:
        self._writable.set()
        self.connection_closed()

    def pause_reading(self) -> None:
        self._writable.clear()

    def resume_reading(self) -> None:
        self._writable.set()

    def cancel(self) -> None:
        """The HTTP client went away: CANCEL the stream (if open) and leave."""
        if _SID in self.streams and self.state is State.SERVING:
            frame = cancel_frame(_SID)
            self.handle_frame(frame, 0, len(frame))
        self.close()

    def _reject(self, sid: int, ftype: int, code: int, message: str, meter: RouteMeter | None = None) -> None:
        """As every session's, but a refused fire-and-forget is told too: HTTP has an answer for it."""
        super()._reject(sid, ftype, code, message, meter)
        if ftype == FrameType.REQUEST_FNF:
            self._event(("error", code, message))


def _request_metadata(request: web.Request, content_type: str | None) -> bytes:
    """Routing, data MIME type and deadline entries of ``request``; Refusal(INVALID) when unusable."""
    try:
        meta = md.composite_entry(md.ROUTING_MIME, md.routing(request.match_info["route"]))
    except ValueError as exc:
        raise Refusal(ErrorCode.INVALID, f"bad route: {exc}") from None
    if content_type:
        meta += md.composite_entry(MIME_ENTRY, content_type.encode("ascii", "replace"))
    deadline = request.headers.get("RSBroker-Deadline-Ms")
    if deadline is not None:
        if not deadline.strip().isdigit() or len(deadline.strip()) > 9:
            raise Refusal(ErrorCode.INVALID, "RSBroker-Deadline-Ms must be a whole number of milliseconds")
        meta += md.composite_entry(md.DEADLINE_MIME, deadline.strip().encode("ascii"))
    return meta


def _response_type(metadata: bytes, fallback: str) -> str:
    """The provider's ``mime-type`` entry when it sent one, else the request's type."""
    if metadata:
        try:
            entry = md.find_entry(metadata, MIME_ENTRY)
        except FrameError:
            entry = None
        if entry:
            return entry.decode("ascii", "replace")
    return fallback


class Gateway:
    """The ``/rpc/{route}`` handlers of one node."""

    def __init__(self, broker: Broker, origins: OriginPolicy) -> None:
        self.broker = broker
        self.origins = origins
        #: HTTP answers by status, exported as rsbroker_gateway_responses_total{status}
        self.responses: collections.Counter[int] = collections.Counter()
        broker.gateway = self

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/rpc/{route}", self.post)
        app.router.add_get("/rpc/{route}", self.get)

    def _answer(self, response: web.StreamResponse) -> web.StreamResponse:
        self.responses[response.status] += 1
        return response

    def _session(self, request: web.Request) -> GatewaySession | web.Response:
        """An authenticated session for ``request``, or the HTTP refusal."""
        broker = self.broker
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        local = transport.get_extra_info("sockname") if transport else None
        refusal = self.origins.refusal(request.headers.get("Origin"), str(local[0]) if local else None)
        if refusal:
            broker.stats["ws_origins_refused"] += 1
            return web.json_response({"error": "FORBIDDEN_ORIGIN", "message": refusal}, status=403)
        refusal = broker.admit(peer)
        if refusal:
            return error_response(ErrorCode.REJECTED, refusal)
        session = GatewaySession(broker, peer)
        if transport is not None and transport.get_extra_info("sslcontext") is not None:
            session.transport_name = "https"
            session.tls_principal = peer_principal(transport)
        auth = request.headers.get("Authorization")
        entry = None
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return error_response(ErrorCode.REJECTED_SETUP, "authentication failed: send 'Authorization: Bearer <JWT>'")
            entry = encode_auth_metadata("bearer", token.strip().encode("utf-8", "replace"))
        try:
            session.accept(entry)
        except FrameError as exc:
            return error_response(exc.code, str(exc))
        broker.add_session(session)
        return session

    async def post(self, request: web.Request) -> web.StreamResponse:
        """Request-response, or fire-and-forget with ``Prefer: respond-async``."""
        session = self._session(request)
        if isinstance(session, web.Response):
            return self._answer(session)
        try:
            limit = self.broker.settings.max_frame_size - 1024  # room for header and metadata
            if request.content_length is not None and request.content_length > limit:
                return self._answer(_too_large(limit))
            body = await request.content.read(limit + 1)
            if len(body) > limit:
                return self._answer(_too_large(limit))
            ctype = request.headers.get("Content-Type", "application/octet-stream")
            meta = _request_metadata(request, ctype)
            if "respond-async" in request.headers.get("Prefer", ""):
                await session.send(request_frame(FrameType.REQUEST_FNF, _SID, meta, body))
                if session.events:
                    _, code, message = session.events.popleft()
                    return self._answer(error_response(code, message))
                return self._answer(web.Response(status=202))
            await session.send(request_frame(FrameType.REQUEST_RESPONSE, _SID, meta, body))
            event = await session.next_event(request)
            if event[0] == "error":
                return self._answer(error_response(event[1], event[2]))
            data, metadata = (event[1], event[2]) if event[0] == "next" else (b"", b"")
            return self._answer(web.Response(body=data, headers={"Content-Type": _response_type(metadata, ctype)}))
        except Refusal as exc:
            return self._answer(error_response(exc.code, exc.message))
        except ConnectionError:
            return web.Response(status=499)  # the client is gone; nobody reads this
        finally:
            session.cancel()

    async def get(self, request: web.Request) -> web.StreamResponse:
        """Request-stream as Server-Sent Events or NDJSON, by the ``Accept`` header."""
        accept = request.headers.get("Accept", "")
        sse = "text/event-stream" in accept
        if not sse and "application/x-ndjson" not in accept:
            return self._answer(
                error_response(ErrorCode.INVALID, "GET /rpc/{route} streams: send 'Accept: text/event-stream' or 'Accept: application/x-ndjson'")
            )
        session = self._session(request)
        if isinstance(session, web.Response):
            return self._answer(session)
        try:
            data = request.query.get("data", "").encode("utf-8")
            meta = _request_metadata(request, request.headers.get("Content-Type"))
            await session.send(request_frame(FrameType.REQUEST_STREAM, _SID, meta, data, initial_n=STREAM_WINDOW))
            event = await session.next_event(request)
            if event[0] == "error":
                return self._answer(error_response(event[1], event[2]))
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream" if sse else "application/x-ndjson", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            self.responses[200] += 1
            written = 0
            while True:
                if event[0] == "next":
                    await response.write(_sse(event[1]) if sse else _ndjson(event[1]))  # waits while the client lags
                    written += 1
                    if written % (STREAM_WINDOW // 2) == 0 and not event[3]:
                        await session.send(request_n_frame(_SID, STREAM_WINDOW // 2))
                    if event[3]:
                        break
                elif event[0] == "complete":
                    break
                else:
                    body = json.dumps({"error": _name(event[1]), "message": event[2]})
                    await response.write(f"event: error\ndata: {body}\n\n".encode() if sse else body.encode() + b"\n")
                    break
                event = await session.next_event(request)
            await response.write_eof()
            return response
        except Refusal as exc:
            return self._answer(error_response(exc.code, exc.message))
        except ConnectionError:
            return web.Response(status=499)  # the client is gone; nobody reads this
        finally:
            session.cancel()


def _too_large(limit: int) -> web.Response:
    return web.json_response(
        {"error": "REJECTED", "message": f"request body exceeds max_frame_size less 1024 bytes of framing ({limit} bytes)"},
        status=413,
    )


def _name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"0x{code:x}"


def _sse(data: bytes) -> bytes:
    text = data.decode("utf-8", "replace")
    return "".join(f"data: {line}\n" for line in text.split("\n")).encode() + b"\n"


def _ndjson(data: bytes) -> bytes:
    if b"\n" in data:
        return json.dumps(data.decode("utf-8", "replace")).encode() + b"\n"
    return data + b"\n"
