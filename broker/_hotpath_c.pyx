# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled twin of ``broker/_hotpath.py``: the same six functions, the same behaviour and
the same error messages; read that module for what each does and why.

Why it is faster: a received chunk is read through one typed view and a raw pointer, the
split loop, the header, the stream-id arithmetic and the coalescing copy are C, and no
Python object is made per frame but the stream-map key and the counters. Bounds are checked by hand
(``boundscheck`` is off), once per chunk and once per frame, before any byte is read. The
route metering stays Python attribute updates (and one ``RouteMeter.ended`` call per stream):
that is what its readers (``admin/metrics.py``) see.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcmp, memcpy

from broker.frames import ErrorCode, FrameError
from broker.metering import OK as _OK
from broker.tracing import MARKER as _MARKER

cdef object CONNECTION_ERROR = int(ErrorCode.CONNECTION_ERROR)
cdef object OK = _OK

__all__ = ["forward", "read_frames", "relay_frame", "request_metadata", "stamp_parent", "trace_entry"]

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
cdef bytes TRACE_MIME = _MARKER
cdef Py_ssize_t TRACE_MIME_LEN = len(_MARKER)
cdef const char* TRACE_MIME_P = TRACE_MIME
cdef const char* HEX = b"0123456789abcdef"
cdef object SPAN_LIMIT = int("10000000000000000", 16)  # span ids are 64 bits


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


def read_frames(object session, object data):
    cdef const unsigned char[:] view = data
    cdef const unsigned char* p = _start(view)
    cdef Py_ssize_t n = view.shape[0]
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t end
    cdef long long length
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
        _relay(session, data, p, pos + 3, end)
        pos = end
        if session.closing:
            return pos, 0
    return pos, 3


def relay_frame(object session, object buf, Py_ssize_t off, Py_ssize_t end):
    cdef const unsigned char[:] view = buf
    _check_view(view.shape[0], off, end)
    _relay(session, buf, _start(view), off, end)


cdef int _relay(object session, object buf, const unsigned char* p, Py_ssize_t off, Py_ssize_t end) except -1:
    """``relay_frame`` on a frame already known to lie within ``p``'s buffer."""
    session.frames_in += 1
    cdef unsigned long sid = (
        (<unsigned long>p[off] << 24) | (<unsigned long>p[off + 1] << 16) | (p[off + 2] << 8) | p[off + 3]
    )
    cdef unsigned int type_flags = (p[off + 4] << 8) | p[off + 5]
    cdef unsigned int ftype = type_flags >> 10
    cdef dict streams
    if sid and (ftype == PAYLOAD or ftype == REQUEST_N or ftype == CANCEL or ftype == ERROR):
        streams = session.streams
        st = streams.get(<long>(sid & 0x7FFFFFFF))
        if st is not None:
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
                    st.first_at = session.broker.clock()
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
                    first_at = st.first_at
                    st.meter.ended(OK, st.opened_at, first_at, first_at)
                    if st.trace is not None:
                        session.broker.tracer.record(st, OK, first_at)
                    if session.failures:  # outlier detection: an answer heals the provider
                        session.broker.provider_outcome(session, st.route, True)
                else:
                    session._provider_sent(st, ftype, type_flags, buf, off, end)
            if dest.write_paused:
                session._blocked_by(dest)
            return 0
    session.other_frame(buf, off, end, sid, ftype, type_flags)
    return 0


def forward(object dest, object sid, object buf, Py_ssize_t off, Py_ssize_t end):
    cdef const unsigned char[:] view = buf
    _check_view(view.shape[0], off, end)
    _forward(dest, sid, buf, _start(view), off, end)


cdef int _forward(object dest, object sid, object buf, const unsigned char* p, Py_ssize_t off, Py_ssize_t end) except -1:
    """Append ``prefix + sid + buf[off + 4:end]`` to ``dest.wire_out`` in one resize and two copies."""
    out = dest.wire_out
    if out is None:
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


cdef inline bint _hex(const unsigned char* p, Py_ssize_t n, bint nonzero):
    """``p[0:n]`` is lower-case hex (and, with ``nonzero``, not all '0')."""
    cdef Py_ssize_t i
    cdef bint seen = not nonzero
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        if not ((c >= 48 and c <= 57) or (c >= 97 and c <= 102)):
            return False
        if c != 48:
            seen = True
    return seen


cdef bint _trace_context(const unsigned char* p, Py_ssize_t n):
    """``tracing.ENTRY.fullmatch``: a W3C version-00 ``traceparent``, then optionally a newline
    and a printable ASCII ``tracestate`` of at most 512 bytes."""
    cdef Py_ssize_t i
    if n < TRACEPARENT_LEN or (n > TRACEPARENT_LEN and (p[TRACEPARENT_LEN] != 10 or n - TRACEPARENT_LEN - 1 > MAX_TRACESTATE)):
        return False
    if p[0] != 48 or p[1] != 48 or p[2] != 45 or p[35] != 45 or p[52] != 45:
        return False
    if not (_hex(p + 3, 32, True) and _hex(p + PARENT_AT, PARENT_LEN, True) and _hex(p + 53, 2, False)):
        return False
    for i in range(TRACEPARENT_LEN + 1, n):
        if p[i] < 0x20 or p[i] > 0x7E:
            return False
    return True


def trace_entry(bytes metadata, Py_ssize_t max_entries):
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(metadata)
    cdef Py_ssize_t total = PyBytes_GET_SIZE(metadata)
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t count = 0
    cdef Py_ssize_t length
    cdef unsigned int first
    cdef Py_ssize_t i
    cdef bint traced
    cdef bytes key
    cdef char* q
    while pos < total and count < max_entries:
        count += 1
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
                        return metadata, -1
            pos += 2 + first
        if total - pos < 3:
            return metadata, -1
        length = (<Py_ssize_t>p[pos] << 16) | (p[pos + 1] << 8) | p[pos + 2]
        pos += 3
        if pos + length > total:
            return metadata, -1
        if traced:
            if not _trace_context(p + pos, length):
                return metadata, -1
            key = PyBytes_FromStringAndSize(NULL, total - length)
            q = PyBytes_AS_STRING(key)
            memcpy(q, p, pos - 3)
            q[pos - 3] = q[pos - 2] = q[pos - 1] = 0
            memcpy(q + pos, p + pos + length, total - pos - length)
            return key, pos
        pos += length
    return metadata, -1


def stamp_parent(object buf, Py_ssize_t off, Py_ssize_t end, Py_ssize_t at, object span):
    cdef const unsigned char* p = _bytes_of(buf)
    _check_view(len(buf) if p == NULL else PyBytes_GET_SIZE(buf), off, end)
    cdef const unsigned char[:] view
    if p == NULL:
        view = buf
        p = _start(view)
    cdef unsigned int ftype = p[off + 4] >> 2
    cdef Py_ssize_t field = -1
    if 0 <= at <= end - off:
        field = (HEADER_LENGTH + 4 if ftype == STREAM or ftype == CHANNEL else HEADER_LENGTH) + 3 + at
    if field < 0 or field + PARENT_LEN > end - off or not 0 < span < SPAN_LIMIT:
        raise FrameError(f"no traceparent parent id fits at metadata offset {at} of a {end - off}-byte frame")
    cdef unsigned long long value = span
    cdef bytes frame = PyBytes_FromStringAndSize(<const char*>p + off, end - off)
    cdef unsigned char* q = <unsigned char*>PyBytes_AS_STRING(frame) + field
    cdef int i
    for i in range(PARENT_LEN - 1, -1, -1):
        q[i] = HEX[value & 0xF]
        value >>= 4
    return frame
