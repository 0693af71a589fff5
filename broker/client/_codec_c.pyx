# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled twin of ``broker/client/_codec.py``: the same functions, the same behaviour and
the same error messages; read that module for what each does and why.

Why it is faster: a received chunk or frame is read through one typed view and a raw
pointer, so the split loop, the header and the metadata/data offsets are C; frames are
written with one allocation each (``PyBytes_FromStringAndSize`` then ``memcpy``) and a batch
of frames as one TCP write with one more. Bounds are checked by hand (``boundscheck`` is
off), once per chunk and once per frame, before any byte is read. The futures, dicts and
connection methods it calls are the connection's own Python objects. Inputs off the fast
path (a bytearray to send, an unusual argument) go to the pure module, so they work, or fail,
exactly as there.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

from broker.client import _codec as _pure
from broker.frames import FrameError, FrameTooLarge

__all__ = ["encode_payload", "encode_request", "prefixed", "read_frames", "received", "request_parts"]

cdef enum:
    HEADER_LENGTH = 6
    MAX_PREFIXED = 0xFFFFFF
    MAX_REQUEST_N = 0x7FFFFFFF
    RR = 0x04
    FNF = 0x05
    STREAM = 0x06
    CHANNEL = 0x07
    PAYLOAD = 0x0A
    FLAG_METADATA = 0x100
    FLAG_FOLLOWS = 0x80
    FLAG_COMPLETE = 0x40
    FLAG_NEXT = 0x20

cdef bytes _EMPTY = b""


cdef inline const unsigned char* _start(const unsigned char[:] view):
    """Pointer to the first byte of ``view`` (NULL for an empty one, which is never read)."""
    if view.shape[0] == 0:
        return NULL
    return &view[0]


cdef inline int _check_view(Py_ssize_t size, Py_ssize_t off, Py_ssize_t end) except -1:
    if end - off < HEADER_LENGTH:
        raise FrameError(f"frame of {max(0, end - off)} bytes is shorter than the 6-byte frame header")
    if off < 0 or end > size:
        raise FrameError(f"frame bounds {off}:{end} lie outside the {size}-byte buffer")
    return 0


def read_frames(object sink, object data, Py_ssize_t max_frame):
    cdef const unsigned char[:] view = data
    cdef const unsigned char* p = _start(view)
    cdef Py_ssize_t n = view.shape[0]
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t end
    cdef Py_ssize_t length
    deliver = sink.frame_received
    while n - pos >= 3:
        length = (<Py_ssize_t>p[pos] << 16) | (p[pos + 1] << 8) | p[pos + 2]
        if length > max_frame:
            raise FrameTooLarge(f"frame of {length} bytes exceeds the maximum frame size of {max_frame} bytes")
        if length < HEADER_LENGTH:
            raise FrameError(f"frame of {length} bytes is shorter than the 6-byte frame header")
        end = pos + 3 + length
        if end > n:
            return pos, end - pos
        deliver(data, pos + 3, end)
        pos = end
    return pos, 3


cdef inline bytes _slice(const unsigned char* p, Py_ssize_t start, Py_ssize_t stop):
    if stop <= start:
        return _EMPTY
    return PyBytes_FromStringAndSize(<const char*>p + start, stop - start)


cdef tuple _parts(const unsigned char* p, Py_ssize_t off, Py_ssize_t end, unsigned int ftype, unsigned int flags):
    """``request_parts`` of a frame known to hold a header within ``p``'s buffer."""
    cdef Py_ssize_t pos = off + HEADER_LENGTH + 4 if ftype == STREAM or ftype == CHANNEL else off + HEADER_LENGTH
    cdef Py_ssize_t mlen
    if not flags & FLAG_METADATA:
        if pos > end:
            raise FrameError("metadata length runs past the end of the frame")
        return _EMPTY, _slice(p, pos, end)
    if pos > end:
        raise FrameError(f"frame type {ftype} of {end - off} bytes is too short for its fixed fields")
    if end - pos < 3:
        raise FrameError("frame has the metadata flag but no metadata length")
    mlen = (<Py_ssize_t>p[pos] << 16) | (p[pos + 1] << 8) | p[pos + 2]
    pos += 3
    if pos + mlen > end:
        raise FrameError(f"metadata length {mlen} runs past the end of the frame")
    return _slice(p, pos, pos + mlen), _slice(p, pos + mlen, end)


cdef inline bytes _data(const unsigned char* p, Py_ssize_t off, Py_ssize_t end, unsigned int flags):
    """The data of a PAYLOAD frame (its metadata skipped), with ``_parts``'s checks."""
    cdef Py_ssize_t pos = off + HEADER_LENGTH
    if flags & FLAG_METADATA:
        return <bytes>_parts(p, off, end, PAYLOAD, flags)[1]
    return _slice(p, pos, end)


