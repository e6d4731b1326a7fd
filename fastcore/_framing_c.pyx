# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: libraries = z
"""Compiled framing (see fastcore.framing for the API; fastcore._framing_py is its twin).

Talks to zlib's C API directly:

- ``pack`` allocates the frame once, sized for the raw case
  (header + len(data)), deflates straight into it with the output capped at
  the largest payload worth keeping (so a poor compression result is noticed
  as soon as it runs out of room), falls back to copying the data raw, then
  shrinks the bytes object in place.
- ``unpack`` inflates straight into a bytes object of exactly the declared
  length: a payload that wants even one more byte is rejected, so nothing
  bigger than ``max_size`` is ever allocated.
- Frames use raw deflate (no zlib header/adler32): the frame's CRC32 covers
  integrity. Payloads under ``_NOGIL_MIN`` reuse one module-level deflate and
  one inflate context (reset before every use, with the GIL held and no
  Python code running in between, so a call that failed midway leaves
  nothing behind); bigger ones use a private context and release the GIL.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, _PyBytes_Resize
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_XDECREF
from libc.limits cimport UINT_MAX
from libc.math cimport ceil
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset

__all__ = [
    "CODEC_DEFLATE",
    "CODEC_RAW",
    "MAGIC",
    "VERSION",
    "FrameError",
    "Inflater",
    "pack",
    "unpack",
]


cdef extern from "Python.h":
    # Owned raw pointers for bytes objects that get resized (_PyBytes_Resize
    # needs the only reference) before being handed out.
    PyObject* _new_bytes "PyBytes_FromStringAndSize"(const char* data, Py_ssize_t size) except NULL
    char* _bytes_data "PyBytes_AS_STRING"(PyObject* data)
    int _try_resize_bytes "_PyBytes_Resize"(PyObject** data, Py_ssize_t size)


cdef enum:
    _MAGIC0 = 0xFA
    _MAGIC1 = 0xCE
    _VERSION = 1
    _CODEC_RAW = 0
    _CODEC_DEFLATE = 1
    # Deflate cannot expand data by more than 1032:1 (a 258-byte match costs
    # at least 2 bits): a declared length above that is rejected unallocated.
    _MAX_DEFLATE_RATIO = 1032
    # Payloads from this size on get a private zlib context and release the GIL.
    _NOGIL_MIN = 256 * 1024
    _MEM_LEVEL = 8              # zlib's default, as the zlib module uses
    _NOT_READY = -2             # _deflater_level before the first deflateInit2
    _KEEP_PENDING_MAX = 64 * 1024  # Inflater frees a bigger message buffer after use

# Outcomes of the deflate / inflate loops below.
cdef enum:
    _FITS           # deflate: the whole stream fit in the output room
    _NO_ROOM        # deflate: it did not
    _ENDED          # inflate: the stream ended and all input was used
    _INPUT_USED     # inflate: all input used, the stream goes on
    _OUTPUT_FULL    # inflate: the output room is full
    _AFTER_END      # inflate: the stream ended before the input did
    _TOO_LONG       # inflate: more output than expected
    _TOO_SHORT      # inflate: the stream ended with less output than expected
    _CORRUPT        # zlib rejected the data (or its state)
    _NO_MEMORY

MAGIC = bytes((_MAGIC0, _MAGIC1))
VERSION = _VERSION
CODEC_RAW = _CODEC_RAW
CODEC_DEFLATE = _CODEC_DEFLATE
# The zlib actually linked: frames are byte-identical across implementations
# only when both use the same zlib (the tests check that).
_ZLIB_RUNTIME_VERSION = zlibVersion().decode("ascii")


class FrameError(ValueError):
    """A frame or a zlib stream is truncated, corrupt, oversized or unsupported."""


# -- argument checks ----------------------------------------------------------

cdef int _get_buffer(object obj, Py_buffer* view, str name) except -1:
    """Acquire obj's bytes (bytes, bytearray or a C-contiguous memoryview).

    TypeError for any other type, ValueError for a released memoryview.
    """
    if isinstance(obj, bytes) or isinstance(obj, bytearray):
        pass
    elif isinstance(obj, memoryview):
        if not obj.c_contiguous:
            raise TypeError(f"{name} must be a C-contiguous memoryview")
    else:
        raise TypeError(f"{name} must be bytes, bytearray or memoryview, not {type(obj).__name__}")
    PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    return 0


cdef Py_ssize_t _size_arg(object value, str name) except? -1:
    """A non-negative int; values beyond PY_SSIZE_T_MAX are clamped."""
    cdef int overflow = 0
    cdef long long result
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    result = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow > 0:
        return PY_SSIZE_T_MAX
    if overflow < 0 or result < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if result > PY_SSIZE_T_MAX:
        return PY_SSIZE_T_MAX
    return <Py_ssize_t>result


cdef int _level_arg(object value) except? -3:
    cdef int overflow = 0
    cdef long long result
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"level must be an int, not {type(value).__name__}")
    result = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or not -1 <= result <= 9:
        raise ValueError(f"level must be in 0..9 or -1 (default), got {value}")
    return <int>result


cdef double _fraction_arg(object value) except -1.0:
    cdef double result
    if isinstance(value, bool) or not (isinstance(value, float) or isinstance(value, int)):
        raise TypeError(f"min_saving must be a float, not {type(value).__name__}")
    if isinstance(value, int):
        if value != 0:
            raise ValueError(f"min_saving must be in [0, 1), got {value}")
        return 0.0
    result = value
    if not 0.0 <= result < 1.0:  # also rejects NaN
        raise ValueError(f"min_saving must be in [0, 1), got {value}")
    return result


# -- zlib loops (no Python objects: callable without the GIL) -----------------

cdef inline size_t _slice32(size_t size) noexcept nogil:
    # avail_in / avail_out are 32-bit: huge buffers go through in slices.
    return size if size < UINT_MAX else UINT_MAX


cdef int _deflate_bounded(z_stream* strm, const unsigned char* src, size_t size,
                          unsigned char* dst, size_t room, size_t* written) noexcept nogil:
    """Compress src[:size] as one finished stream into dst[:room].

    Returns _FITS (setting *written), _NO_ROOM if the stream needs more than
    room bytes, or _CORRUPT if zlib reports a broken state.
    """
    cdef size_t in_left = size
    cdef size_t out_used = 0
    cdef size_t chunk_in, chunk_out
    cdef unsigned char probe
    cdef int ret
    strm.next_in = <unsigned char*>src
    strm.next_out = dst
    while True:
        chunk_in = _slice32(in_left)
        chunk_out = _slice32(room - out_used)
        strm.avail_in = <unsigned int>chunk_in
        strm.avail_out = <unsigned int>chunk_out
        ret = deflate(strm, Z_FINISH if chunk_in == in_left else Z_NO_FLUSH)
        in_left -= chunk_in - strm.avail_in
        out_used += chunk_out - strm.avail_out
        if ret == Z_STREAM_END:
            written[0] = out_used
            return _FITS
        if ret != Z_OK and ret != Z_BUF_ERROR:
            return _CORRUPT
        if out_used == room:
            break
        if ret == Z_BUF_ERROR:  # no progress possible with room left: zlib is confused
            return _CORRUPT
    if in_left:
        return _NO_ROOM
    # dst is exactly full and all input was taken: zlib only reports the end
    # of the stream on a call that has output room, so ask with one spare byte.
    strm.avail_in = 0
    strm.next_out = &probe
    strm.avail_out = 1
    if deflate(strm, Z_FINISH) == Z_STREAM_END and strm.avail_out == 1:
        written[0] = out_used
        return _FITS
    return _NO_ROOM


cdef int _deflate_alone(int level, const unsigned char* src, size_t size,
                        unsigned char* dst, size_t room, size_t* written) noexcept nogil:
    """_deflate_bounded with a private raw deflate context."""
    cdef z_stream strm
    cdef int outcome
    memset(&strm, 0, sizeof(z_stream))
    if deflateInit2(&strm, level, Z_DEFLATED, -MAX_WBITS, _MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK:
        return _NO_MEMORY
    outcome = _deflate_bounded(&strm, src, size, dst, room, written)
    deflateEnd(&strm)
    return outcome


cdef int _inflate_bounded(z_stream* strm, const unsigned char** src, size_t* src_left,
                          unsigned char* dst, size_t room, size_t* written,
                          int flush) noexcept nogil:
    """Inflate from *src into dst[:room], advancing *src / *src_left.

    Stops when the input is used up, dst is full, the stream ends or zlib
    fails; sets *written and returns _ENDED, _AFTER_END, _OUTPUT_FULL,
    _INPUT_USED, _CORRUPT or _NO_MEMORY.
    """
    cdef size_t out_used = 0
    cdef size_t chunk_in, chunk_out, consumed
    cdef int ret
    strm.next_out = dst
    while True:
        chunk_in = _slice32(src_left[0])
        chunk_out = _slice32(room - out_used)
        strm.next_in = <unsigned char*>src[0]
        strm.avail_in = <unsigned int>chunk_in
        strm.avail_out = <unsigned int>chunk_out
        ret = inflate(strm, flush)
        consumed = chunk_in - strm.avail_in
        src[0] += consumed
        src_left[0] -= consumed
        out_used += chunk_out - strm.avail_out
        written[0] = out_used
        if ret == Z_STREAM_END:
            return _AFTER_END if src_left[0] else _ENDED
        if ret == Z_MEM_ERROR:
            return _NO_MEMORY
        if ret != Z_OK and ret != Z_BUF_ERROR:
            return _CORRUPT
        if out_used == room:
            return _OUTPUT_FULL
        if src_left[0] == 0:
            return _INPUT_USED
        if consumed == 0 and strm.avail_out == chunk_out:  # stuck: never loop forever
            return _CORRUPT


cdef int _inflate_exact(z_stream* strm, const unsigned char* src, size_t size,
                        unsigned char* dst, size_t expected, size_t* detail) noexcept nogil:
    """Inflate the whole raw deflate payload src[:size], which must produce exactly expected bytes.

    Returns _ENDED on success, else _TOO_LONG, _TOO_SHORT (*detail = bytes
    produced), _INPUT_USED (truncated), _AFTER_END (*detail = bytes left
    over), _CORRUPT or _NO_MEMORY. Writes at most expected bytes.
    """
    cdef size_t left = size
    cdef size_t written = 0
    cdef size_t extra = 0
    cdef unsigned char probe
    cdef int outcome = _inflate_bounded(strm, &src, &left, dst, expected, &written, Z_NO_FLUSH)
    if outcome == _OUTPUT_FULL:
        # Full: the stream must end without producing a single byte more.
        outcome = _inflate_bounded(strm, &src, &left, &probe, 1, &extra, Z_NO_FLUSH)
        if extra:
            return _TOO_LONG
    elif outcome == _ENDED and written != expected:
        detail[0] = written
        return _TOO_SHORT
    if outcome == _AFTER_END:
        detail[0] = left
    return outcome


cdef int _inflate_alone(const unsigned char* src, size_t size, unsigned char* dst,
                        size_t expected, size_t* detail, const char** zmsg) noexcept nogil:
    """_inflate_exact with a private raw inflate context; *zmsg gets zlib's error text."""
    cdef z_stream strm
    cdef int outcome
    memset(&strm, 0, sizeof(z_stream))
    if inflateInit2(&strm, -MAX_WBITS) != Z_OK:
        return _NO_MEMORY
    outcome = _inflate_exact(&strm, src, size, dst, expected, detail)
    zmsg[0] = strm.msg  # zlib's messages are static strings: they outlive the context
    inflateEnd(&strm)
    return outcome


