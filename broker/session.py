"""One RSocket connection as the relay sees it: its state, its streams, its frames.

A session never runs an RSocket endpoint. It reads the 6-byte header of each frame,
looks the stream up, rewrites the stream id and appends the frame's bytes to the
destination session's output. Payload data is never decoded; metadata is read only
when a stream opens (to find the route) and on SETUP / METADATA_PUSH.

Rules this module keeps:
* Every stream the broker accepts ends, for both sides, in a terminal frame: a response,
  a completion, an ERROR, or a CANCEL — including when either side's connection is lost.
* Streams opened by the peer have odd ids (it is the client); streams the broker opens
  towards the peer (as requester on behalf of someone else) have even ids. So a provider
  may also be a requester on the same connection and the two never collide.
* Connection states and their transitions live in ``_TRANSITIONS``, nowhere else.

Transport subclasses (TCP, WebSocket) provide ``_write_out``, ``_close_transport``,
``pause_reading`` / ``resume_reading`` and call :meth:`Session.handle_frame` per frame.
"""

from __future__ import annotations

import enum
import itertools
import logging
import struct
from typing import TYPE_CHECKING, Any

from broker import metadata as md
from broker import metering, principal
from broker.principal import MARKER as PRINCIPAL_MARKER
from broker.tracing import PARENT_AT
from broker.logformat import conn_fields
from broker.frames import (
    FLAG_COMPLETE,
    FLAG_FOLLOWS,
    FLAG_IGNORE,
    FLAG_METADATA,
    FLAG_NEXT,
    FLAG_RESPOND,
    HEADER_LENGTH,
    ErrorCode,
    FrameError,
    FrameType,
    cancel_frame,
    error_frame,
    header,
    keepalive_frame,
    metadata_push_frame,
    parse_error,
    parse_lease,
    parse_request_n,
    parse_setup,
    payload_frame,
    replace_metadata,
    request_data,
    request_frame,
)
from broker._hotpath import MAX_STREAM_ID
from broker.hotpath import (
    OPEN_CACHE_SIZE,
    RouteRules,
    Stream,
    forward,
    keep,
    relay_frame,
    request_metadata,
    stamp_parent,
    trace_entry,
    trace_stream,
    watch,
)
from broker.limits import LimitExceeded, exceeded

if TYPE_CHECKING:
    from broker.relay import Broker

log = logging.getLogger("rsbroker.session")

_SID = struct.Struct(">I")

_PAYLOAD = FrameType.PAYLOAD
_REQUEST_N = FrameType.REQUEST_N
_CANCEL = FrameType.CANCEL
_ERROR = FrameType.ERROR
_APP_ERROR = ErrorCode.APPLICATION_ERROR
_RR = FrameType.REQUEST_RESPONSE
_FNF = FrameType.REQUEST_FNF
_STREAM = FrameType.REQUEST_STREAM
_CHANNEL = FrameType.REQUEST_CHANNEL
_REQUESTS = frozenset((_RR, _FNF, _STREAM, _CHANNEL))
#: the longest request metadata a connection's route cache keeps (``open_cache``): routing plus
#: a little more; a client sending big blobs must not pin them in broker memory
OPEN_CACHE_MAX_KEY = 256
_KNOWN_TYPES = frozenset(int(t) for t in FrameType) - {FrameType.RESERVED, FrameType.EXT}
_ERROR_CODES = frozenset(int(c) for c in ErrorCode)

#: ERROR codes from a provider that mean something else than the application failing
_ERROR_OUTCOMES = {ErrorCode.REJECTED: metering.REJECTED, ErrorCode.CANCELED: metering.CANCELED}

#: What holding one fragment costs besides its bytes (bytes object header, list slot, a share
#: of its Stream), charged to max_request_metadata and max_reassembly_bytes so that a flood of
#: tiny fragments is bounded like a few big ones.
HELD_FRAGMENT_OVERHEAD = 128


class State(enum.Enum):
    AWAIT_SETUP = "await_setup"
    SERVING = "serving"
    CLOSED = "closed"


#: (state, event) -> next state. Anything missing is a bug, not a peer error.
_TRANSITIONS: dict[tuple[State, str], State] = {
    (State.AWAIT_SETUP, "setup_ok"): State.SERVING,
    (State.AWAIT_SETUP, "close"): State.CLOSED,
    (State.SERVING, "close"): State.CLOSED,
    (State.CLOSED, "close"): State.CLOSED,
}

_session_ids = itertools.count(1)


