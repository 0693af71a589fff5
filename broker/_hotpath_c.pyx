# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled twin of ``broker/_hotpath.py``: the same functions and classes, the same behaviour
and the same error messages; read that module for what each does and why. One difference by
design: span ids come from splitmix64 in C, so a seed gives other ids than the pure twin's
(in the same order of draws).

Why it is faster: a received chunk is read through one typed view and a raw pointer, the
split loop, the header, the stream-id arithmetic and the coalescing copy are C, and no
Python object is made per frame but the stream-map key and the counters. Bounds are checked by hand
(``boundscheck`` is off), once per chunk and once per frame, before any byte is read. The
route metering stays Python attribute updates (and one ``RouteMeter.ended`` call per stream):
that is what its readers (``admin/metrics.py``) see. A traced repeat adds, all in C but the
last: a walk over the frame's entry headers that makes the route key (the untraced walk
stops after the routing entry), a copy of the trace content (into the Stream), a span id, 16 digits written
into ``wire_out``, and at its end the stream put in its route label's ring (a ``SpanRing``,
C fields filled with no Python call).
The traffic rules' state (buckets, the deadline FIFOs' counters, a route cache entry's rules)
is C fields, so a repeat request under rate limits, a deadline or retries is admitted, watched
and kept without a Python call.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy

import os

from broker._hotpath import MAX_STREAM_ID as _MAX_STREAM_ID, OPEN_CACHE_SIZE, TOO_LARGE
from broker.frames import ErrorCode, FrameError
from broker.latency import observe
from broker.metering import OK as _OK
from broker.tracing import MARKER as _MARKER

cdef object CONNECTION_ERROR = int(ErrorCode.CONNECTION_ERROR)
cdef object REJECTED = int(ErrorCode.REJECTED)
cdef object OK = _OK
cdef int OK_OUTCOME = _OK
cdef long MAX_STREAM_ID = _MAX_STREAM_ID

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

cdef enum:
    HEADER_LENGTH = 6
    MAX_PREFIXED = 0xFFFFFF
    RR = 0x04
    STREAM = 0x06
    CHANNEL = 0x07
    REQUEST_N = 0x08
    CANCEL = 0x09
    PAYLOAD = 0x0A
    ERROR = 0x0B
    METADATA_PUSH = 0x0C
    FLAG_METADATA = 0x100
    FLAG_FOLLOWS = 0x80
    FLAG_COMPLETE = 0x40
    FLAG_NEXT = 0x20
    PARENT_AT = 36
    PARENT_LEN = 16
    TRACEPARENT_LEN = 55
    MAX_TRACESTATE = 512

cdef bytes _EMPTY = b""
cdef bytes _TOO_LARGE = TOO_LARGE
cdef str _EMPTY_STR = ""
cdef bytes TRACE_MIME = _MARKER
cdef Py_ssize_t TRACE_MIME_LEN = len(_MARKER)
cdef const char* TRACE_MIME_P = TRACE_MIME
cdef const char* HEX = b"0123456789abcdef"
cdef object SPAN_LIMIT = int("10000000000000000", 16)  # span ids are 64 bits

#: span ids: splitmix64 (Steele, Lea, Flood 2014) in C, seeded from os.urandom and reseeded in
#: a forked child, as the pure twin's PRNG is (see there why); a few ns a span, no Python call
cdef uint64_t _span_state = 0


cdef inline uint64_t _next_span() noexcept:
    """The next span id, never 0 (W3C: an all-zero parent id is invalid)."""
    global _span_state
    _span_state += <uint64_t>0x9E3779B97F4A7C15ULL
    cdef uint64_t z = _span_state
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    z ^= z >> 31
    return z if z else 1


def span_id():
    return _next_span()


def seed_span_ids(object seed):
    global _span_state
    _span_state = <uint64_t>(seed & 0xFFFFFFFFFFFFFFFF)


def _reseed():
    seed_span_ids(int.from_bytes(os.urandom(8), "big"))


_reseed()
os.register_at_fork(after_in_child=_reseed)


