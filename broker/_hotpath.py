"""The relay's per-frame hot path in plain Python: the single source of truth.

``broker/_hotpath_c.pyx`` is a compiled twin with the same behaviour, frame for frame and
error message for error message; ``broker.hotpath`` picks one at import (the compiled one
unless ``RSBROKER_NO_EXTENSIONS`` is set or it was not built). Both run the same tests: the
Hypothesis tests in ``tests/relay/test_parsers_fuzz.py`` hold each to the readable reference
parsers in ``broker.frames`` and to each other, and CI runs the relay tests once per module.

What lives here, and nothing else:

* :func:`read_frames` — TCP framing: split a received chunk at its 3-byte length prefixes
  and relay each complete frame (the reference is ``frames.split_frames``);
* :func:`relay_frame` — read the 6-byte header (reference ``frames.header``), look the stream
  up, rewrite its id and queue the frame on the other side, with the stream book-keeping and
  the route metering (``broker.metering``) of the commonest frames; everything else goes to
  ``Session.other_frame``;
* :class:`Stream` — the record of one relayed stream, and :func:`_open`, which opens a
  request-response, stream or channel whose metadata the connection sent before from its route
  cache (``Session.open_cache``), traced or under traffic rules alike; anything unusual goes to
  ``Session.other_frame``;
* the traffic rules' per-request work (``broker.traffic`` owns the rules and their state):
  :func:`spend` of a rate limit's buckets (:class:`Bucket`), :func:`watch` of a request's
  deadline and retry marks (on the node's :class:`TrafficState`), :func:`sweep` of the answered
  ones out of a deadline FIFO, :func:`keep` of its frame for a retry; :class:`RouteRules` is
  what a route cache entry resolved of them;
* :func:`forward` — output coalescing: a frame with its new stream id appended to the
  destination's ``wire_out`` buffer, flushed once per loop turn;
* :func:`request_metadata` — the routing metadata of a request (reference
  ``frames.request_metadata``);
* :func:`trace_entry` — where the first trace-context entry of composite metadata is, if its
  content is a well-formed W3C trace context, and the key the route cache knows it by
  (reference: ``metadata.entry_spans`` and ``tracing.ENTRY``);
* :func:`stamp_parent` — a copy of a traced request frame whose ``traceparent`` names this
  hop's span as the parent (the 16 hex digits rewritten in place, nothing re-encoded); a
  repeat opened by :func:`_open` towards a length-prefixed provider gets the digits written
  where its frame was queued in ``wire_out`` instead, with no copy;
* :func:`trace_stream`, :func:`span_id`, :func:`seed_span_ids` — a traced stream's hop span,
  carried by its :class:`Stream` (``trace``, ``trace_at``, ``span``, ``provider``, and at its end
  ``ended_at`` and ``outcome``), which ``broker.tracing.Tracer`` keeps as the span itself, in
  the :class:`SpanRing` of its route label.

The session side of the contract (``broker.session``): ``streams``, ``frames_in``,
``frame_limit``, ``peer_parity``, ``outstanding``, ``open_cache`` and ``open_gen`` (see
:func:`_open`), ``write_paused``, ``closing``, ``wire_out`` (a bytearray for length-prefixed
transports, None for transports that queue whole frames through ``forward``), ``_queued``,
``frames_out``, ``broker.mark_dirty``, ``broker.clock``, ``broker.tracer.record`` (the compiled
twin: ``RouteMeter.spans`` and ``broker.tracer.ring``), ``failures``
and ``broker.provider_outcome`` (outlier detection), ``measure_rtt``, ``rtt`` and ``rtt_at`` (a
provider's round trip, sampled at a stream's first response while ``measure_rtt``:
``broker.latency``), ``broker.traffic.retry_rejected`` (retries), and the methods ``other_frame``, ``refuse_oversized``, ``fail``, ``_pending_frame``,
``_requester_sent``, ``_provider_sent``, ``_blocked_by``; to open a request from the route
cache, ``broker.open_generation``, ``broker.draining``, ``broker.settings.max_streams``,
``broker.settings.max_metadata_entries``, ``broker.tracer.spans_kept``, ``broker.registry.pick``, ``broker.stats``, ``principal``, ``is_link``,
``metadata_mime``, ``_reject`` and a provider's ``target``, ``next_local_id`` and
``allocate_local_id``; of a routed stream, ``meter`` (bytes, ``ended`` for its outcome, and ``spans``: its route label's ring once made),
``opened_at``, ``first_at``, ``trace``, ``retry`` (set while an idempotent request may be
sent again: a provider's ERROR is offered to ``retry_rejected`` before it is relayed, since a
relayed frame cannot be taken back; ``_provider_sent`` only sees frames already on their way)
and ``kept``. The traffic rules' side (``broker.traffic``): :class:`Bucket`,
:class:`TrafficState` and :class:`RouteRules` are its state, read and written here and there;
it is called back for ``refusal``, ``compact`` and ``arm``.
Only :class:`~broker.frames.FrameError` may escape a reader; nothing here does I/O.
"""