class Session:
    """Transport-independent relay state of one connection.

    Slotted, as are its transport subclasses: an idle device is mostly this object, and a
    ``__dict__`` per connection cost about 1.5 KiB of the issue 13 budget (10 KiB per idle
    WebSocket device). An attribute another part sets on a session must be listed here.
    """

    __slots__ = (
        "broker", "id", "peer", "state", "streams", "next_local_id", "metadata_mime", "data_mime",
        "registration", "principal", "tls_principal", "keepalive_ms", "max_lifetime_ms",
        "lease_enabled", "lease_remaining", "lease_expires", "lease_granted_until", "outstanding",
        "failures", "connected_at", "_last_recv", "frames_in", "frames_out", "close_reason",
        "_blocked_sources", "write_paused", "read_paused", "self_blocked", "closing", "is_link",
        "wants_topology", "frame_limit", "reassembling", "reassembly_bytes", "transport_name",
        "wire_out", "timed_out", "open_cache", "open_gen", "measure_rtt", "rtt", "rtt_at",
        # links.Links keeps inbound sessions between SETUP and proof in a WeakKeyDictionary
        "__weakref__",
    )

    #: what ``transport_name`` starts as (the admin API and metrics show it)
    plain_name = "?"
    #: a local connection is never a remote provider and is always reachable (registry.Provider)
    is_remote = False
    available = True
    #: parity of the stream ids the *peer* opens: 1 (odd) when the peer is the client, which
    #: every accepted connection is; an outbound broker link, where we are the client, has 0
    peer_parity = 1
    #: a connection this node opened (a broker link), not one a client opened to it
    outbound = False

    def __init__(self, broker: "Broker", peer: tuple[Any, ...] | None) -> None:
        self.broker = broker
        self.transport_name = self.plain_name
        #: output buffer of a length-prefixed transport, where ``broker.hotpath`` appends relayed
        #: frames itself (coalescing); None: frames go through :meth:`forward` one by one
        self.wire_out: bytearray | None = None
        #: closed by the broker because the peer went silent: its streams end as 'timeout'
        self.timed_out = False
        self.id = next(_session_ids)
        self.peer = peer
        self.state = State.AWAIT_SETUP
        self.streams: dict[int, Stream] = {}
        self.next_local_id = 2
        self.metadata_mime = md.COMPOSITE_MIME
        self.data_mime = ""
        self.registration: md.Registration | None = None
        self.principal: Any = None
        self.tls_principal: Any = None
        self.keepalive_ms = 0
        self.max_lifetime_ms = 0
        self.lease_enabled = False
        self.lease_remaining = 0
        self.lease_expires = 0.0
        #: when the LEASE this broker granted to the peer (if it negotiated leases) runs out
        self.lease_granted_until = 0.0
        #: streams on which this session is the provider, for least-outstanding picking
        self.outstanding = 0
        #: APPLICATION_ERRORs it answered in a row, as a provider (outlier ejection)
        self.failures = 0
        #: peak-EWMA round trip of the requests it answered, as a provider, and when it was last
        #: sampled (broker.latency: what p2c weighs; 0.0 until its first answer)
        self.rtt = 0.0
        self.rtt_at = 0.0
        #: the hot path samples its round trips (``rtt``): set by the registry once it provides a
        #: ``p2c`` service (and kept), so no other provider pays for the sampling
        self.measure_rtt = False
        now = broker.clock()
        self.connected_at = now
        self.last_recv = now
        self.frames_in = 0
        self.frames_out = 0
        self.close_reason = ""
        #: sessions that paused reading because this one could not take more output
        self._blocked_sources: set[Session] = set()
        self.write_paused = False
        self.read_paused = False
        #: reading is paused (also) because this peer's own output cannot drain
        self.self_blocked = False
        #: set once the broker decided to close; inbound frames after it are not processed
        self.closing = False
        #: an inbound broker link from another node: its requests go to local providers only
        self.is_link = False
        #: the client asked for topology pushes (cluster-aware clients)
        self.wants_topology = False
        #: largest frame accepted now: small until SETUP is accepted (the peer is unknown); the
        #: hot path reads it for every TCP frame
        self.frame_limit = min(broker.settings.max_setup_frame_size, broker.settings.max_frame_size)
        #: fragmented requests whose metadata is incomplete, oldest first, and the bytes they hold
        self.reassembling: dict[int, Stream] = {}
        self.reassembly_bytes = 0
        #: request metadata (a traced request's route key) -> (route, service, meter, rules), rules
        #: being what the traffic rules do to its repeats (``hotpath.RouteRules``, None: nothing)
        #: this connection may open without the full checks, valid while open_gen is current
        #: (``broker.hotpath``'s ``_open``; filled by _remember_route); None until a request earns an entry
        self.open_cache: dict[bytes, tuple[str, str, metering.RouteMeter, RouteRules | None]] | None = None
        self.open_gen = -1

    # -- identity used by the registry ----------------------------------------------------

    @property
    def instance(self) -> str:
        return self.registration.instance if self.registration else f"conn-{self.id}"

    @property
    def weight(self) -> int:
        return self.registration.weight if self.registration else 1

    @property
    def provider_label(self) -> str:
        """How errors name this connection when it was the provider of a stream."""
        return f"provider '{self.instance}'"

    @property
    def target(self) -> "Session":
        """Where requests picked for this provider go: the connection itself."""
        return self

    @property
    def tags(self) -> dict[str, str]:
        return self.registration.tags if self.registration else {}

    @property
    def balance_load(self) -> int:
        return self.outstanding

    @property
    def peer_text(self) -> str:
        if not self.peer:
            return "?"
        return f"{self.peer[0]}:{self.peer[1]}"

    # -- transport hooks (overridden) -----------------------------------------------------

    def forward(self, sid: bytes, buf: Any, off: int, end: int) -> None:
        """Queue the frame ``buf[off:end]`` with its stream id replaced by ``sid``."""
        raise NotImplementedError

    def send_frame(self, frame: bytes) -> None:
        """Queue a frame the broker made itself."""
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def _close_transport(self) -> None:
        raise NotImplementedError

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError

    # -- flow control between sessions ----------------------------------------------------

    def _blocked_by(self, dest: "Session") -> None:
        """``dest`` cannot take more output: stop reading from this session until it can.

        ``dest`` may be this session itself: answers the broker makes (KEEPALIVE echoes,
        ERRORs) and streams a provider opens to its own services are output too, and a peer
        that asks for them without reading must not make the broker queue them without bound.
        """
        dest._blocked_sources.add(self)
        if dest is self:
            self.self_blocked = True
        if not self.read_paused:
            self.read_paused = True
            self.pause_reading()

    def on_write_resumed(self) -> None:
        self.write_paused = False
        blocked, self._blocked_sources = self._blocked_sources, set()
        for source in blocked:
            source.on_write_resumed_source()

    @property
    def last_recv(self) -> float:
        """When the peer was last heard from, for keepalive enforcement.

        While the broker is not reading from the peer because *another* connection cannot
        take more (back-pressure), the peer's keepalives sit unread in socket buffers: that
        silence is the broker's doing, so such a session counts as heard from now, and
        resuming gives it a fresh lifetime. A peer that does not read its own output is not
        excused: if it stays that way past its max lifetime, it is dropped.
        """
        if self.read_paused and not self.self_blocked:
            return self.broker.clock()
        return self._last_recv

    @last_recv.setter
    def last_recv(self, when: float) -> None:
        self._last_recv = when

    # -- state ------------------------------------------------------------------------------

    def _transition(self, event: str) -> None:
        self.state = _TRANSITIONS[(self.state, event)]

    def fail(self, code: int, message: str, level: int = logging.WARNING) -> None:
        """Protocol error: tell the peer why, then close the connection."""
        if self.state is State.CLOSED or self.closing:
            return
        log.log(level, "closing connection %s from %s: %s (0x%x)", self.id, self.peer_text, message, code, extra=conn_fields(self))
        self.broker.stats["protocol_errors"] += 1
        self.close_reason = message
        self.send_frame(error_frame(0, code, message))
        self.flush()
        self.close()

    def refuse_oversized(self, length: int) -> None:
        """A frame (or its length prefix) is past :attr:`frame_limit`: refuse it before buffering it."""
        self.broker.stats["oversized_frames"] += 1
        before = self.state is State.AWAIT_SETUP
        limit = "max_setup_frame_size" if before else "max_frame_size"
        message = (
            f"frame of {length} bytes exceeds the maximum frame size of {self.frame_limit} bytes"
            f"{' before SETUP' if before else ''} ({limit})"
        )
        self.fail_on(LimitExceeded(limit, message))

    def fail_on(self, exc: FrameError) -> None:
        """:meth:`fail` for a parser's error, counting it when it is a limit."""
        if isinstance(exc, LimitExceeded):
            self.broker.limit_hit(exc.limit)
            if exc.limit == "max_setups_per_s":  # thousands a second in a storm: counted, not logged
                self.fail(exc.code, str(exc), logging.DEBUG)
                return
        self.fail(exc.code, str(exc))

    def close(self) -> None:
        """Close the transport; :meth:`connection_closed` runs when it is gone."""
        if self.state is State.CLOSED or self.closing:
            return
        self.closing = True
        self._close_transport()

    # -- inbound frames ---------------------------------------------------------------------

    def handle_frame(self, buf: Any, off: int, end: int) -> None:
        """Relay or act on the frame at ``buf[off:end]`` (header included, no length prefix)."""
        relay_frame(self, buf, off, end)

    def other_frame(self, buf: Any, off: int, end: int, sid: int, ftype: int, type_flags: int) -> None:
        """A frame the hot path (``broker.hotpath.relay_frame``) did not relay: requests,
        connection frames, late frames for ended streams. ``sid`` is the raw 32-bit field."""
        if self.state is State.AWAIT_SETUP:
            self._before_setup(buf, off, end, ftype)
            return
        if ftype in _REQUESTS:
            self._open_stream(buf, off, end, sid & 0x7FFFFFFF, ftype, type_flags)
        elif sid and (ftype == _PAYLOAD or ftype == _REQUEST_N or ftype == _CANCEL or ftype == _ERROR):
            # A late frame for a stream that already ended (e.g. crossed a CANCEL): ignore.
            self.broker.stats["frames_for_unknown_streams"] += 1
        else:
            self._connection_frame(buf, off, end, sid, ftype, type_flags)
        if self.write_paused and not self.closing:
            self._blocked_by(self)  # our answers to this peer are piling up: read no more for now

    def _connection_frame(self, buf: Any, off: int, end: int, sid: int, ftype: int, type_flags: int) -> None:
        if ftype == FrameType.KEEPALIVE:
            if end - off < HEADER_LENGTH + 8:
                self.fail(ErrorCode.CONNECTION_ERROR, "KEEPALIVE frame is shorter than its 8-byte position field")
            elif type_flags & FLAG_RESPOND:
                self.send_frame(keepalive_frame(False, bytes(buf[off + HEADER_LENGTH + 8 : end])))
        elif ftype == FrameType.LEASE:
            self._on_lease(buf, off, end)
        elif ftype == FrameType.METADATA_PUSH:
            self._on_metadata_push(buf, off, end, type_flags)
        elif ftype == FrameType.ERROR and sid == 0:
            try:
                code, message = parse_error(buf, off, end)
            except FrameError as exc:
                code, message = ErrorCode.CONNECTION_ERROR, str(exc)
            log.info("connection %s closed by peer with error 0x%x: %s", self.id, code, message, extra=conn_fields(self))
            self.close_reason = f"peer error 0x{code:x}: {message}"
            self.close()
        elif ftype == FrameType.SETUP:
            self.fail(ErrorCode.CONNECTION_ERROR, "SETUP received twice on one connection")
        elif ftype == FrameType.RESUME:
            self.fail(ErrorCode.REJECTED_RESUME, "resumption is not supported by this broker")
        elif ftype in _KNOWN_TYPES:
            self.fail(ErrorCode.CONNECTION_ERROR, f"frame type {FrameType(ftype).name} is not valid on stream {sid}")
        elif type_flags & FLAG_IGNORE:
            self.broker.stats["ignored_frames"] += 1
        else:
            self.fail(ErrorCode.CONNECTION_ERROR, f"unknown frame type 0x{ftype:02x} without the ignore flag")

    # -- SETUP --------------------------------------------------------------------------

    def _before_setup(self, buf: Any, off: int, end: int, ftype: int) -> None:
        if ftype == FrameType.RESUME:
            self.fail(ErrorCode.REJECTED_RESUME, "resumption is not supported by this broker")
            return
        if ftype != FrameType.SETUP:
            name = FrameType(ftype).name if ftype in _KNOWN_TYPES or ftype == FrameType.EXT else f"0x{ftype:02x}"
            self.fail(ErrorCode.INVALID_SETUP, f"the first frame must be SETUP, got {name}")
            return
        try:
            setup = parse_setup(bytes(buf[off:end]), 0, end - off)
            self._accept_setup(setup)
        except FrameError as exc:
            self.broker.meter.setups_refused[ErrorCode(exc.code).name if exc.code in _ERROR_CODES else "OTHER"] += 1
            self.fail_on(exc)
        else:
            self.broker.meter.setups_accepted += 1

    def _accept_setup(self, setup: Any) -> None:
        if setup.major != 1:
            raise FrameError(
                f"protocol version {setup.major}.{setup.minor} is not supported (this broker speaks 1.x)",
                ErrorCode.UNSUPPORTED_SETUP,
            )
        if setup.keepalive_ms <= 0 or setup.max_lifetime_ms <= 0:
            raise FrameError("keepalive interval and max lifetime must be positive", ErrorCode.INVALID_SETUP)
        if setup.metadata_mime not in (md.COMPOSITE_MIME, md.ROUTING_MIME):
            raise FrameError(
                f"metadata MIME type '{setup.metadata_mime}' is not supported; use "
                f"'{md.COMPOSITE_MIME}' (or '{md.ROUTING_MIME}' for routing only)",
                ErrorCode.UNSUPPORTED_SETUP,
            )
        self.metadata_mime = setup.metadata_mime
        self.data_mime = setup.data_mime
        self.keepalive_ms = setup.keepalive_ms
        self.max_lifetime_ms = setup.max_lifetime_ms
        registration = None
        token = None
        link = None
        settings = self.broker.settings
        if setup.metadata and setup.metadata_mime == md.COMPOSITE_MIME:
            for mime, content in md.iter_composite(setup.metadata, ErrorCode.INVALID_SETUP, settings.max_metadata_entries):
                if mime == md.REGISTER_MIME and registration is None:
                    registration = md.Registration.from_json(content, f"conn-{self.id}", limits=settings.name_limits)
                elif mime == md.AUTH_MIME and token is None:
                    token = content
                elif mime == md.LINK_MIME and link is None:
                    link = content
                elif mime == md.TOPOLOGY_MIME:
                    self.wants_topology = True
        if link is None:
            self.broker.check_setup_rate()  # broker links are exempt: a storm must not cut the cluster
        if link is not None:
            if registration is not None:
                raise FrameError("a broker link cannot register services", ErrorCode.INVALID_SETUP)
            self.principal = self.broker.authenticate_link(self, link)
            self.is_link = True
        else:
            self.principal = self.broker.authenticate(self, token)
        if registration is not None:
            self.broker.check_registration(self, registration)
        self._transition("setup_ok")
        self.frame_limit = settings.max_frame_size
        self.lease_enabled = setup.lease
        if registration is not None:
            self.broker.register(self, registration)
        self.broker.on_setup(self)

    # -- streams ------------------------------------------------------------------------

    def _open_stream(self, buf: Any, off: int, end: int, sid: int, ftype: int, type_flags: int) -> None:
        if not sid & 1:
            self.fail(
                ErrorCode.CONNECTION_ERROR,
                f"stream id {sid} has server parity (even); requests from a client use odd stream ids",
            )
            return
        if sid in self.streams:
            self.fail(ErrorCode.CONNECTION_ERROR, f"stream id {sid} is already in use")
            return
        limit = self.broker.settings.max_streams
        if len(self.streams) - self.outstanding >= limit:  # only streams this peer opened count
            self.broker.limit_hit("max_streams")
            self._reject(sid, ftype, ErrorCode.REJECTED, f"too many concurrent streams on this connection (limit {limit})")
            return
        try:
            metadata, has_data = request_metadata(buf, off, end)
        except FrameError as exc:
            self.fail(exc.code, str(exc))
            return
        st = Stream(ftype, self, sid)
        if type_flags & FLAG_FOLLOWS and not has_data:
            # The metadata may continue in the next fragment: hold the frames until it ends.
            st.pending = []
            st.started = self.broker.clock()
            self.streams[sid] = st
            self.reassembling[sid] = st
            self.broker.watch_reassembly(self)
            self._hold_fragment(st, bytes(buf[off:end]))
            return
        dest = self._route_stream(st, metadata, type_flags)
        if dest is None:
            return
        if self.metadata_mime == md.ROUTING_MIME or self.broker.forward_principal:
            # Every provider and broker link reads composite metadata (registering needs it):
            # bare routing tags read as composite could name another route than the one checked.
            # Services that opted in also learn who asked (broker.principal), in an entry
            # appended after the others: a trace entry keeps its offset.
            composite = principal.outgoing(self, st.route, metadata)
            if composite is not metadata:
                buf = replace_metadata(buf, off, end, composite)
                off, end = 0, len(buf)
        if st.trace is not None:  # the provider's span becomes a child of this hop's (broker.tracing)
            buf = stamp_parent(buf, off, end, st.trace_at + PARENT_AT, st.span)
            off, end = 0, len(buf)
        forward(dest, st.prov_sid, buf, off, end)
        st.meter.bytes_in += end - off  # type: ignore[union-attr]
        if st.retry is not None and not type_flags & FLAG_FOLLOWS:
            keep(self.broker.traffic.state, st, buf, off, end)  # kept whole: it may be sent again
        if dest.write_paused:
            self._blocked_by(dest)

    def _pending_frame(self, st: Stream, buf: Any, off: int, end: int, ftype: int, type_flags: int) -> None:
        """A frame for a fragmented request whose route is not known yet."""
        assert st.pending is not None
        if ftype != _PAYLOAD:
            # CANCEL or ERROR before the request was complete: the provider never saw it.
            self._drop_reassembly(st)
            return
        try:
            _, has_data = request_metadata(buf, off, end)
        except FrameError as exc:
            self.fail(exc.code, str(exc))
            return
        if not self._hold_fragment(st, bytes(buf[off:end])):
            return
        if has_data or not type_flags & FLAG_FOLLOWS:
            frames = st.pending
            self._drop_reassembly(st)
            # Joined once, now that it is complete: linear however many fragments it came in.
            whole = b"".join(request_metadata(frame, 0, len(frame))[0] for frame in frames)
            # The last fragment decides whether the request is complete.
            dest = self._route_stream(st, whole, type_flags)
            if dest is None:
                return
            if self.metadata_mime == md.ROUTING_MIME or self.broker.forward_principal:
                composite = principal.outgoing(self, st.route, whole)
                if composite is not whole:
                    frames = self._as_composite(st, frames, composite)
            if st.trace is not None:  # the provider's span becomes a child of this hop's (broker.tracing)
                frames = self._stamp_fragments(st.trace_at + PARENT_AT, st.span, frames)
            for frame in frames:
                forward(dest, st.prov_sid, frame, 0, len(frame))
                st.meter.bytes_in += len(frame)  # type: ignore[union-attr]
            if dest.write_paused:
                self._blocked_by(dest)

    @staticmethod
    def _stamp_fragments(parent_at: int, span: int, frames: list[bytes]) -> list[Any]:
        """The fragments of a traced request with this hop's span as the parent id
        (``stamp_parent`` on the fragment whose metadata holds its 16 digits). Digits split
        across two fragments are left as they came: the provider's span is then a sibling of
        this hop's, as it would be without the rewrite."""
        start = 0
        for i, frame in enumerate(frames):
            length = len(request_metadata(frame, 0, len(frame))[0])
            if start <= parent_at and parent_at + 16 <= start + length:
                return [*frames[:i], stamp_parent(frame, 0, len(frame), parent_at - start, span), *frames[i + 1 :]]
            start += length
        return frames

    @staticmethod
    def _as_composite(st: Stream, frames: list[bytes], meta: bytes) -> list[bytes]:
        """A fragmented request re-framed with the composite metadata ``meta`` (bare routing
        re-encoded, or a principal entry added): the whole metadata in the request frame,
        then the rest of the last fragment (its data and flags) as one PAYLOAD fragment when
        there is any. Only the last fragment carries data: the metadata was incomplete until it."""
        first, last = frames[0], frames[-1]
        flags = header(last)[2]
        data = request_data(last, 0, len(last))
        rest = bool(data) or bool(flags & FLAG_FOLLOWS)
        initial_n = parse_request_n(first, 0, len(first)) if st.kind == _STREAM or st.kind == _CHANNEL else 0
        complete = st.kind == _CHANNEL and bool(flags & FLAG_COMPLETE) and not rest
        out = [request_frame(st.kind, st.req_id, meta, b"", initial_n=initial_n, follows=rest, complete=complete)]
        if rest:
            out.append(
                payload_frame(
                    st.req_id,
                    data,
                    next_=bool(flags & FLAG_NEXT),
                    complete=bool(flags & FLAG_COMPLETE),
                    follows=bool(flags & FLAG_FOLLOWS),
                )
            )
        return out

    def _hold_fragment(self, st: Stream, frame: bytes) -> bool:
        """Keep one more fragment of a request whose metadata is incomplete, within the limits.

        Returns False when a limit refused the request (the requester has its ERROR).
        """
        assert st.pending is not None
        settings = self.broker.settings
        st.pending.append(frame)
        cost = len(frame) + HELD_FRAGMENT_OVERHEAD
        st.pending_bytes += cost
        self.reassembly_bytes += cost
        if len(st.pending) > settings.max_fragments:
            refusal = exceeded("max_fragments", settings.max_fragments, "", "request fragment count", ErrorCode.REJECTED)
        elif st.pending_bytes > settings.max_request_metadata:
            refusal = exceeded(
                "max_request_metadata", settings.max_request_metadata, "bytes", "fragmented request metadata", ErrorCode.REJECTED
            )
        elif self.reassembly_bytes > settings.max_reassembly_bytes:
            refusal = exceeded(
                "max_reassembly_bytes",
                settings.max_reassembly_bytes,
                "bytes",
                "unfinished fragmented requests on this connection",
                ErrorCode.REJECTED,
            )
        else:
            return True
        self.refuse_reassembly(st, refusal)
        return False

    def refuse_reassembly(self, st: Stream, refusal: LimitExceeded) -> None:
        """Give up an unfinished fragmented request: the requester gets ERROR, the limit is counted.
        Later fragments of it are counted as frames for an ended stream."""
        self._drop_reassembly(st)
        self.broker.limit_hit(refusal.limit)
        self._reject(st.req_id, st.kind, refusal.code, str(refusal))

    def _drop_reassembly(self, st: Stream) -> None:
        self.streams.pop(st.req_id, None)
        if self.reassembling.pop(st.req_id, None) is not None:
            self.reassembly_bytes -= st.pending_bytes
        st.pending = None
        st.pending_bytes = 0

    def expire_reassembly(self, now: float) -> None:
        """Refuse fragmented requests whose metadata did not complete within reassembly_timeout_s."""
        timeout = self.broker.settings.reassembly_timeout_s
        while self.reassembling:  # oldest first; only the expired ones are visited
            st = next(iter(self.reassembling.values()))
            if now - st.started <= timeout:
                break
            self.refuse_reassembly(
                st, exceeded("reassembly_timeout_s", timeout, "s", "time to complete a fragmented request", ErrorCode.REJECTED)
            )

    def _route_stream(self, st: Stream, metadata: bytes, last_flags: int) -> "Session | None":
        """Pick the provider of a new stream and enter it in both stream maps.

        Returns the session to forward the request's frame(s) to, or None when the stream
        was refused (the requester has its ERROR). ``last_flags`` are the flags of the
        request's last frame so far: they say whether more fragments follow.
        """
        broker = self.broker
        sid, ftype = st.req_id, st.kind
        try:
            resolved = broker.resolve(metadata, self.metadata_mime)
        except FrameError as exc:
            if isinstance(exc, LimitExceeded):
                broker.limit_hit(exc.limit)
            self._reject(sid, ftype, ErrorCode.INVALID, f"unreadable request metadata: {exc}")
            return None
        if resolved is None:
            self._reject(
                sid, ftype, ErrorCode.INVALID, f"request has no route: add '{md.ROUTING_MIME}' metadata naming 'service.method'"
            )
            return None
        route, service, trace_at = resolved
        meter = broker.meter.route(route, service)
        if metadata.find(PRINCIPAL_MARKER) >= 0 and not self.is_link:  # find: `in` costs an exception
            forgery = principal.forged(metadata, self.metadata_mime, broker.settings.max_metadata_entries)
            if forgery:
                self._reject(sid, ftype, ErrorCode.INVALID, forgery, meter)
                return None
        if broker.draining or broker.security.enabled or self.is_link:
            refusal = broker.refuse_request(self, route)
            if refusal:
                self._reject(sid, ftype, ErrorCode.REJECTED, refusal, meter)
                return None
        now = broker.clock()
        traffic = broker.traffic
        # rate limits, deadlines and retries; a link's requests met them at their edge
        rules = None if self.is_link else traffic.route_rules(self.principal, service, metadata, now)
        refusal = traffic.admit(rules, self.principal, service, now)
        if refusal:
            self._reject(sid, ftype, ErrorCode.REJECTED, refusal, meter)
            return None
        provider, why = broker.registry.pick(service, now, self.is_link, metadata, self.metadata_mime)
        if provider is None:
            self._reject(sid, ftype, ErrorCode.REJECTED, why, meter)
            return None
        dest: Session = provider.target
        pid = dest.next_local_id
        if pid > MAX_STREAM_ID or pid in dest.streams:
            pid = dest.allocate_local_id()
        else:
            dest.next_local_id = pid + 2
        st.route = route
        st.meter = meter
        st.opened_at = now
        if trace_at is not None and broker.tracer.spans_kept:  # this hop's span (broker.tracing)
            trace_stream(st, metadata, trace_at, provider)
        meter.inflight += 1
        st.prov = dest
        st.prov_id = pid
        st.prov_sid = _SID.pack(pid)
        self.streams[sid] = st
        dest.streams[pid] = st
        dest.outstanding += 1
        broker.stats["requests"] += 1
        if rules is not None and ftype == _RR:  # deadlines and retries (request-response only)
            watch(rules.state, st, rules.ms, rules.retries, now)
        if last_flags & FLAG_FOLLOWS:
            pass  # more fragments of the request follow; they arrive as PAYLOAD frames
        elif ftype == _FNF:
            st.in_done = st.out_done = True
            self._finish(st, metering.OK)
        elif ftype != _CHANNEL or last_flags & FLAG_COMPLETE:
            st.in_done = True
        if (
            not last_flags & FLAG_FOLLOWS
            and ftype != _FNF
            and service not in broker.forward_principal  # its frames are rewritten per request
        ):
            self._remember_route(metadata, route, service, meter, trace_at is not None, rules)
        return dest

    def _remember_route(
        self, metadata: bytes, route: str, service: str, meter: metering.RouteMeter, traced: bool, rules: RouteRules | None
    ) -> None:
        """Let the next request with these metadata bytes skip resolving and the access check.

        Called once a request was admitted by every check; the hot path's ``_open`` then does
        for a repeat only what varies per request: rate limits, the provider pick, a trace
        context, deadline and retry marks. So it is not called for fragmented requests and
        services that get the requester's principal entry (their frames are rewritten), and
        keeps only composite metadata (bare routing metadata is rewritten for providers) and
        small keys. A traced request is kept by its route key (``hotpath.trace_entry``: the
        metadata without the trace entry's content, which differs every time), as
        ``Broker.resolve`` keeps it. What the traffic rules do to its repeats is what they did to
        this request (``rules``, from ``TrafficRules.route_rules``; none for a broker link's,
        held to them at their edge): the buckets this principal spends on the service, the
        service's retries, and the deadline, which depends on the service's policy and the
        metadata's deadline entry only, so the key reads the same (the trace content is not an
        entry, whatever text it holds). The entry is tied to the broker's ``open_generation``: a changed
        access rule, service policy or rate limit, a sweep of principals' buckets, or draining,
        empties the cache on the next request, which then meets the full checks again; the
        principal is fixed for the connection's life.
        """
        if self.metadata_mime != md.COMPOSITE_MIME:
            return
        broker = self.broker
        if traced:
            metadata = trace_entry(metadata, broker.settings.max_metadata_entries)[0]
        if len(metadata) > OPEN_CACHE_MAX_KEY:
            return
        generation = broker.open_generation
        cache = self.open_cache
        if cache is None or self.open_gen != generation or len(cache) >= OPEN_CACHE_SIZE:
            cache = self.open_cache = {}
            self.open_gen = generation
        cache[metadata] = (route, service, meter, rules)

    def allocate_local_id(self) -> int:
        """The id of a new stream the broker opens towards this peer (even, or odd on an
        outbound link). Ids are 31 bits: a long-lived provider connection at 10k requests/s
        runs through 2^30 of them in about 30 hours, so they wrap to the first id of their
        parity and skip ids still in use, as rsocket-java's StreamIdSupplier does."""
        pid = self.next_local_id
        while True:
            if pid > MAX_STREAM_ID:
                pid = 2 - (pid & 1)
            if pid not in self.streams:
                break
            pid += 2
        self.next_local_id = pid + 2
        return pid

    def _reject(self, sid: int, ftype: int, code: int, message: str, meter: metering.RouteMeter | None = None) -> None:
        """Refuse a stream at once. A fire-and-forget has nobody to tell: count it and log it."""
        self.broker.stats["rejected"] += 1
        (meter or self.broker.meter.unrouted()).outcomes[metering.REJECTED] += 1
        if ftype == _FNF:
            self.broker.stats["fnf_dropped"] += 1
            log.info("dropped fire-and-forget on connection %s: %s", self.id, message, extra=conn_fields(self))
            return
        self.send_frame(error_frame(sid, code, message))

    def _requester_sent(self, st: Stream, ftype: int, type_flags: int) -> None:
        """Book-keeping after relaying a frame from the requester to the provider."""
        if ftype == _PAYLOAD:
            if type_flags & FLAG_FOLLOWS:
                return
            if st.kind != _CHANNEL:
                st.in_done = True  # last fragment of the request
                if st.kind == _FNF:
                    st.out_done = True
            elif type_flags & FLAG_COMPLETE:
                st.in_done = True
        elif ftype == _CANCEL or ftype == _ERROR:
            # the requester gave up (an ERROR from a requester cancels its channel too)
            st.out_done = True
            if st.kind != _CHANNEL or ftype == _ERROR:
                st.in_done = True
            if st.in_done:
                self._finish(st, metering.CANCELED)
            return
        else:
            return
        if st.in_done and st.out_done:
            self._finish(st, metering.OK)

    def _provider_sent(self, st: Stream, ftype: int, type_flags: int, buf: Any, off: int, end: int) -> None:
        """Book-keeping after relaying a frame from the provider to the requester, and the
        provider's outcome for outlier ejection (APPLICATION_ERROR fails, an answer heals)."""
        outcome = metering.OK
        if ftype == _PAYLOAD:
            if type_flags & FLAG_FOLLOWS:
                st.retry = st.kept = None  # the provider has begun to answer: never sent again
                return
            if type_flags & FLAG_COMPLETE or (st.kind == _RR and type_flags & FLAG_NEXT):
                st.out_done = True
                if self.failures:
                    self.broker.provider_outcome(self, st.route, True)
        elif ftype == _ERROR:
            st.in_done = st.out_done = True
            code = _SID.unpack_from(buf, off + HEADER_LENGTH)[0] if end - off >= HEADER_LENGTH + 4 else None
            outcome = _ERROR_OUTCOMES.get(code, metering.APPLICATION_ERROR) if code is not None else metering.APPLICATION_ERROR
            if code == _APP_ERROR and self.registration is not None:
                self.broker.provider_outcome(self, st.route, False)
        elif ftype == _CANCEL:
            st.in_done = True
        else:
            return
        if st.in_done and st.out_done:
            self._finish(st, outcome)

    def _finish(self, st: Stream, outcome: int) -> None:
        """End ``st`` on both sides; it is metered once, when it leaves its requester's map."""
        counted = st.req.streams.pop(st.req_id, None) is not None
        prov = st.prov
        if prov is not None and prov.streams.pop(st.prov_id, None) is not None:
            prov.outstanding -= 1
        if counted and st.meter is not None:
            now = self.broker.clock()
            st.meter.ended(outcome, st.opened_at, st.first_at, now)
            if st.trace is not None:
                self.broker.tracer.record(st, outcome, now)

    # -- connection-level frames ------------------------------------------------------------

    def _on_lease(self, buf: Any, off: int, end: int) -> None:
        if not self.lease_enabled:
            self.fail(ErrorCode.CONNECTION_ERROR, "LEASE received but the SETUP did not negotiate leases")
            return
        try:
            ttl_ms, count = parse_lease(buf, off, end)
        except FrameError as exc:
            self.fail(exc.code, str(exc))
            return
        self.lease_remaining = count
        self.lease_expires = self.broker.clock() + ttl_ms / 1000.0

    def _on_metadata_push(self, buf: Any, off: int, end: int, type_flags: int) -> None:
        if not type_flags & FLAG_METADATA:
            self.fail(ErrorCode.CONNECTION_ERROR, "METADATA_PUSH without the metadata flag")
            return
        metadata = bytes(buf[off + HEADER_LENGTH : end])
        settings = self.broker.settings
        if self.is_link:  # a link's handshake, or a push another node routed; never a registration
            self.broker.link_metadata_push(self, metadata, bytes(buf[off:end]))
            return
        try:
            if self.metadata_mime == md.COMPOSITE_MIME:
                entry = md.find_entry(metadata, md.REGISTER_MIME, ErrorCode.INVALID, settings.max_metadata_entries)
                if entry is not None:
                    registration = md.Registration.from_json(entry, self.instance, ErrorCode.INVALID, settings.name_limits)
                    self.broker.check_registration(self, registration)
                    self.broker.register(self, registration)
                    return
            route = md.route_of(metadata, self.metadata_mime, settings.max_metadata_entries)
        except FrameError as exc:
            # METADATA_PUSH has no stream to answer on, so a refusal ends the connection.
            # A denied re-registration is well-formed: say so, not "bad".
            if isinstance(exc, LimitExceeded):
                self.broker.limit_hit(exc.limit)
            reason = str(exc) if exc.code == ErrorCode.REJECTED or isinstance(exc, LimitExceeded) else f"bad METADATA_PUSH: {exc}"
            self.fail(ErrorCode.CONNECTION_ERROR, reason)
            return
        if route is None:
            self.broker.stats["ignored_frames"] += 1
            return
        refusal = self.broker.refuse_request(self, route)
        if not refusal and metadata.find(PRINCIPAL_MARKER) >= 0:
            refusal = principal.forged(metadata, self.metadata_mime, settings.max_metadata_entries)
        if refusal:
            log.info("dropped METADATA_PUSH from connection %s: %s", self.id, refusal, extra=conn_fields(self, route))
            self.broker.stats["rejected"] += 1
            return
        if self.metadata_mime == md.ROUTING_MIME:
            frame = metadata_push_frame(md.for_composite_peer(metadata, md.ROUTING_MIME))
        else:
            frame = bytes(buf[off:end])
        self.broker.push_metadata(self, route, frame)

    # -- teardown -------------------------------------------------------------------------

    def connection_closed(self) -> None:
        """The transport is gone: end every stream it took part in, leave the registry."""
        if self.state is State.CLOSED:
            return
        self._transition("close")
        self.broker.unregister(self)
        for st in list(self.streams.values()):
            if st.prov is None:
                continue
            if st.req is self:
                peer, peer_id = st.prov, st.prov_id
                outcome = metering.TIMEOUT if self.timed_out else metering.CANCELED
                if not (st.in_done and st.out_done):
                    peer.send_frame(cancel_frame(peer_id))
            else:
                outcome = metering.TIMEOUT if self.timed_out else metering.APPLICATION_ERROR
                peer, peer_id = st.req, st.req_id
                if st.retry is not None and not st.out_done and self.broker.traffic.retry(st):
                    continue  # sent to another provider (broker.traffic)
                if not st.out_done or not st.in_done:
                    reason = self.close_reason or "connection lost"
                    peer.send_frame(
                        error_frame(
                            peer_id, ErrorCode.APPLICATION_ERROR, f"{self.provider_label} went away ({reason})"
                        )
                    )
            st.in_done = st.out_done = True
            self._finish(st, outcome)
        self.streams.clear()
        self.reassembling.clear()
        self.reassembly_bytes = 0
        for source in list(self._blocked_sources):
            source.on_write_resumed_source()
        self._blocked_sources.clear()
        self.broker.remove_session(self)

    def on_write_resumed_source(self) -> None:
        """A destination this session was waiting for can take output again (or has gone): read again."""
        if self.read_paused and self.state is not State.CLOSED:
            self.read_paused = False
            self.self_blocked = False
            self._last_recv = self.broker.clock()
            self.resume_reading()

    def describe(self) -> dict[str, Any]:
        """What the admin API shows for this connection."""
        now = self.broker.clock()
        principal = self.principal
        return {
            "id": self.id,
            "transport": self.transport_name,
            "peer": self.peer_text,
            "state": self.state.value,
            "principal": getattr(principal, "name", None),
            "instance": self.registration.instance if self.registration else None,
            "services": list(self.registration.services) if self.registration else [],
            "streams": len(self.streams),
            "outstanding_as_provider": self.outstanding,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "lease": (
                {"remaining": self.lease_remaining, "expires_in_s": round(max(0.0, self.lease_expires - now), 3)}
                if self.lease_enabled
                else None
            ),
            "connected_s": round(now - self.connected_at, 3),
            "data_mime": self.data_mime,
        }