cdef inline bytes _sid_bytes(unsigned long sid):
    """The 4-byte big-endian stream id field (``struct.pack(">I", sid)``)."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 4)
    cdef unsigned char* q = <unsigned char*>PyBytes_AS_STRING(out)
    q[0] = (sid >> 24) & 0xFF
    q[1] = (sid >> 16) & 0xFF
    q[2] = (sid >> 8) & 0xFF
    q[3] = sid & 0xFF
    return out


cdef class Stream:
    """``_hotpath.Stream`` as a C struct: the relay reads and writes its fields without a
    Python attribute lookup. Every field is public, with the pure twin's name and meaning;
    ``trace`` is read-only, and kept in C: a trace entry's content that is a ``traceparent``
    alone (55 bytes) is copied into the struct, with no object made per traced request, and
    any other (a ``tracestate`` follows) into a bytes object, as the pure twin keeps each."""

    cdef public long kind
    cdef public object req
    cdef public long req_id
    cdef public bytes req_sid
    cdef public object prov
    cdef public long prov_id
    cdef public bytes prov_sid
    cdef public bint in_done
    cdef public bint out_done
    cdef public object pending
    cdef public Py_ssize_t pending_bytes
    cdef public double started
    cdef public str route
    cdef public object meter
    cdef public double opened_at
    cdef public double first_at
    cdef char traceparent[TRACEPARENT_LEN]
    cdef object trace_other
    cdef public object retry
    cdef public Py_ssize_t trace_at
    cdef public unsigned long long span
    cdef public object provider
    cdef public double ended_at
    cdef public int outcome
    cdef public object kept

    def __init__(self, long kind, object req, long req_id):
        self.kind = kind
        self.req = req
        self.req_id = req_id
        self.req_sid = _sid_bytes(req_id)
        self.prov = None
        self.prov_id = 0
        self.prov_sid = _EMPTY
        self.in_done = False
        self.out_done = False
        self.pending = None
        self.pending_bytes = 0
        self.started = 0.0
        self.route = ""
        self.meter = None
        self.opened_at = 0.0
        self.first_at = 0.0
        self.retry = None
        self.trace_at = 0
        self.span = 0
        self.provider = None
        self.ended_at = 0.0
        self.outcome = 0
        self.kept = None

    @property
    def trace(self):
        """The requester's trace entry content, as ``_trace`` kept it; None: not traced (a traced
        stream's ``span`` is never 0)."""
        if not self.span:
            return None
        if self.trace_other is not None:
            return self.trace_other
        return PyBytes_FromStringAndSize(self.traceparent, TRACEPARENT_LEN)


cdef class SpanRing:
    """``_hotpath.SpanRing`` as C fields: the relay keeps an ended traced stream in it
    (``_ring_put``) with no Python call, but the export's ``put`` when there is one."""

    cdef readonly list spans
    cdef readonly Py_ssize_t at
    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t maxlen
    cdef readonly object export

    def __init__(self, Py_ssize_t kept, object export=None):
        if kept < 1:
            raise ValueError(f"a span ring keeps at least one span, not {kept}")
        self.spans = [None] * kept
        self.at = 0
        self.count = 0
        self.maxlen = kept
        self.export = export

    def append(self, object st):
        _ring_put(self, st)

    def __len__(self):
        return self.count

    def __iter__(self):
        spans = self.spans[self.at:] + self.spans[:self.at] if self.count == self.maxlen else self.spans[:self.count]
        return iter(spans)


cdef inline int _ring_put(SpanRing ring, object st) except -1:
    """``SpanRing.append``: ``st`` over the oldest span when full, and queued for the export."""
    cdef Py_ssize_t at = ring.at
    ring.spans[at] = st
    ring.at = at + 1 if at + 1 < ring.maxlen else 0
    if ring.count < ring.maxlen:
        ring.count += 1
    if ring.export is not None:
        ring.export.put(st)
    return 0


cdef class Bucket:
    """``_hotpath.Bucket``: a rate limit's GCRA state as C doubles."""

    cdef public object limit
    cdef public double tat
    cdef public double interval
    cdef public double tolerance

    def __init__(self, object limit, double tat, double interval, double tolerance):
        self.limit = limit
        self.tat = tat
        self.interval = interval
        self.tolerance = tolerance


cdef class TrafficState:
    """``_hotpath.TrafficState``: the counters every watched request updates, as C fields."""

    cdef public object rules
    cdef public dict queues
    cdef public long tracked
    cdef public long compact_at
    cdef public double timer_at
    cdef public long marked
    cdef public Py_ssize_t max_kept

    def __init__(self, object rules, Py_ssize_t max_kept, long compact_at):
        self.rules = rules
        self.queues = {}
        self.tracked = 0
        self.compact_at = compact_at
        self.timer_at = float("inf")
        self.marked = 0
        self.max_kept = max_kept