from __future__ import annotations

import os
import random
import struct
from typing import TYPE_CHECKING, Any, Iterator

from broker.frames import (
    FLAG_COMPLETE,
    FLAG_FOLLOWS,
    FLAG_METADATA,
    FLAG_NEXT,
    HEADER_LENGTH,
    ErrorCode,
    FrameError,
    FrameType,
)
from broker.latency import observe
from broker.metering import OK as _OK

from broker.tracing import ENTRY as _ENTRY
from broker.tracing import MARKER as _TRACE_MIME
from broker.tracing import PARENT_AT

if TYPE_CHECKING:
    from broker.metering import RouteMeter

__all__ = [
    "OPEN_CACHE_SIZE",
    "TOO_LARGE",
    "Bucket",
    "RouteRules",
    "SpanRing",
    "Stream",
    "TrafficState",
    "forward",
    "keep",
    "read_frames",
    "relay_frame",
    "request_metadata",
    "seed_span_ids",
    "span_id",
    "spend",
    "stamp_parent",
    "sweep",
    "trace_entry",
    "trace_stream",
    "watch",
]

_PAYLOAD = int(FrameType.PAYLOAD)
_REQUEST_N = int(FrameType.REQUEST_N)
_CANCEL = int(FrameType.CANCEL)
_ERROR = int(FrameType.ERROR)
_RR = int(FrameType.REQUEST_RESPONSE)
_STREAM = int(FrameType.REQUEST_STREAM)
_CHANNEL = int(FrameType.REQUEST_CHANNEL)
_METADATA_PUSH = int(FrameType.METADATA_PUSH)
_HEADER = struct.Struct(">IH")
_SID = struct.Struct(">I")
#: how a trace entry starts: its MIME type's length - 1, then the MIME type
_TRACE_HEAD = bytes((len(_TRACE_MIME) - 1,)) + _TRACE_MIME
_TRACE_HEAD_LEN = len(_TRACE_HEAD) + 3  # and its 3-byte content length
#: the length of a ``traceparent``'s parent id (16 hex digits)
_PARENT_LEN = 16
CONNECTION_ERROR = int(ErrorCode.CONNECTION_ERROR)
REJECTED = int(ErrorCode.REJECTED)
#: Stream ids are 31 bits; the top bit of the field is reserved.
MAX_STREAM_ID = 0x7FFFFFFF
#: routes a connection remembers for :func:`_open` (``Session.open_cache``); a connection
#: calls a handful, and one that cycles through more starts its cache over. With keys of at
#: most ``session.OPEN_CACHE_MAX_KEY`` bytes a connection holds at most 4 KiB of them.
OPEN_CACHE_SIZE = 16
#: span ids must not collide across nodes and restarts, but need not be secret: a PRNG seeded
#: from os.urandom (never the time, which two nodes started together share) is ten times
#: cheaper than reading os.urandom per span; a forked child reseeds, or it would repeat its
#: parent's ids. (The compiled twin runs splitmix64 in C: other ids from the same seed.)
_span_rng = random.Random(os.urandom(32))
_span_bits = _span_rng.getrandbits
os.register_at_fork(after_in_child=lambda: _span_rng.seed(os.urandom(32)))
#: stands for the kept frame of a request over ``max_retry_frame_size`` (never sent again);
#: compared by identity, so a distinct object (``b""`` would be CPython's shared empty bytes).
#: The compiled twin imports this very object.
TOO_LARGE = bytes(HEADER_LENGTH)


