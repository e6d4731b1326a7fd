cimport cython


@cython.final
cdef class ObjectPool:
    cdef object _factory
    cdef object _reset
    cdef object _validate
    cdef object _clock
    cdef object _destroy
    cdef Py_ssize_t _max_idle
    cdef Py_ssize_t _max_total      # -1: unbounded
    cdef double _idle_ttl
    cdef bint _has_ttl
    # Idle objects: a ring buffer over a list, capacity _mask + 1 (a power of
    # two); _head is the cold end, the hot end is (_head + _count - 1) & _mask.
    cdef list _slots
    cdef double *_released_at      # release time per slot (used with idle_ttl)
    cdef Py_ssize_t _head
    cdef Py_ssize_t _count
    cdef Py_ssize_t _mask
    cdef dict _in_use               # id(obj) -> obj for every leased object
    cdef Py_ssize_t _created
    cdef Py_ssize_t _reused
    cdef Py_ssize_t _destroyed
    cdef object __weakref__

    cpdef object acquire(self)
    cpdef object release(self, object obj)
    cpdef Py_ssize_t evict(self, object now=*) except -1
    cpdef Py_ssize_t clear(self) except -1
    cdef double _now(self) except? -1.0
    cdef inline int _push_hot(self, object obj, double now) except -1
    cdef inline object _pop_hot(self)
    cdef inline object _pop_cold(self)
    cdef int _grow(self) except -1
    cdef int _drop(self, object obj) except -1
    cdef Py_ssize_t _evict_expired(self, double now) except -1


@cython.final
cdef class Lease:
    cdef ObjectPool _pool
    cdef object _obj
    cdef bint _active