# -- the shared contexts (GIL held while in use) -------------------------------

cdef z_stream _deflater
cdef int _deflater_level = _NOT_READY
cdef z_stream _inflater
cdef bint _inflater_ready = False


cdef z_stream* _shared_deflater(int level) noexcept:
    """The module's raw deflate context, reset and set to level; NULL if out of memory."""
    global _deflater_level
    if _deflater_level != _NOT_READY:
        if deflateReset(&_deflater) == Z_OK:
            if level == _deflater_level:
                return &_deflater
            # No output room: a zlib that would flush here fails instead of
            # writing through a stale pointer, and we start over below.
            _deflater.next_out = NULL
            _deflater.avail_out = 0
            _deflater.avail_in = 0
            if deflateParams(&_deflater, level, Z_DEFAULT_STRATEGY) == Z_OK:
                _deflater_level = level
                return &_deflater
        deflateEnd(&_deflater)
        _deflater_level = _NOT_READY
    memset(&_deflater, 0, sizeof(z_stream))
    if deflateInit2(&_deflater, level, Z_DEFLATED, -MAX_WBITS, _MEM_LEVEL,
                    Z_DEFAULT_STRATEGY) != Z_OK:
        return NULL
    _deflater_level = level
    return &_deflater


cdef z_stream* _shared_inflater() noexcept:
    """The module's raw inflate context, reset; NULL if out of memory."""
    global _inflater_ready
    if _inflater_ready:
        if inflateReset(&_inflater) == Z_OK:
            return &_inflater
        inflateEnd(&_inflater)
        _inflater_ready = False
    memset(&_inflater, 0, sizeof(z_stream))
    if inflateInit2(&_inflater, -MAX_WBITS) != Z_OK:
        return NULL
    _inflater_ready = True
    return &_inflater