class Stream:
    """One relayed stream: the requester's side and the provider's side."""

    __slots__ = (
        "kind",
        "req",
        "req_id",
        "req_sid",
        "prov",
        "prov_id",
        "prov_sid",
        "in_done",
        "out_done",
        "pending",
        "pending_bytes",
        "started",
        "route",
        "meter",
        "opened_at",
        "first_at",
        "trace",
        "retry",
        "trace_at",
        "span",
        "provider",
        "ended_at",
        "outcome",
        "kept",
    )
    # the hop span's slots, set only on a traced stream (see the note in __init__)
    trace_at: int
    span: int
    provider: Any
    ended_at: float
    outcome: int

    def __init__(self, kind: int, req: Any, req_id: int) -> None:
        self.kind = kind
        self.req = req
        self.req_id = req_id
        self.req_sid = _SID.pack(req_id)
        self.prov: Any = None
        self.prov_id = 0
        self.prov_sid = b""
        #: requester→provider direction finished (request fully sent / channel completed)
        self.in_done = False
        #: provider→requester direction finished (response, completion or error)
        self.out_done = False
        #: frames of a fragmented request held until its metadata (and so its route) is complete,
        #: and what they cost (bytes plus HELD_FRAGMENT_OVERHEAD each)
        self.pending: list[bytes] | None = None
        self.pending_bytes = 0
        #: when its first fragment arrived (broker clock), for reassembly_timeout_s
        self.started = 0.0
        self.route = ""
        #: where this stream is counted, and when it opened / got its first response (loop time)
        self.meter: RouteMeter | None = None
        self.opened_at = 0.0
        self.first_at = 0.0
        #: the requester's W3C trace context, when it sent one (broker.tracing)
        self.trace: Any = None
        #: sends left of an idempotent request-response (broker.traffic retries); None once it
        #: may not be sent again
        self.retry: int | None = None
        #: its request frame as the provider got it, kept to send again (:func:`keep`; a
        #: fragmented request's never is), or :data:`TOO_LARGE`
        self.kept: bytes | None = None
        # A traced stream's hop span, in the five slots after ``retry``: where the trace entry's content
        # (``trace``) lies in the request's metadata (``trace_at``), this hop's ``span`` id and the
        # ``provider`` chosen (:func:`trace_stream`), and once it ended, when (``ended_at``, loop
        # time) and its ``outcome`` (``broker.tracing.Tracer.record``). ``Tracer`` keeps ended
        # traced streams as its spans and reads these (and ``route``, ``opened_at``, ``first_at``)
        # when they are looked at. They are set only on a traced stream (``trace`` is not None)
        # and read only there: left unset here, an untraced stream costs no more than before.


class SpanRing:
    """The last ``maxlen`` hop spans (ended traced :class:`Stream` s) of one route label, oldest
    first, for ``broker.tracing.Tracer`` (which makes one per label, hung on its ``RouteMeter``);
    with an OTLP ``export``, every span put in it is also queued there (``OtlpExport.put``).

    A list used as a circle: ``spans[at]`` is where the next span goes, over the oldest once
    ``count`` reached ``maxlen``. It is ours rather than a bounded ``collections.deque`` for the
    compiled twin, whose relay fills its C fields at a stream's end with no Python call."""

    __slots__ = ("spans", "at", "count", "maxlen", "export")

    def __init__(self, kept: int, export: Any = None) -> None:
        if kept < 1:
            raise ValueError(f"a span ring keeps at least one span, not {kept}")
        self.spans: list[Stream | None] = [None] * kept
        self.at = 0
        self.count = 0
        self.maxlen = kept
        self.export = export

    def append(self, st: Stream) -> None:
        """Keep ``st``, dropping the oldest span when full, and queue it for the export if any."""
        at = self.at
        self.spans[at] = st
        self.at = at + 1 if at + 1 < self.maxlen else 0
        if self.count < self.maxlen:
            self.count += 1
        if self.export is not None:
            self.export.put(st)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Stream]:
        """The kept spans, oldest first."""
        spans = self.spans[self.at :] + self.spans[: self.at] if self.count == self.maxlen else self.spans[: self.count]
        return iter(spans)  # type: ignore[arg-type]  # all set: the first ``count`` or all of them


class Bucket:
    """One token bucket of a rate limit (``broker.traffic``), kept as GCRA does: ``tat`` is when
    it would be full again (loop time, s); a request may go while that is at most ``tolerance``
    s ahead of now, and moves it ``interval`` s on (:func:`spend`). ``limit`` is its
    ``RateLimit``, for the refusal's message; the numbers are this node's share of it."""

    __slots__ = ("limit", "tat", "interval", "tolerance")

    def __init__(self, limit: Any, tat: float, interval: float, tolerance: float) -> None:
        self.limit = limit
        self.tat = tat
        self.interval = interval
        self.tolerance = tolerance