cdef class RouteRules:
    """``_hotpath.RouteRules``, with the deadline's duration in seconds worked out once (so
    the fields are read-only: an entry's rules never change, a new entry is made instead)."""

    cdef readonly TrafficState state
    cdef readonly tuple plan
    cdef readonly object ms
    cdef readonly long retries
    cdef double span

    def __init__(self, TrafficState state, tuple plan, object ms, long retries):
        self.state = state
        self.plan = plan
        self.ms = ms
        self.retries = retries
        self.span = ms / 1000.0 if ms is not None else 0.0


def spend(tuple plan, double now):
    return _spend(plan, now)


cdef inline Bucket _spend(tuple plan, double now):
    """``_hotpath.spend``: the first bucket of ``plan`` without a token, or None."""
    cdef Bucket bucket
    cdef double tat
    for item in plan:
        bucket = <Bucket?>item
        tat = bucket.tat
        if tat < now:
            tat = now
        if tat - now > bucket.tolerance:
            return bucket
        bucket.tat = tat + bucket.interval
    return None


def watch(TrafficState state, Stream st, object ms, long retries, double now):
    _watch(state, st, ms, ms / 1000.0 if ms is not None else 0.0, retries, now)


cdef inline int _watch(TrafficState state, Stream st, object ms, double span, long retries, double now) except -1:
    """``_hotpath.watch``, with ``span`` the deadline in seconds (``ms / 1000.0``)."""
    if retries:
        st.retry = retries
        state.marked += 1
    if ms is None:
        return 0
    cdef list queue = state.queues.get(ms)
    if queue is None:
        queue = state.queues[ms] = []
    queue.append(st)
    state.tracked += 1
    if state.tracked > state.compact_at:
        state.rules.compact()
    cdef double when = now + span
    if when < state.timer_at:
        state.rules.arm(when, now)
    return 0


def sweep(list queue):
    cdef list left = []
    cdef Stream st
    for item in queue:
        st = <Stream?>item
        if not st.out_done:
            left.append(st)
    return left


def keep(TrafficState state, Stream st, object buf, Py_ssize_t off, Py_ssize_t end):
    cdef const unsigned char* p = _bytes_of(buf)
    _check_view(len(buf) if p == NULL else PyBytes_GET_SIZE(buf), off, end)
    cdef const unsigned char[:] view
    if p == NULL:
        view = buf
        p = _start(view)
    _keep(state, st, buf, p, off, end)


cdef inline int _keep(
    TrafficState state, Stream st, object buf, const unsigned char* p, Py_ssize_t off, Py_ssize_t end
) except -1:
    """``_hotpath.keep`` on a frame known to lie within ``p``'s buffer (``buf``'s bytes)."""
    if end - off > state.max_kept:
        st.kept = _TOO_LARGE
    elif type(buf) is bytes and off == 0 and end == PyBytes_GET_SIZE(buf):
        st.kept = buf  # the whole of a bytes object is itself, not a copy
    else:
        st.kept = PyBytes_FromStringAndSize(<const char*>p + off, end - off)
    return 0


cdef inline Stream _new_stream(long kind, object req, long req_id):
    """``Stream(kind, req, req_id)`` without the Python call: ``tp_new`` sets the object fields
    to None and the numbers to 0, and the rest is set here as ``__init__`` would."""
    cdef Stream st = Stream.__new__(Stream)
    st.kind = kind
    st.req = req
    st.req_id = req_id
    st.req_sid = _sid_bytes(req_id)
    st.prov_sid = _EMPTY
    st.route = ""
    return st


cdef inline const unsigned char* _start(const unsigned char[:] view):
    """Pointer to the first byte of ``view`` (NULL for an empty one, which is never read)."""
    if view.shape[0] == 0:
        return NULL
    return &view[0]


cdef inline const unsigned char* _bytes_of(object buf):
    """The bytes of ``buf`` when it is a ``bytes`` object (what the TCP shell reads), else NULL:
    the caller then takes a typed view, which costs more than the frame's whole work."""
    if type(buf) is bytes:
        return <const unsigned char*>PyBytes_AS_STRING(buf)
    return NULL