# -- frames ---------------------------------------------------------------------

cdef inline Py_ssize_t _varint_size(uint64_t value) noexcept nogil:
    cdef Py_ssize_t size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size


cdef void _write_header(unsigned char* out, int codec, uint64_t length,
                        uint32_t crc) noexcept nogil:
    out[0] = _MAGIC0
    out[1] = _MAGIC1
    out[2] = _VERSION
    out[3] = <unsigned char>codec
    out += 4
    while length >= 0x80:
        out[0] = <unsigned char>((length & 0x7F) | 0x80)
        length >>= 7
        out += 1
    out[0] = <unsigned char>length
    out[1] = <unsigned char>crc
    out[2] = <unsigned char>(crc >> 8)
    out[3] = <unsigned char>(crc >> 16)
    out[4] = <unsigned char>(crc >> 24)


def pack(data, *, threshold=1024, level=6, min_saving=0.1):
    """Return *data* wrapped in a self-describing frame.

    The payload is deflated when ``len(data) >= threshold`` and the
    compressed form is at least ``min_saving`` (a fraction of the original
    size) smaller; otherwise it is stored raw.

    Raises TypeError if *data* is not bytes, bytearray or a C-contiguous
    memoryview, or an argument has the wrong type; ValueError if
    ``threshold < 0``, *level* is outside 0..9 (or -1) or *min_saving* is
    outside [0, 1).
    """
    cdef Py_buffer view
    _get_buffer(data, &view, "data")
    try:
        return _pack(<const unsigned char*>view.buf, view.len, _size_arg(threshold, "threshold"),
                     _level_arg(level), _fraction_arg(min_saving))
    finally:
        PyBuffer_Release(&view)