class TrafficState:
    """What every request under a deadline or retries updates, of one node's traffic rules
    (``broker.traffic.TrafficRules``, its ``rules``, which owns and explains each field and is
    called back only to sweep the deadline FIFOs or re-arm their timer): the FIFO of watched
    requests per deadline in ms (``queues``), how many they hold (``tracked``) and at how many
    they are swept (``compact_at``), when the timer fires (``timer_at``, inf: not armed), the
    requests marked for retries since the retry budget was brought up to date (``marked``), and
    the largest frame kept for a retry (``max_kept``, bytes)."""

    __slots__ = ("rules", "queues", "tracked", "compact_at", "timer_at", "marked", "max_kept")

    def __init__(self, rules: Any, max_kept: int, compact_at: int) -> None:
        self.rules = rules
        self.queues: dict[int, list[Stream]] = {}
        self.tracked = 0
        self.compact_at = compact_at
        self.timer_at = float("inf")
        self.marked = 0
        self.max_kept = max_kept


class RouteRules:
    """The traffic rules of the repeats of one route cache entry (``Session.open_cache``), resolved
    once by ``TrafficRules.route_rules`` for the connection's principal, the service and the
    exact metadata: the buckets a request spends (``plan``, None: no limit applies), its
    deadline in ms (``ms``, None: none; the service's, or the requester's entry when shorter) and
    the service's ``retries`` (0: none). It holds while the entry does: a change of any of them
    moves ``Broker.open_generation``."""

    __slots__ = ("state", "plan", "ms", "retries")

    def __init__(self, state: TrafficState, plan: tuple[Bucket, ...] | None, ms: int | None, retries: int) -> None:
        self.state = state
        self.plan = plan
        self.ms = ms
        self.retries = retries


def spend(plan: tuple[Bucket, ...], now: float) -> Bucket | None:
    """Spend a token of each bucket of ``plan`` in turn, at ``now``: None when each had one, else
    the first that had none (it and the buckets after it are left as they were)."""
    for bucket in plan:
        tat = bucket.tat
        if tat < now:
            tat = now
        if tat - now > bucket.tolerance:
            return bucket
        bucket.tat = tat + bucket.interval
    return None


def watch(state: TrafficState, st: Stream, ms: int | None, retries: int, now: float) -> None:
    """Mark the request-response ``st``, opened at ``now`` (its ``opened_at``), for the traffic
    rules: ``retries`` sends left (0: it is never sent again; :func:`keep` keeps its frame), and
    its deadline of ``ms`` (None: none) watched at the end of the FIFO of that duration."""
    if retries:
        st.retry = retries
        state.marked += 1
    if ms is None:
        return
    queue = state.queues.get(ms)
    if queue is None:
        queue = state.queues[ms] = []
    queue.append(st)
    state.tracked += 1
    if state.tracked > state.compact_at:
        state.rules.compact()
    when = now + ms / 1000.0
    if when < state.timer_at:
        state.rules.arm(when, now)


def sweep(queue: list[Stream]) -> list[Stream]:
    """The requests of a deadline FIFO not answered yet, in their order (``TrafficRules.compact``)."""
    return [st for st in queue if not st.out_done]


def keep(state: TrafficState, st: Stream, buf: Any, off: int, end: int) -> None:
    """Keep the request frame ``buf[off:end]`` of a stream marked for retries, as it went to the
    provider, to send it again: one copy, or none when ``buf`` is the frame's own bytes; a frame
    over ``state.max_kept`` is not kept (:data:`TOO_LARGE`), and so never sent again."""
    if off < 0 or end > len(buf) or end - off < HEADER_LENGTH:
        _refuse_view(buf, off, end)
    if end - off > state.max_kept:
        st.kept = TOO_LARGE
    elif type(buf) is bytes:
        st.kept = buf[off:end]  # the whole of a bytes object is itself, not a copy
    else:
        st.kept = bytes(memoryview(buf)[off:end])


def _refuse_view(buf: Any, off: int, end: int) -> None:
    """Raise the FrameError for a view that cannot hold a frame header or lies outside ``buf``."""
    if end - off < HEADER_LENGTH:
        raise FrameError(f"frame of {max(0, end - off)} bytes is shorter than the 6-byte frame header")
    raise FrameError(f"frame bounds {off}:{end} lie outside the {len(buf)}-byte buffer")