cdef inline int _check_view(Py_ssize_t size, Py_ssize_t off, Py_ssize_t end) except -1:
    if end - off < HEADER_LENGTH:
        raise FrameError(f"frame of {max(0, end - off)} bytes is shorter than the 6-byte frame header")
    if off < 0 or end > size:
        raise FrameError(f"frame bounds {off}:{end} lie outside the {size}-byte buffer")
    return 0


def read_frames(object session, object data, double now=0.0):
    cdef const unsigned char[:] view = data
    cdef const unsigned char* p = _start(view)
    cdef Py_ssize_t n = view.shape[0]
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t end
    cdef long long length
    cdef long relayed = 0
    try:
        while n - pos >= 3:
            length = (<long long>p[pos] << 16) | (p[pos + 1] << 8) | p[pos + 2]
            if length > session.frame_limit:
                session.refuse_oversized(length)
                return pos, 0
            if length < HEADER_LENGTH:
                session.fail(CONNECTION_ERROR, f"frame of {length} bytes is shorter than the 6-byte frame header")
                return pos, 0
            end = pos + 3 + <Py_ssize_t>length
            if end > n:
                return pos, end - pos
            relayed += 1
            _relay(session, data, p, pos + 3, end, now)
            pos = end
            if session.closing:
                return pos, 0
        return pos, 3
    finally:
        session.frames_in += relayed


def relay_frame(object session, object buf, Py_ssize_t off, Py_ssize_t end):
    cdef const unsigned char[:] view = buf
    _check_view(view.shape[0], off, end)
    session.frames_in += 1
    _relay(session, buf, _start(view), off, end, 0.0)


cdef int _relay(
    object session, object buf, const unsigned char* p, Py_ssize_t off, Py_ssize_t end, double now
) except -1:
    """``relay_frame`` on a frame already known to lie within ``p``'s buffer (counted by the caller)."""
    cdef unsigned long sid = (
        (<unsigned long>p[off] << 24) | (<unsigned long>p[off + 1] << 16) | (p[off + 2] << 8) | p[off + 3]
    )
    cdef unsigned int type_flags = (p[off + 4] << 8) | p[off + 5]
    cdef unsigned int ftype = type_flags >> 10
    cdef dict streams
    cdef Stream st
    if sid and (ftype == PAYLOAD or ftype == REQUEST_N or ftype == CANCEL or ftype == ERROR):
        streams = session.streams
        found = streams.get(<long>(sid & 0x7FFFFFFF))
        if found is not None:
            st = <Stream?>found
            if st.prov is None:
                session._pending_frame(st, buf, off, end, ftype, type_flags)
                return 0
            if <long>(sid & 1) == <long>session.peer_parity:
                dest = st.prov
                _forward(dest, st.prov_sid, buf, p, off, end)
                st.meter.bytes_in += end - off
                session._requester_sent(st, ftype, type_flags)
            else:
                if ftype == ERROR and st.retry is not None and session.broker.traffic.retry_rejected(st, buf, off, end):
                    return 0  # REJECTED: the request went to another provider (broker.traffic retries)
                dest = st.req
                _forward(dest, st.req_sid, buf, p, off, end)
                st.meter.bytes_out += end - off
                if not st.first_at:
                    st.first_at = now = now if now else session.broker.clock()
                    if session.measure_rtt:  # a provider of a p2c service (broker.latency)
                        observe(session, now - st.opened_at, now)
                if (
                    ftype == PAYLOAD
                    and st.in_done
                    and not type_flags & FLAG_FOLLOWS
                    and (type_flags & FLAG_COMPLETE or (type_flags & FLAG_NEXT and st.kind == RR))
                ):
                    st.out_done = True
                    (<dict?>dest.streams).pop(st.req_id, None)
                    if streams.pop(st.prov_id, None) is not None:
                        session.outstanding -= 1
                    ended = st.first_at if st.kind == RR else (now if now else session.broker.clock())
                    st.meter.ended(OK, st.opened_at, st.first_at, ended)
                    if st.span:  # traced (its ``trace`` is not None): Tracer.record in C calls, the stream kept as its span
                        st.ended_at = ended
                        st.outcome = OK_OUTCOME
                        ring = (<object>st.meter).spans
                        if ring is None:
                            ring = session.broker.tracer.ring(st.meter)
                        _ring_put(<SpanRing?>ring, st)
                    if session.failures:  # outlier detection: an answer heals the provider
                        session.broker.provider_outcome(session, st.route, True)
                else:
                    session._provider_sent(st, ftype, type_flags, buf, off, end)
            if dest.write_paused:
                session._blocked_by(dest)
            return 0
    elif (
        (ftype == RR or ftype == STREAM or ftype == CHANNEL)
        and not type_flags & FLAG_FOLLOWS
        and session.open_cache
        and _open(session, buf, p, off, end, sid & 0x7FFFFFFF, ftype, type_flags, now)
    ):
        return 0
    session.other_frame(buf, off, end, sid, ftype, type_flags)
    return 0