cdef object _pack(const unsigned char* src, Py_ssize_t size, Py_ssize_t threshold,
                  int level, double min_saving):
    cdef Py_ssize_t header_size = 8 + _varint_size(<uint64_t>size)
    cdef Py_ssize_t payload_size = size
    cdef bint compress = size >= threshold
    cdef size_t limit = 0
    cdef size_t written = 0
    cdef int outcome = _NO_ROOM
    cdef uint32_t crc
    cdef z_stream* strm = NULL
    cdef object result
    # Sized for the raw case; a compressed payload is kept only if smaller.
    cdef PyObject* frame = _new_bytes(NULL, header_size + size)
    cdef unsigned char* payload = <unsigned char*>_bytes_data(frame) + header_size
    if compress:
        # Keep the compressed form only if it saves at least min_saving * size.
        limit = <size_t>(size - <Py_ssize_t>ceil(<double>size * min_saving))
    if size < _NOGIL_MIN:
        crc = <uint32_t>crc32_z(0, src, <size_t>size)
        if compress:
            strm = _shared_deflater(level)
            if strm == NULL:
                outcome = _NO_MEMORY
            else:
                outcome = _deflate_bounded(strm, src, size, payload, limit, &written)
    else:
        with nogil:
            crc = <uint32_t>crc32_z(0, src, <size_t>size)
            if compress:
                outcome = _deflate_alone(level, src, size, payload, limit, &written)
    if outcome == _FITS:
        payload_size = <Py_ssize_t>written
    elif outcome == _NO_ROOM:
        if size:
            memcpy(payload, src, <size_t>size)
    else:
        Py_XDECREF(frame)
        if outcome == _NO_MEMORY:
            raise MemoryError("zlib could not allocate a deflate context")
        raise RuntimeError("zlib deflate failed")
    _write_header(<unsigned char*>_bytes_data(frame),
                  _CODEC_DEFLATE if outcome == _FITS else _CODEC_RAW, <uint64_t>size, crc)
    if payload_size != size:
        _PyBytes_Resize(&frame, header_size + payload_size)  # frees frame and raises on failure
    result = <object>frame
    Py_XDECREF(frame)
    return result