def read_frames(session: Any, data: bytes, now: float = 0.0) -> tuple[int, int]:
    """Relay every complete length-prefixed frame in ``data`` to :func:`relay_frame`.

    Returns ``(consumed, need)``: where the first incomplete frame begins, and how many
    bytes from there the transport must hold before calling again (the whole frame once its
    prefix is known, else 3), so a large frame arriving in pieces is not re-scanned. The
    limit is ``session.frame_limit``, read for every frame (accepting SETUP may raise it). A
    prefix above it goes to ``session.refuse_oversized(length)`` and a frame shorter than its
    header to ``session.fail``, after the frames before it were relayed and before any byte
    of it is buffered, so a hostile peer cannot make the broker hold a frame it will never
    accept. Stops, with ``need`` 0, then or once the session starts closing.

    ``now`` is when ``data`` arrived (broker clock): the time of the streams it opens and of
    the first responses it carries (0: the clock is read when one is needed). The frames are
    added to ``session.frames_in`` once, when the chunk is done.
    """
    n = len(data)
    pos = 0
    relayed = 0
    try:
        while n - pos >= 3:
            length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
            if length > session.frame_limit:
                session.refuse_oversized(length)
                return pos, 0
            if length < HEADER_LENGTH:
                session.fail(CONNECTION_ERROR, f"frame of {length} bytes is shorter than the 6-byte frame header")
                return pos, 0
            end = pos + 3 + length
            if end > n:
                return pos, end - pos
            relayed += 1
            _relay(session, data, pos + 3, end, now)
            pos = end
            if session.closing:
                return pos, 0
        return pos, 3
    finally:
        session.frames_in += relayed


def relay_frame(session: Any, buf: Any, off: int, end: int) -> None:
    """Relay the frame at ``buf[off:end]`` (header included) if it belongs to a known stream.

    The commonest frames stop here: PAYLOAD, REQUEST_N, CANCEL and ERROR on an open stream
    go to the other side with the id that side knows and count into the stream's route meter
    (bytes each way, the time of the first response), and a stream's last response frame
    ends it (metered as OK, traced when the requester sent a trace context). Anything else
    (requests, connection frames, late frames) goes to ``session.other_frame`` with the
    header already read.
    """
    if off < 0 or end > len(buf) or end - off < HEADER_LENGTH:
        _refuse_view(buf, off, end)
    session.frames_in += 1
    _relay(session, buf, off, end, 0.0)


def _relay(session: Any, buf: Any, off: int, end: int, now: float) -> None:
    """:func:`relay_frame` for a view already known to hold a header within ``buf``, counted
    in ``frames_in`` by the caller; ``now`` as :func:`read_frames` says."""
    sid, type_flags = _HEADER.unpack_from(buf, off)
    ftype = type_flags >> 10
    if sid and (ftype == _PAYLOAD or ftype == _REQUEST_N or ftype == _CANCEL or ftype == _ERROR):
        st = session.streams.get(sid & 0x7FFFFFFF)
        if st is not None:
            if st.prov is None:
                session._pending_frame(st, buf, off, end, ftype, type_flags)
                return
            # The id's parity says which end this session is: ids of the peer's parity are
            # streams the peer opened (it is the requester), the others are streams the
            # broker opened towards it (it is the provider). ``st.req is session`` would not
            # do: a provider calling its own service is both ends of one stream.
            if (sid & 1) == session.peer_parity:
                dest = st.prov
                _forward(dest, st.prov_sid, buf, off, end)
                st.meter.bytes_in += end - off
                session._requester_sent(st, ftype, type_flags)
            else:
                if ftype == _ERROR and st.retry is not None and session.broker.traffic.retry_rejected(st, buf, off, end):
                    return  # REJECTED: the request went to another provider (broker.traffic retries)
                dest = st.req
                _forward(dest, st.req_sid, buf, off, end)
                st.meter.bytes_out += end - off
                if not st.first_at:
                    st.first_at = now = now or session.broker.clock()
                    if session.measure_rtt:  # a provider of a p2c service (broker.latency)
                        observe(session, now - st.opened_at, now)
                if (
                    ftype == _PAYLOAD
                    and st.in_done
                    and not type_flags & FLAG_FOLLOWS
                    and (type_flags & FLAG_COMPLETE or (st.kind == _RR and type_flags & FLAG_NEXT))
                ):
                    # The commonest end of a stream, inlined: its last response frame. A
                    # request-response ends at first_at (its first response frame is its last),
                    # which saves a clock read; a stream ends now, at the chunk's time.
                    st.out_done = True
                    dest.streams.pop(st.req_id, None)
                    if session.streams.pop(st.prov_id, None) is not None:
                        session.outstanding -= 1
                    ended = st.first_at if st.kind == _RR else now or session.broker.clock()
                    st.meter.ended(_OK, st.opened_at, st.first_at, ended)
                    if st.trace is not None:
                        session.broker.tracer.record(st, _OK, ended)  # keeps the stream as its span
                    if session.failures:  # outlier detection: an answer heals the provider
                        session.broker.provider_outcome(session, st.route, True)
                else:
                    session._provider_sent(st, ftype, type_flags, buf, off, end)
            if dest.write_paused:
                session._blocked_by(dest)
            return
    elif (
        (ftype == _RR or ftype == _STREAM or ftype == _CHANNEL)
        and not type_flags & FLAG_FOLLOWS
        and session.open_cache
        and _open(session, buf, off, end, sid, ftype, type_flags, now)
    ):
        return
    session.other_frame(buf, off, end, sid, ftype, type_flags)