cdef bint _open(
    object session, object buf, const unsigned char* p, Py_ssize_t off, Py_ssize_t end, long sid, unsigned int ftype,
    unsigned int type_flags, double now,
) except -1:
    """``_hotpath._open``: a repeat request opened from the connection's route cache."""
    broker = session.broker
    if session.open_gen != broker.open_generation or broker.draining:
        return False
    cdef dict streams = session.streams
    if not sid & 1 or sid in streams or len(streams) - session.outstanding >= broker.settings.max_streams:
        return False
    cdef Py_ssize_t pos = off + HEADER_LENGTH if ftype == RR else off + HEADER_LENGTH + 4
    if not type_flags & FLAG_METADATA or end - pos < 3:
        return False
    cdef Py_ssize_t mlen = (<Py_ssize_t>p[pos] << 16) | (p[pos + 1] << 8) | p[pos + 2]
    pos += 3
    if pos + mlen > end:
        return False
    # One walk over the entry headers, in the frame: a traced request is remembered by its route
    # key (trace_entry), made straight from the frame, and to the rules (canary tags, a deadline
    # entry) the key reads as its metadata does; an untraced one by its metadata. The walk needs
    # no max_metadata_entries: a key in the cache passed a full read, which counts every entry,
    # so a request whose trace entry lies past the limit has a key no cache holds.
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t at = _find_trace(p + pos, mlen, &count)
    cdef bytes metadata = (
        _route_key(p + pos, mlen, at) if at >= 0 else PyBytes_FromStringAndSize(<const char*>p + pos, mlen)
    )
    cdef dict cache = session.open_cache
    entry = cache.get(metadata)
    if entry is None:
        return False
    route, service, meter, entry_rules = <tuple?>entry
    # the time as the Python float the pick takes: boxed once, not per call
    when = broker.clock() if not now else now
    now = when
    cdef RouteRules rules = entry_rules
    cdef Bucket spent
    refusal = _EMPTY_STR
    if rules is not None and rules.plan is not None:  # rate limits (broker.traffic)
        spent = _spend(rules.plan, now)
        if spent is not None:
            refusal = rules.state.rules.refusal(spent.limit, session.principal, service)
    cdef long pid
    cdef Stream st
    cdef Py_ssize_t field = -1
    if refusal:
        session._reject(sid, ftype, REJECTED, refusal, meter)
        provider = None
    else:
        provider, why = broker.registry.pick(service, when, session.is_link, metadata, session.metadata_mime)
        if provider is None:
            session._reject(sid, ftype, REJECTED, why, meter)
    if provider is not None:
        dest = provider.target
        dest_streams = dest.streams
        pid = dest.next_local_id
        if pid > MAX_STREAM_ID or pid in dest_streams:
            pid = dest.allocate_local_id()
        else:
            dest.next_local_id = pid + 2
        st = _new_stream(ftype, session, sid)
        st.route = route
        st.meter = meter
        st.opened_at = now
        # this hop's span (broker.tracing), when spans are kept: the route label's ring is made
        # on its first kept span, so a traced repeat reads one slot rather than the tracer's setting
        if at >= 0 and ((<object>meter).spans is not None or broker.tracer.spans_kept):
            _trace(st, p + pos, at, _length_before(p + pos + at), provider)
            field = pos - off + at + PARENT_AT  # the parent id's digits, from the frame's start
        meter.inflight += 1
        st.prov = dest
        st.prov_id = pid
        st.prov_sid = prov_sid = _sid_bytes(pid)
        streams[sid] = st
        dest_streams[pid] = st
        dest.outstanding += 1
        broker.stats["requests"] += 1
        if rules is not None and ftype == RR:  # deadlines and retries (broker.traffic)
            _watch(rules.state, st, rules.ms, rules.span, rules.retries, now)
        if ftype != CHANNEL or type_flags & FLAG_COMPLETE:
            st.in_done = True
        if field >= 0 and st.retry is not None:  # kept to be sent again: a stamped copy, as the provider gets it
            buf = _stamped_copy(p, off, end, field, st.span)
            p = <const unsigned char*>PyBytes_AS_STRING(buf)
            end -= off
            off = 0
            field = -1
        _forward_stamped(dest, prov_sid, buf, p, off, end, field, st.span)  # the provider's span is a child of this hop's
        meter.bytes_in += end - off
        if st.retry is not None:
            _keep(rules.state, st, buf, p, off, end)  # kept whole, as the provider got it: it may be sent again
        if dest.write_paused:
            session._blocked_by(dest)
    if session.write_paused and not session.closing:
        session._blocked_by(session)
    return True