def unpack(frame, *, max_size):
    """Return the original data of *frame* (as made by :func:`pack`).

    Never allocates more than about *max_size* bytes for the result.

    Raises FrameError (a ValueError) if the frame is truncated anywhere, has
    a bad magic, an unsupported version, an unknown codec, a length varint
    that is not minimal or overflows 64 bits, a declared length above
    *max_size*, a corrupt deflate payload, a decompressed size different from
    the declared one, trailing bytes after the payload, or a CRC mismatch.
    TypeError / ValueError for a bad *frame* type or *max_size*.
    """
    cdef Py_buffer view
    _get_buffer(frame, &view, "frame")
    try:
        return _unpack(<const unsigned char*>view.buf, view.len, _size_arg(max_size, "max_size"))
    finally:
        PyBuffer_Release(&view)


cdef bytes _unpack(const unsigned char* frame, Py_ssize_t size, Py_ssize_t max_size):
    cdef Py_ssize_t pos = 4
    cdef uint64_t declared = 0
    cdef unsigned int shift = 0
    cdef unsigned char byte
    cdef uint32_t expected_crc, actual_crc
    cdef int codec
    cdef bytes data
    cdef const unsigned char* result
    if size < 2:
        raise FrameError("truncated frame: magic missing")
    if frame[0] != _MAGIC0 or frame[1] != _MAGIC1:
        raise FrameError(f"bad magic {(<const char*>frame)[:2]!r}, expected {MAGIC!r}")
    if size < 3:
        raise FrameError("truncated frame: version missing")
    if frame[2] != _VERSION:
        raise FrameError(
            f"unsupported frame version {frame[2]} (this build reads version {_VERSION})"
        )
    if size < 4:
        raise FrameError("truncated frame: codec missing")
    codec = frame[3]
    if codec != _CODEC_RAW and codec != _CODEC_DEFLATE:
        raise FrameError(f"unknown codec {codec}")
    while True:
        if pos >= size:
            raise FrameError("truncated frame: length missing")
        byte = frame[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise FrameError("length varint overflows 64 bits")
        declared |= <uint64_t>(byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and shift:
                raise FrameError("length varint is not minimally encoded")
            break
        shift += 7
    if size - pos < 4:
        raise FrameError("truncated frame: checksum missing")
    expected_crc = (<uint32_t>frame[pos] | <uint32_t>frame[pos + 1] << 8
                    | <uint32_t>frame[pos + 2] << 16 | <uint32_t>frame[pos + 3] << 24)
    pos += 4
    if declared > <uint64_t>max_size:
        raise FrameError(f"declared length {declared} exceeds max_size {max_size}")

    if codec == _CODEC_RAW:
        if <uint64_t>(size - pos) < declared:
            raise FrameError(f"truncated frame: payload has {size - pos} of {declared} bytes")
        if <uint64_t>(size - pos) > declared:
            raise FrameError(
                f"{size - pos - <Py_ssize_t>declared} trailing bytes after the payload"
            )
        data = PyBytes_FromStringAndSize(<const char*>frame + pos, size - pos)
    else:
        data = _inflate_payload(frame + pos, size - pos, <Py_ssize_t>declared)
    result = <const unsigned char*>PyBytes_AS_STRING(data)
    if declared < _NOGIL_MIN:
        actual_crc = <uint32_t>crc32_z(0, result, <size_t>declared)
    else:
        with nogil:
            actual_crc = <uint32_t>crc32_z(0, result, <size_t>declared)
    if actual_crc != expected_crc:
        raise FrameError(
            f"CRC mismatch: frame says {expected_crc:#010x}, data has {actual_crc:#010x}"
        )
    return data


cdef bytes _inflate_payload(const unsigned char* payload, Py_ssize_t payload_size,
                            Py_ssize_t declared):
    cdef bytes data
    cdef unsigned char* dst
    cdef z_stream* strm
    cdef size_t detail = 0
    cdef const char* zmsg = NULL
    cdef int outcome
    # ceil(declared / ratio) > payload_size  <=>  declared > payload_size * ratio, without overflow
    if <uint64_t>(declared + _MAX_DEFLATE_RATIO - 1) // _MAX_DEFLATE_RATIO > <uint64_t>payload_size:
        raise FrameError(
            f"a {payload_size}-byte deflate payload cannot inflate to the declared {declared} bytes"
        )
    data = PyBytes_FromStringAndSize(NULL, declared)
    dst = <unsigned char*>PyBytes_AS_STRING(data)
    if declared < _NOGIL_MIN:
        strm = _shared_inflater()
        if strm == NULL:
            raise MemoryError("zlib could not allocate an inflate context")
        outcome = _inflate_exact(strm, payload, <size_t>payload_size, dst, <size_t>declared,
                                 &detail)
        zmsg = strm.msg
    else:
        with nogil:
            outcome = _inflate_alone(payload, <size_t>payload_size, dst, <size_t>declared,
                                     &detail, &zmsg)
    if outcome == _ENDED:
        return data
    if outcome == _TOO_LONG:
        raise FrameError(f"deflate payload inflates to more than the declared {declared} bytes")
    if outcome == _INPUT_USED:
        raise FrameError("truncated frame: deflate stream ends early")
    if outcome == _AFTER_END:
        raise FrameError(f"{detail} trailing bytes after the deflate stream")
    if outcome == _TOO_SHORT:
        raise FrameError(f"deflate payload inflates to {detail} bytes, declared {declared}")
    if outcome == _NO_MEMORY:
        raise MemoryError("zlib could not allocate an inflate context")
    raise FrameError(f"corrupt deflate payload: {_zlib_message(zmsg)}")


cdef str _zlib_message(const char* zmsg):
    return zmsg.decode("ascii", "replace") if zmsg != NULL else "unknown zlib error"


# -- zlib-stream transport ------------------------------------------------------

cdef inline bint _ends_with_sync_flush(const unsigned char* data, Py_ssize_t size) noexcept:
    return (size >= 4 and data[size - 4] == 0x00 and data[size - 3] == 0x00
            and data[size - 2] == 0xFF and data[size - 1] == 0xFF)


@cython.final
cdef class Inflater:
    """Inflate a zlib-stream transport (Discord gateway ``compress=zlib-stream``).

    One Inflater per connection: the whole connection is one zlib stream
    (with its zlib header) and the sender ends every message with
    Z_SYNC_FLUSH, so each message ends with ``00 00 ff ff``.

    ``feed(chunk)`` buffers *chunk* and returns the inflated message once the
    buffered bytes end with that suffix, else None. A message inflating to
    more than *max_message* bytes, more than *max_message* buffered
    compressed bytes, or a corrupt stream raise FrameError and break the
    inflater: every later ``feed`` raises FrameError until ``reset()``
    (which starts a fresh stream, for a new connection). Statistics
    (``messages``, ``bytes_in``, ``bytes_out``) are cumulative across resets.
    """

    def __cinit__(self, max_message):
        if isinstance(max_message, bool) or not isinstance(max_message, int):
            raise TypeError(f"max_message must be an int, not {type(max_message).__name__}")
        if not 1 <= max_message <= PY_SSIZE_T_MAX:
            raise ValueError(f"max_message must be in 1..{PY_SSIZE_T_MAX}, got {max_message}")
        self.max_message = max_message
        self._broken = None
        memset(&self._stream, 0, sizeof(z_stream))
        if inflateInit2(&self._stream, MAX_WBITS) != Z_OK:
            raise MemoryError("zlib could not allocate an inflate context")
        self._stream_ready = True

    def __dealloc__(self):
        if self._stream_ready:
            inflateEnd(&self._stream)
        PyMem_Free(self._pending)

    @property
    def pending(self):
        """Compressed bytes buffered for the message being received."""
        return self._pending_len

    @property
    def broken(self):
        """True after a FrameError, until :meth:`reset`."""
        return self._broken is not None

    cpdef object feed(self, object chunk):
        """Buffer *chunk*; return the inflated message when it is complete, else None.

        Raises TypeError for a bad chunk type, FrameError as described in the
        class docstring.
        """
        cdef Py_buffer view
        cdef const unsigned char* data
        cdef Py_ssize_t size
        _get_buffer(chunk, &view, "chunk")
        try:
            if self._broken is not None:
                raise FrameError(f"inflater is broken ({self._broken}): reset() it and reconnect")
            data = <const unsigned char*>view.buf
            size = view.len
            if size == 0:
                return None
            if size > self.max_message - self._pending_len:
                self._fail(f"compressed message exceeds max_message ({self.max_message} bytes)")
            self.bytes_in += <unsigned long long>size
            if self._pending_len == 0 and _ends_with_sync_flush(data, size):
                return self._inflate_message(data, size)  # a whole message in one chunk: no copy
            self._append_pending(data, size)
        finally:
            PyBuffer_Release(&view)
        if not _ends_with_sync_flush(self._pending, self._pending_len):
            return None
        try:
            return self._inflate_message(self._pending, self._pending_len)
        finally:
            self._pending_len = 0
            if self._pending_cap > _KEEP_PENDING_MAX:
                PyMem_Free(self._pending)
                self._pending = NULL
                self._pending_cap = 0

    cpdef reset(self):
        """Start a fresh stream (a new connection): clear the buffer and the broken state."""
        self._pending_len = 0
        if not (self._stream_ready and inflateReset(&self._stream) == Z_OK):
            if self._stream_ready:
                inflateEnd(&self._stream)
                self._stream_ready = False
            memset(&self._stream, 0, sizeof(z_stream))
            if inflateInit2(&self._stream, MAX_WBITS) != Z_OK:
                self._broken = "zlib could not allocate an inflate context"
                raise MemoryError(self._broken)
            self._stream_ready = True
        self._broken = None

    cpdef dict stats(self):
        """Return ``{"messages", "bytes_in", "bytes_out"}`` (cumulative)."""
        return {"messages": self.messages, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out}

    cdef int _append_pending(self, const unsigned char* src, Py_ssize_t size) except -1:
        cdef Py_ssize_t needed = self._pending_len + size
        cdef Py_ssize_t capacity
        cdef unsigned char* grown
        if needed > self._pending_cap:
            if self._pending_cap < self.max_message // 2:
                capacity = self._pending_cap * 2
            else:
                capacity = self.max_message
            if capacity < needed:
                capacity = needed
            grown = <unsigned char*>PyMem_Realloc(self._pending, <size_t>capacity)
            if grown == NULL:
                raise MemoryError()
            self._pending = grown
            self._pending_cap = capacity
        memcpy(self._pending + self._pending_len, src, <size_t>size)
        self._pending_len = needed
        return 0

    cdef bytes _inflate_message(self, const unsigned char* src, Py_ssize_t size):
        """Inflate one complete message; the output grows geometrically up to max_message."""
        cdef size_t left = <size_t>size
        cdef size_t written = 0
        cdef Py_ssize_t produced = 0
        cdef Py_ssize_t limit = self.max_message
        # Chat JSON inflates about 4-10x: start at 4x, double as needed.
        cdef Py_ssize_t capacity = limit if size > limit // 4 else max(size * 4, 1024)
        cdef unsigned char probe
        cdef int outcome
        cdef object result
        cdef PyObject* message
        if capacity > limit:
            capacity = limit
        message = _new_bytes(NULL, capacity)
        while True:
            outcome = _inflate_bounded(&self._stream, &src, &left,
                                       <unsigned char*>_bytes_data(message) + produced,
                                       <size_t>(capacity - produced), &written, Z_SYNC_FLUSH)
            produced += <Py_ssize_t>written
            if outcome != _OUTPUT_FULL:
                break
            if capacity == limit:
                # At the cap: one more byte of output means the message is too big.
                outcome = _inflate_bounded(&self._stream, &src, &left, &probe, 1, &written,
                                           Z_SYNC_FLUSH)
                if written:
                    outcome = _TOO_LONG
                break
            capacity = capacity * 2 if capacity < limit // 2 else limit
            if _try_resize_bytes(&message, capacity) < 0:  # message is gone; MemoryError is set
                self._broken = "out of memory while inflating"
                self._pending_len = 0
                raise MemoryError(self._broken)
        if outcome != _ENDED and outcome != _INPUT_USED:
            Py_XDECREF(message)
            if outcome == _TOO_LONG:
                self._fail(f"message inflates to more than max_message ({limit} bytes)")
            if outcome == _AFTER_END:
                self._fail("data after the end of the zlib stream")
            if outcome == _NO_MEMORY:
                self._broken = "out of memory while inflating"
                self._pending_len = 0
                raise MemoryError(self._broken)
            self._fail(f"corrupt zlib stream: {_zlib_message(self._stream.msg)}")
        if produced != capacity and _try_resize_bytes(&message, produced) < 0:
            self._broken = "out of memory while inflating"
            self._pending_len = 0
            raise MemoryError(self._broken)
        self.messages += 1
        self.bytes_out += <unsigned long long>produced
        result = <object>message
        Py_XDECREF(message)
        return result

    cdef int _fail(self, str reason) except -1:
        self._broken = reason
        self._pending_len = 0
        raise FrameError(reason)

    def __repr__(self):
        if self._broken is not None:
            state = f"broken: {self._broken}"
        else:
            state = f"pending={self._pending_len}"
        return f"<Inflater max_message={self.max_message} messages={self.messages} {state}>"