def _open(session: Any, buf: Any, off: int, end: int, sid: int, ftype: int, type_flags: int, now: float) -> bool:
    """Open a request whose metadata this connection sent before, as ``Session.other_frame`` would.

    ``session.open_cache`` maps request metadata (a traced request's by its route key, see
    :func:`trace_entry`) to the ``(route, service, meter, rules)`` that
    ``Session._route_stream`` resolved and admitted for this connection's principal, ``rules``
    being the entry's :class:`RouteRules` (None: no traffic rule applies); it holds no fragment
    and nothing of a service that gets the requester's principal entry (see
    ``Session._remember_route``). What the full path does per request is done here too, in its
    order: the rate limits (:func:`spend` of the entry's plan; a refusal, worded by
    ``TrafficRules.refusal``, is answered here), the provider pick, the hop's span and its
    stamped parent id (:func:`trace_stream`, then the digits written in ``wire_out`` once
    queued, or :func:`stamp_parent`'s copy), the deadline and retry marks of a request-response
    (:func:`watch`) and the kept frame of a retried one (:func:`keep`). An entry counts only
    while ``session.open_gen`` equals the broker's ``open_generation``: a changed access rule,
    service policy or rate limit sends the next request through the full checks. Returns
    False, having done nothing, for anything else (a new route, a reused or server-parity id,
    too many streams, a draining node); the caller then takes ``other_frame``'s path, which
    decides and reports it.
    """
    broker = session.broker
    if session.open_gen != broker.open_generation or broker.draining:
        return False
    sid &= 0x7FFFFFFF
    streams = session.streams
    if not sid & 1 or sid in streams or len(streams) - session.outstanding >= broker.settings.max_streams:
        return False
    pos = off + HEADER_LENGTH if ftype == _RR else off + HEADER_LENGTH + 4
    if not type_flags & FLAG_METADATA or end - pos < 3:
        return False
    mlen = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
    pos += 3
    if pos + mlen > end:
        return False
    metadata = bytes(buf[pos : pos + mlen])
    cache = session.open_cache
    entry = cache.get(metadata)
    at = -1
    if entry is None:  # a traced request is remembered by its route key (trace_entry)
        key, at = trace_entry(metadata, broker.settings.max_metadata_entries)
        if at < 0:
            return False
        entry = cache.get(key)
        if entry is None:
            return False
    route, service, meter, rules = entry
    now = now or broker.clock()
    refusal = ""
    if rules is not None and rules.plan is not None:  # rate limits (broker.traffic)
        spent = spend(rules.plan, now)
        if spent is not None:
            refusal = rules.state.rules.refusal(spent.limit, session.principal, service)
    if refusal:
        session._reject(sid, ftype, REJECTED, refusal, meter)
        provider = None
    else:
        provider, why = broker.registry.pick(service, now, session.is_link, metadata, session.metadata_mime)
        if provider is None:
            session._reject(sid, ftype, REJECTED, why, meter)
    if provider is not None:
        dest = provider.target
        pid = dest.next_local_id
        if pid > MAX_STREAM_ID or pid in dest.streams:
            pid = dest.allocate_local_id()
        else:
            dest.next_local_id = pid + 2
        st = Stream(ftype, session, sid)
        st.route = route
        st.meter = meter
        st.opened_at = now
        field = -1
        # this hop's span (broker.tracing), when spans are kept: the route label's ring is made
        # on its first kept span, so a traced repeat reads one slot rather than the tracer's setting
        if at >= 0 and (meter.spans is not None or broker.tracer.spans_kept):
            _trace_stream(st, metadata, at, provider)
            field = pos - off + at + PARENT_AT  # the parent id's digits, from the frame's start
        meter.inflight += 1
        st.prov = dest
        st.prov_id = pid
        st.prov_sid = prov_sid = _SID.pack(pid)
        streams[sid] = st
        dest.streams[pid] = st
        dest.outstanding += 1
        broker.stats["requests"] += 1
        if rules is not None and ftype == _RR:  # deadlines and retries (broker.traffic)
            watch(rules.state, st, rules.ms, rules.retries, now)
        if ftype != _CHANNEL or type_flags & FLAG_COMPLETE:
            st.in_done = True
        if field >= 0 and (st.retry is not None or dest.wire_out is None):  # a stamped copy goes out (or is kept)
            buf = stamp_parent(buf, off, end, at + PARENT_AT, st.span)
            off, end, field = 0, len(buf), -1
        _forward(dest, prov_sid, buf, off, end)
        if field >= 0:  # the provider's span becomes a child of this hop's: stamped where _forward queued it
            out = dest.wire_out
            field += len(out) - (end - off)
            out[field : field + _PARENT_LEN] = b"%016x" % st.span
        meter.bytes_in += end - off
        if st.retry is not None:
            keep(rules.state, st, buf, off, end)  # kept whole, as the provider got it: it may be sent again
        if dest.write_paused:
            session._blocked_by(dest)
    if session.write_paused and not session.closing:
        session._blocked_by(session)  # our answers to this peer are piling up: read no more for now
    return True