def forward(object dest, object sid, object buf, Py_ssize_t off, Py_ssize_t end):
    cdef const unsigned char[:] view = buf
    _check_view(view.shape[0], off, end)
    _forward(dest, sid, buf, _start(view), off, end)


cdef inline int _forward(object dest, object sid, object buf, const unsigned char* p, Py_ssize_t off, Py_ssize_t end) except -1:
    """Append ``prefix + sid + buf[off + 4:end]`` to ``dest.wire_out`` in one resize and two copies."""
    return _forward_stamped(dest, sid, buf, p, off, end, -1, 0)


cdef int _forward_stamped(
    object dest, object sid, object buf, const unsigned char* p, Py_ssize_t off, Py_ssize_t end, Py_ssize_t field,
    uint64_t span,
) except -1:
    """``_forward`` with ``span`` as the parent id whose 16 digits lie ``field`` bytes into the
    frame (-1: none): written where the frame was queued in ``wire_out``, else (``forward``,
    a WebSocket) into a stamped copy, as the pure twin's ``stamp_parent`` makes."""
    out = dest.wire_out
    if out is None:
        if field >= 0:
            buf = _stamped_copy(p, off, end, field, span)
            end -= off
            off = 0
        dest.forward(sid, buf, off, end)
        return 0
    cdef bytearray wire = out
    cdef bytes sid_bytes = sid
    cdef Py_ssize_t size = end - off
    if size > MAX_PREFIXED:
        raise OverflowError("int too big to convert")
    cdef Py_ssize_t sid_len = PyBytes_GET_SIZE(sid_bytes)
    cdef Py_ssize_t old = PyByteArray_GET_SIZE(wire)
    PyByteArray_Resize(wire, old + 3 + sid_len + size - 4)
    cdef unsigned char* q = <unsigned char*>PyByteArray_AS_STRING(wire) + old
    q[0] = (size >> 16) & 0xFF
    q[1] = (size >> 8) & 0xFF
    q[2] = size & 0xFF
    memcpy(q + 3, PyBytes_AS_STRING(sid_bytes), sid_len)
    memcpy(q + 3 + sid_len, p + off + 4, size - 4)
    if field >= 0:
        _write_hex(q + 3 + sid_len - 4 + field, span)
    dest.frames_out += 1
    if not dest._queued:
        dest._queued = True
        dest.broker.mark_dirty(dest)
    return 0


def request_metadata(object buf, Py_ssize_t off, Py_ssize_t end):
    cdef const unsigned char* p = _bytes_of(buf)
    _check_view(len(buf) if p == NULL else PyBytes_GET_SIZE(buf), off, end)
    cdef const unsigned char[:] view
    if p == NULL:
        view = buf
        p = _start(view)
    cdef unsigned int ftype = p[off + 4] >> 2
    cdef unsigned int flags = ((p[off + 4] << 8) | p[off + 5]) & 0x3FF
    cdef Py_ssize_t pos
    cdef Py_ssize_t mlen
    if ftype == METADATA_PUSH:
        return PyBytes_FromStringAndSize(<const char*>p + off + HEADER_LENGTH, end - off - HEADER_LENGTH), False
    pos = off + HEADER_LENGTH + 4 if ftype == STREAM or ftype == CHANNEL else off + HEADER_LENGTH
    if pos > end:
        raise FrameError(f"frame type {ftype} of {end - off} bytes is too short for its fixed fields")
    if not flags & FLAG_METADATA:
        return _EMPTY, pos < end
    if end - pos < 3:
        raise FrameError("frame has the metadata flag but no metadata length")
    mlen = (<Py_ssize_t>p[pos] << 16) | (p[pos + 1] << 8) | p[pos + 2]
    pos += 3
    if pos + mlen > end:
        raise FrameError(f"metadata length {mlen} runs past the end of the frame")
    return PyBytes_FromStringAndSize(<const char*>p + pos, mlen), pos + mlen < end


