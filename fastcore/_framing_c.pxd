# cython: language_level=3
"""Declarations of fastcore._framing_c, so other Cython modules can cimport Inflater.

Cython code can call :meth:`Inflater.feed` / :meth:`Inflater.reset` /
:meth:`Inflater.stats` at C speed and read the readonly counters directly;
the other fields are private. The zlib declarations below are the subset the
module uses (a cimporter needs zlib.h on its include path).
"""

cimport cython


cdef extern from "zlib.h" nogil:
    ctypedef struct z_stream:
        unsigned char* next_in    # z_const: const only with ZLIB_CONST
        unsigned int avail_in
        unsigned char* next_out
        unsigned int avail_out
        const char* msg
        void* zalloc
        void* zfree
        void* opaque

    const char* ZLIB_VERSION
    enum:
        Z_NO_FLUSH
        Z_SYNC_FLUSH
        Z_FINISH
        Z_OK
        Z_STREAM_END
        Z_NEED_DICT
        Z_STREAM_ERROR
        Z_DATA_ERROR
        Z_MEM_ERROR
        Z_BUF_ERROR
        Z_DEFLATED
        Z_DEFAULT_STRATEGY
        MAX_WBITS

    const char* zlibVersion()
    int deflateInit2(z_stream* strm, int level, int method, int windowBits, int memLevel,
                     int strategy)
    int deflateParams(z_stream* strm, int level, int strategy)
    int deflateReset(z_stream* strm)
    int deflate(z_stream* strm, int flush)
    int deflateEnd(z_stream* strm)
    int inflateInit2(z_stream* strm, int windowBits)
    int inflateReset(z_stream* strm)
    int inflate(z_stream* strm, int flush)
    int inflateEnd(z_stream* strm)
    unsigned long crc32_z(unsigned long crc, const unsigned char* buf, size_t length)


@cython.final
cdef class Inflater:
    cdef z_stream _stream           # the connection's one inflate context
    cdef bint _stream_ready         # _stream holds an initialised inflater
    cdef unsigned char* _pending    # compressed bytes of the unfinished message (PyMem)
    cdef Py_ssize_t _pending_len
    cdef Py_ssize_t _pending_cap
    cdef object _broken             # None, or why the stream is unusable (str)
    cdef readonly Py_ssize_t max_message
    cdef readonly unsigned long long messages
    cdef readonly unsigned long long bytes_in
    cdef readonly unsigned long long bytes_out

    cpdef object feed(self, object chunk)
    cpdef reset(self)
    cpdef dict stats(self)
    cdef bytes _inflate_message(self, const unsigned char* src, Py_ssize_t size)
    cdef int _append_pending(self, const unsigned char* src, Py_ssize_t size) except -1
    cdef int _fail(self, str reason) except -1