def forward(dest: Any, sid: bytes, buf: Any, off: int, end: int) -> None:
    """Queue the frame ``buf[off:end]`` on ``dest`` with its 4-byte stream id replaced by ``sid``.

    Length-prefixed transports coalesce: the frame is appended to ``dest.wire_out`` and the
    destination is marked for one write at the end of the loop turn. Others get ``forward``.
    """
    if off < 0 or end > len(buf) or end - off < HEADER_LENGTH:
        _refuse_view(buf, off, end)
    _forward(dest, sid, buf, off, end)


def _forward(dest: Any, sid: bytes, buf: Any, off: int, end: int) -> None:
    out = dest.wire_out
    if out is None:
        dest.forward(sid, buf, off, end)
        return
    out += (end - off).to_bytes(3, "big")
    out += sid
    out += memoryview(buf)[off + 4 : end]
    dest.frames_out += 1
    if not dest._queued:
        dest._queued = True
        dest.broker.mark_dirty(dest)


def request_metadata(buf: Any, off: int, end: int) -> tuple[bytes, bool]:
    """Metadata of a request, PAYLOAD or METADATA_PUSH frame at ``buf[off:end]``.

    Returns ``(metadata, has_data)``; ``has_data`` tells whether payload data follows the
    metadata in this frame, which for a fragmented request means the metadata is complete.
    """
    if off < 0 or end > len(buf) or end - off < HEADER_LENGTH:
        _refuse_view(buf, off, end)
    ftype = buf[off + 4] >> 2
    flags = ((buf[off + 4] << 8) | buf[off + 5]) & 0x3FF
    if ftype == _METADATA_PUSH:
        return bytes(buf[off + HEADER_LENGTH : end]), False
    pos = off + HEADER_LENGTH + 4 if ftype == _STREAM or ftype == _CHANNEL else off + HEADER_LENGTH
    if pos > end:
        raise FrameError(f"frame type {ftype} of {end - off} bytes is too short for its fixed fields")
    if not flags & FLAG_METADATA:
        return b"", pos < end
    if end - pos < 3:
        raise FrameError("frame has the metadata flag but no metadata length")
    mlen = (buf[pos] << 16) | (buf[pos + 1] << 8) | buf[pos + 2]
    pos += 3
    if pos + mlen > end:
        raise FrameError(f"metadata length {mlen} runs past the end of the frame")
    return bytes(buf[pos : pos + mlen]), pos + mlen < end