#: 1 for the bytes of a lower-case hex digit, 0 for the other 240: ``_hex`` checks a byte with
#: one load and no branch
cdef unsigned char HEX_DIGIT[256]
cdef int _i
for _i in range(16):
    HEX_DIGIT[<unsigned char>HEX[_i]] = 1
#: a byte's value in each of the 8 bytes of a word (``_hex_id``'s per-byte sums)
cdef uint64_t ONES = 0x0101010101010101ULL
cdef uint64_t HIGH = 0x8080808080808080ULL


cdef inline bint _hex(const unsigned char* p, Py_ssize_t n, bint nonzero) noexcept:
    """``p[0:n]`` is lower-case hex (and, with ``nonzero``, not all '0')."""
    cdef Py_ssize_t i
    cdef unsigned char digits = 1
    cdef unsigned char other = 0  # some bit of a byte that is not '0'
    for i in range(n):
        digits &= HEX_DIGIT[p[i]]
        other |= p[i] ^ 48
    return digits and (other or not nonzero)


cdef inline bint _hex_id(const unsigned char* p, Py_ssize_t words) noexcept:
    """``_hex(p, 8 * words, True)`` (a trace or parent id) eight bytes a step: with every byte
    below 0x80, adding 0x80 - c to it sets its top bit exactly when it is at least c, and
    carries into no other byte (a byte of 0x80 or more fails the check by its own top bit)."""
    cdef uint64_t w
    cdef uint64_t ok = HIGH
    cdef uint64_t other = 0
    cdef Py_ssize_t i
    for i in range(words):
        memcpy(&w, p + 8 * i, 8)
        ok &= ~w & (
            ((w + 0x50 * ONES) & ~(w + 0x46 * ONES))  # '0' <= c <= '9'
            | ((w + 0x1F * ONES) & ~(w + 0x19 * ONES))  # 'a' <= c <= 'f'
        )
        other |= w ^ (0x30 * ONES)
    return ok == HIGH and other != 0


cdef bint _trace_context(const unsigned char* p, Py_ssize_t n):
    """``tracing.ENTRY.fullmatch``: a W3C version-00 ``traceparent``, then optionally a newline
    and a printable ASCII ``tracestate`` of at most 512 bytes."""
    cdef Py_ssize_t i
    if n < TRACEPARENT_LEN or (n > TRACEPARENT_LEN and (p[TRACEPARENT_LEN] != 10 or n - TRACEPARENT_LEN - 1 > MAX_TRACESTATE)):
        return False
    if p[0] != 48 or p[1] != 48 or p[2] != 45 or p[35] != 45 or p[52] != 45:
        return False
    if not (_hex_id(p + 3, 4) and _hex_id(p + PARENT_AT, 2) and _hex(p + 53, 2, False)):
        return False
    for i in range(TRACEPARENT_LEN + 1, n):
        if p[i] < 0x20 or p[i] > 0x7E:
            return False
    return True


def trace_entry(bytes metadata, Py_ssize_t max_entries):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(metadata)
    cdef Py_ssize_t total = PyBytes_GET_SIZE(metadata)
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t at = _find_trace(p, total, &count)
    if at < 0 or count > max_entries:
        return metadata, -1
    return _route_key(p, total, at), at


cdef Py_ssize_t _find_trace(const unsigned char* p, Py_ssize_t total, Py_ssize_t* count) noexcept:
    """Where the content of the first trace entry of the ``total`` bytes of composite metadata
    at ``p`` starts, when it is a well-formed trace context, else -1 (also for a broken entry
    before it); ``count`` gets how many entries were walked (``trace_entry`` stops its walk at
    ``max_entries``, which its callers compare to)."""
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t length
    cdef unsigned int first
    cdef Py_ssize_t i
    cdef bint traced
    while pos < total:
        count[0] += 1
        first = p[pos]
        if first & 0x80:
            traced = False
            pos += 1
        else:
            traced = (
                first == TRACE_MIME_LEN - 1
                and total - pos - 1 >= TRACE_MIME_LEN
                and memcmp(p + pos + 1, TRACE_MIME_P, TRACE_MIME_LEN) == 0
            )
            if not traced:
                for i in range(pos + 1, min(pos + 2 + first, total)):
                    if p[i] & 0x80:
                        return -1
            pos += 2 + first
        if total - pos < 3:
            return -1
        length = (<Py_ssize_t>p[pos] << 16) | (p[pos + 1] << 8) | p[pos + 2]
        pos += 3
        if pos + length > total:
            return -1
        if traced:
            return pos if _trace_context(p + pos, length) else -1
        pos += length
    return -1