def received(object conn, object buf, Py_ssize_t off, Py_ssize_t end):
    cdef const unsigned char[:] view = buf
    _check_view(view.shape[0], off, end)
    cdef const unsigned char* p = _start(view)
    conn._heard = True
    cdef long sid = (
        ((<long>p[off] << 24) | (<long>p[off + 1] << 16) | (p[off + 2] << 8) | p[off + 3]) & 0x7FFFFFFF
    )
    cdef unsigned int ftype = p[off + 4] >> 2
    cdef unsigned int flags = ((p[off + 4] << 8) | p[off + 5]) & 0x3FF
    cdef tuple parts
    if sid:
        if ftype == PAYLOAD:
            if not flags & FLAG_FOLLOWS:
                reassembly = conn._reassembly
                if not (((<dict?>reassembly.partial) or (<set?>reassembly.skipping)) and sid in reassembly):
                    future = (<dict?>conn._pending).pop(sid, None)
                    if future is not None:
                        if not future.done():
                            future.set_result(_data(p, off, end, flags) if flags & FLAG_NEXT else _EMPTY)
                        return
                    stream = (<dict?>conn._streams).get(sid)
                    if stream is not None:
                        conn._on_payload(stream, _data(p, off, end, flags) if flags & FLAG_NEXT else None, flags)
                    return
        elif (ftype == RR or ftype == STREAM or ftype == CHANNEL or ftype == FNF) and not flags & FLAG_FOLLOWS:
            parts = _parts(p, off, end, ftype, flags)
            metadata = parts[0]
            conn._on_request(buf, off, end, sid, ftype, flags, metadata, parts[1], (<dict?>conn._routes).get(metadata))
            return
    conn._other_frame(buf, off, end, sid, ftype, flags)


def request_parts(object buf, Py_ssize_t off, Py_ssize_t end):
    cdef const unsigned char[:] view = buf
    _check_view(view.shape[0], off, end)
    cdef const unsigned char* p = _start(view)
    return _parts(p, off, end, p[off + 4] >> 2, ((p[off + 4] << 8) | p[off + 5]) & 0x3FF)


cdef inline void _put_head(unsigned char* q, unsigned long sid, unsigned int ftype, unsigned int flags):
    q[0] = (sid >> 24) & 0x7F
    q[1] = (sid >> 16) & 0xFF
    q[2] = (sid >> 8) & 0xFF
    q[3] = sid & 0xFF
    q[4] = ((ftype << 2) | (flags >> 8)) & 0xFF
    q[5] = flags & 0xFF


def encode_request(object ftype, object sid, object metadata, object data, object initial_n, bint complete):
    cdef bint with_n
    if (
        type(data) is not bytes
        or (metadata is not None and type(metadata) is not bytes)
        or not isinstance(ftype, int)
        or not 0 <= ftype <= 0x3F
        or not isinstance(initial_n, int)
        or initial_n < 0
    ):
        return _pure.encode_request(ftype, sid, metadata, data, initial_n, complete)  # its errors, its way
    cdef unsigned int kind = ftype
    cdef unsigned int flags = FLAG_COMPLETE if complete else 0
    with_n = kind == STREAM or kind == CHANNEL
    cdef Py_ssize_t mlen = 0
    cdef unsigned long n = 0
    if with_n:
        n = MAX_REQUEST_N if initial_n > MAX_REQUEST_N else <unsigned long>initial_n
    if metadata is not None:
        mlen = PyBytes_GET_SIZE(metadata)
        if mlen > MAX_PREFIXED:
            raise OverflowError("int too big to convert")
        flags |= FLAG_METADATA
    cdef Py_ssize_t dlen = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t size = HEADER_LENGTH + (4 if with_n else 0) + (3 + mlen if metadata is not None else 0) + dlen
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef unsigned char* q = <unsigned char*>PyBytes_AS_STRING(out)
    _put_head(q, <unsigned long>(sid & 0x7FFFFFFF), kind, flags)
    q += HEADER_LENGTH
    if with_n:
        q[0] = (n >> 24) & 0xFF
        q[1] = (n >> 16) & 0xFF
        q[2] = (n >> 8) & 0xFF
        q[3] = n & 0xFF
        q += 4
    if metadata is not None:
        q[0] = (mlen >> 16) & 0xFF
        q[1] = (mlen >> 8) & 0xFF
        q[2] = mlen & 0xFF
        memcpy(q + 3, PyBytes_AS_STRING(metadata), mlen)
        q += 3 + mlen
    memcpy(q, PyBytes_AS_STRING(data), dlen)
    return out


def encode_payload(object sid, object data, bint complete):
    if type(data) is not bytes:
        return _pure.encode_payload(sid, data, complete)  # a bytearray works, a str fails, as there
    cdef Py_ssize_t dlen = PyBytes_GET_SIZE(data)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, HEADER_LENGTH + dlen)
    cdef unsigned char* q = <unsigned char*>PyBytes_AS_STRING(out)
    _put_head(q, <unsigned long>(sid & 0x7FFFFFFF), PAYLOAD, FLAG_NEXT | FLAG_COMPLETE if complete else FLAG_NEXT)
    memcpy(q + HEADER_LENGTH, PyBytes_AS_STRING(data), dlen)
    return out


def prefixed(object frames):
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t size
    if type(frames) is not list:
        return _pure.prefixed(frames)
    for frame in <list>frames:
        if type(frame) is not bytes:
            return _pure.prefixed(frames)
        size = PyBytes_GET_SIZE(frame)
        if size > MAX_PREFIXED:
            raise OverflowError("int too big to convert")
        total += 3 + size
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char* q = <unsigned char*>PyBytes_AS_STRING(out)
    for frame in <list>frames:
        size = PyBytes_GET_SIZE(frame)
        q[0] = (size >> 16) & 0xFF
        q[1] = (size >> 8) & 0xFF
        q[2] = size & 0xFF
        memcpy(q + 3, PyBytes_AS_STRING(frame), size)
        q += 3 + size
    return out