def trace_entry(metadata: bytes, max_entries: int) -> tuple[bytes, int]:
    """``(route key, content offset)`` of composite ``metadata`` whose first trace entry holds a
    well-formed trace context; ``(metadata, -1)`` when it has none (or an ill-formed one).

    One walk over the entries' headers, as ``metadata.entry_spans`` reads and checks them,
    stopping at the first trace entry or after ``max_entries`` (a read past the limit, or of
    a broken entry before the trace entry, is refused by the full read; this walk says -1). The
    route key is ``metadata`` with that entry's content cut out and its length set to 0: itself
    metadata whose full read names the same route and fails the same way (the content is
    opaque to routing), so the relay's route cache can answer a traced request, whose trace
    entry differs every time, from the key, and a full read of the key is a full read.
    """
    pos, total, count = 0, len(metadata), 0
    while pos < total and count < max_entries:
        count += 1
        first = metadata[pos]
        if first & 0x80:
            pos += 4
        elif metadata.startswith(_TRACE_HEAD, pos):
            pos += _TRACE_HEAD_LEN
            if pos > total:
                break
            end = pos + ((metadata[pos - 3] << 16) | (metadata[pos - 2] << 8) | metadata[pos - 1])
            if end > total or _ENTRY.fullmatch(metadata, pos, end) is None:
                break
            return metadata[: pos - 3] + b"\0\0\0" + metadata[end:], pos
        elif metadata[pos + 1 : pos + 2 + first].isascii():
            pos += first + 5
        else:
            break
        if pos > total:  # no room for the entry's length; past the end, the loop stops
            break
        pos += (metadata[pos - 3] << 16) | (metadata[pos - 2] << 8) | metadata[pos - 1]
    return metadata, -1


def span_id() -> int:
    """A new 64-bit span id, never 0 (W3C: an all-zero parent id is invalid)."""
    return _span_bits(64) or 1


def seed_span_ids(seed: int) -> None:
    """Seed the span ids (tests: the same seed, the same ids, on one implementation)."""
    _span_rng.seed(seed)


def trace_stream(st: Stream, metadata: bytes, at: int, provider: Any) -> None:
    """Make ``st`` a traced stream with a new hop span: the checked trace entry whose content
    starts at ``at`` in ``metadata`` (:func:`trace_entry`) is kept as ``st.trace``, with its
    place, this hop's span id and ``provider``; ``broker.tracing.Tracer`` describes the span
    from these fields when it is looked at. The content is copied out (at most 568 bytes): a kept
    span holds neither the request's frame nor its read buffer."""
    if not 3 <= at <= len(metadata):
        raise ValueError(f"no trace entry content at offset {at} of {len(metadata)} bytes of metadata")
    _trace_stream(st, metadata, at, provider)


def _trace_stream(st: Stream, metadata: bytes, at: int, provider: Any) -> None:
    """:func:`trace_stream` for an ``at`` that :func:`trace_entry` gave (``_open``'s)."""
    st.trace = metadata[at : at + ((metadata[at - 3] << 16) | (metadata[at - 2] << 8) | metadata[at - 1])]
    st.trace_at = at
    st.span = _span_bits(64) or 1
    st.provider = provider


def stamp_parent(buf: Any, off: int, end: int, at: int, span: int) -> bytes:
    """A copy of the request frame ``buf[off:end]`` whose trace entry names ``span`` as parent.

    ``at`` is where the 16 hex digits of the ``traceparent``'s parent id lie in the frame's
    metadata (36 bytes into the content :func:`trace_entry` found); they are overwritten with
    ``span``'s (lower-case, as W3C asks), so the provider, or the next node, sees this hop's
    span as its parent and nothing else in the frame changes.
    """
    if off < 0 or end > len(buf) or end - off < HEADER_LENGTH:
        _refuse_view(buf, off, end)
    ftype = buf[off + 4] >> 2
    field = -1
    if 0 <= at <= end - off:
        field = (HEADER_LENGTH + 4 if ftype == _STREAM or ftype == _CHANNEL else HEADER_LENGTH) + 3 + at
    if field < 0 or field + _PARENT_LEN > end - off or not 0 < span < 1 << 64:
        raise FrameError(f"no traceparent parent id fits at metadata offset {at} of a {end - off}-byte frame")
    field += off
    return bytes(buf[off:field]) + b"%016x" % span + bytes(buf[field + _PARENT_LEN : end])