cdef inline Py_ssize_t _length_before(const unsigned char* q) noexcept:
    """The 3-byte big-endian length that precedes ``q`` (an entry's content)."""
    return (<Py_ssize_t>q[-3] << 16) | (q[-2] << 8) | q[-1]


cdef bytes _route_key(const unsigned char* p, Py_ssize_t total, Py_ssize_t at):
    """``trace_entry``'s route key of the metadata at ``p`` whose trace content starts at ``at``:
    that content cut out and its length set to 0."""
    cdef Py_ssize_t length = _length_before(p + at)
    cdef bytes key = PyBytes_FromStringAndSize(NULL, total - length)
    cdef char* q = PyBytes_AS_STRING(key)
    memcpy(q, p, at - 3)
    q[at - 3] = q[at - 2] = q[at - 1] = 0
    memcpy(q + at, p + at + length, total - at - length)
    return key


def trace_stream(Stream st, bytes metadata, Py_ssize_t at, object provider):
    cdef Py_ssize_t size = PyBytes_GET_SIZE(metadata)
    if not 3 <= at <= size:
        raise ValueError(f"no trace entry content at offset {at} of {size} bytes of metadata")
    cdef const unsigned char* m = <const unsigned char*>PyBytes_AS_STRING(metadata)
    _trace(st, m, at, min(_length_before(m + at), size - at), provider)


cdef inline int _trace(Stream st, const unsigned char* m, Py_ssize_t at, Py_ssize_t length, object provider) except -1:
    """``trace_stream`` on metadata at ``m`` whose trace content is ``m[at:at + length]``."""
    if length == TRACEPARENT_LEN:
        memcpy(st.traceparent, m + at, TRACEPARENT_LEN)
    else:
        st.trace_other = PyBytes_FromStringAndSize(<const char*>m + at, length)
    st.trace_at = at
    st.span = _next_span()
    st.provider = provider
    return 0


def stamp_parent(object buf, Py_ssize_t off, Py_ssize_t end, Py_ssize_t at, object span):
    cdef const unsigned char* p = _bytes_of(buf)
    _check_view(len(buf) if p == NULL else PyBytes_GET_SIZE(buf), off, end)
    cdef const unsigned char[:] view
    if p == NULL:
        view = buf
        p = _start(view)
    return _stamp(p, off, end, at, span)


cdef bytes _stamp(const unsigned char* p, Py_ssize_t off, Py_ssize_t end, Py_ssize_t at, object span):
    """``stamp_parent`` on a frame known to hold its header within ``p``'s buffer."""
    cdef unsigned int ftype = p[off + 4] >> 2
    cdef Py_ssize_t field = -1
    if 0 <= at <= end - off:
        field = (HEADER_LENGTH + 4 if ftype == STREAM or ftype == CHANNEL else HEADER_LENGTH) + 3 + at
    if field < 0 or field + PARENT_LEN > end - off or not 0 < span < SPAN_LIMIT:
        raise FrameError(f"no traceparent parent id fits at metadata offset {at} of a {end - off}-byte frame")
    return _stamped_copy(p, off, end, field, span)


cdef bytes _stamped_copy(const unsigned char* p, Py_ssize_t off, Py_ssize_t end, Py_ssize_t field, uint64_t span):
    """A copy of the frame ``p[off:end]`` with ``span``'s digits ``field`` bytes into it (checked)."""
    cdef bytes frame = PyBytes_FromStringAndSize(<const char*>p + off, end - off)
    _write_hex(<unsigned char*>PyBytes_AS_STRING(frame) + field, span)
    return frame


cdef inline void _write_hex(unsigned char* q, uint64_t value) noexcept:
    """The 16 lower-case hex digits of ``value`` at ``q``."""
    cdef int i
    for i in range(PARENT_LEN - 1, -1, -1):
        q[i] = HEX[value & 0xF]
        value >>= 4
