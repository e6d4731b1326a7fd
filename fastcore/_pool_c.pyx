# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled object pool with idle eviction; see :mod:`fastcore.pool`.

Idle objects live in a ring buffer over a Python list (hot end for LIFO
reuse, cold end for LRU and TTL eviction) with a parallel C array of release
times; leased objects live in a dict keyed by ``id(obj)``. Not thread-safe:
one thread (Trio's) only. Every callback may run arbitrary Python code, so
the bookkeeping is brought up to date before each callback runs and no field
is cached across one.
"""

cimport cython
from cpython.dict cimport PyDict_Contains, PyDict_SetItem
from cpython.exc cimport PyErr_Clear
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_FromVoidPtr
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.math cimport isfinite

import math
import operator
import sys
from types import GenericAlias

__all__ = ["Lease", "ObjectPool", "PoolError", "PoolExhausted"]

cdef extern from "Python.h":
    # Declared without an exception clause: a missing key (-1) is the
    # expected "not leased" outcome, handled inline instead of via KeyError.
    int _dict_del_item "PyDict_DelItem" (object d, object key)
    Py_ssize_t PyDict_GET_SIZE(object d)


class PoolError(ValueError):
    """An object was released that is not currently leased from this pool."""


class PoolExhausted(Exception):
    """acquire() found max_total objects alive and none idle."""


cdef Py_ssize_t _INITIAL_CAPACITY = 16


def _count_arg(value, name, Py_ssize_t minimum):
    """*value* as an int in [minimum, sys.maxsize]: TypeError or ValueError otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        count = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if count < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {count}")
    if count > sys.maxsize:
        raise ValueError(f"{name} must be <= {sys.maxsize}, got {count}")
    return count


def _seconds(value, name):
    """*value* (an int or float, not bool) as finite float seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be an int or float, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got {value!r}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return seconds


def _callback_arg(value, name):
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")
    return value


@cython.final
cdef class ObjectPool:
    """Reuse expensive objects; see :mod:`fastcore.pool` for the full contract."""

    def __cinit__(self, *args, **kwargs):
        # A memory-safe empty pool even if __init__ never runs.
        self._slots = [None]
        self._mask = 0
        self._released_at = <double *>PyMem_Malloc(sizeof(double))
        if self._released_at == NULL:
            raise MemoryError()
        self._in_use = {}
        self._max_total = -1

    def __dealloc__(self):
        PyMem_Free(self._released_at)

    def __init__(self, factory, *, max_idle, max_total=None, reset=None, validate=None,
                 idle_ttl=None, clock=None, destroy=None):
        cdef Py_ssize_t capacity = 1
        cdef double *released_at
        if not callable(factory):
            raise TypeError(f"factory must be callable, not {type(factory).__name__}")
        max_idle = _count_arg(max_idle, "max_idle", 0)
        max_total = -1 if max_total is None else _count_arg(max_total, "max_total", 1)
        reset = _callback_arg(reset, "reset")
        validate = _callback_arg(validate, "validate")
        clock = _callback_arg(clock, "clock")
        destroy = _callback_arg(destroy, "destroy")
        if idle_ttl is not None:
            idle_ttl = _seconds(idle_ttl, "idle_ttl")
            if idle_ttl < 0:
                raise ValueError(f"idle_ttl must be >= 0, got {idle_ttl!r}")
            if clock is None:
                raise ValueError("idle_ttl needs a clock")
        # Room for max_idle + 1 (a release pushes before evicting), up to a
        # small start; the buffer doubles on demand beyond that.
        while capacity < _INITIAL_CAPACITY and capacity <= max_idle:
            capacity *= 2
        released_at = <double *>PyMem_Malloc(capacity * sizeof(double))
        if released_at == NULL:
            raise MemoryError()
        PyMem_Free(self._released_at)
        self._released_at = released_at
        self._slots = [None] * capacity
        self._mask = capacity - 1
        self._head = 0
        self._count = 0
        self._factory = factory
        self._max_idle = max_idle
        self._max_total = max_total
        self._reset = reset
        self._validate = validate
        self._clock = clock
        self._destroy = destroy
        self._has_ttl = idle_ttl is not None
        self._idle_ttl = idle_ttl if self._has_ttl else 0.0
        self._in_use = {}
        self._created = 0
        self._reused = 0
        self._destroyed = 0

    def __class_getitem__(cls, item):
        return GenericAlias(cls, item)

    # -- the hot path ---------------------------------------------------

    cpdef object acquire(self):
        """Lease the most recently released idle object, or a new one.

        Raises PoolExhausted when max_total objects are alive and none is
        idle. An idle object that fails validate() (or whose validate()
        raises) is destroyed; after a False the next one is tried, an
        exception propagates. Exceptions from clock() and factory() propagate
        with nothing leased or counted as created.
        """
        cdef object obj
        cdef object key
        cdef bint usable
        if self._has_ttl:
            self._evict_expired(self._now())
        while self._count:
            obj = self._pop_hot()
            if self._validate is not None:
                try:
                    usable = self._validate(obj)
                except BaseException:
                    self._drop(obj)
                    raise
                if not usable:
                    self._drop(obj)
                    continue
            PyDict_SetItem(self._in_use, PyLong_FromVoidPtr(<void *>obj), obj)
            self._reused += 1
            return obj
        if self._max_total >= 0 and PyDict_GET_SIZE(self._in_use) >= self._max_total:
            raise PoolExhausted(
                f"pool exhausted: max_total={self._max_total} objects in use and none idle"
            )
        obj = self._factory()
        key = PyLong_FromVoidPtr(<void *>obj)
        if PyDict_Contains(self._in_use, key):
            raise PoolError("factory returned an object that is already leased")
        PyDict_SetItem(self._in_use, key, obj)
        self._created += 1
        return obj

    cpdef object release(self, object obj):
        """Return a leased object to the pool.

        Raises PoolError, changing nothing, when *obj* is not currently
        leased from this pool (a double release, a foreign object). When
        reset() raises, the object is destroyed and the exception propagates.
        """
        cdef object key = PyLong_FromVoidPtr(<void *>obj)
        cdef double now = 0.0
        # A leased object is kept alive by _in_use, so no other live object
        # can share its id: the id alone identifies it.
        if _dict_del_item(self._in_use, key) < 0:
            PyErr_Clear()
            raise PoolError(f"release of an object not leased from this pool: {type(obj).__name__}")
        if self._has_ttl:
            try:
                now = self._now()
            except BaseException:
                PyDict_SetItem(self._in_use, key, obj)
                raise
        if self._reset is not None:
            try:
                self._reset(obj)
            except BaseException:
                self._drop(obj)
                raise
        self._push_hot(obj, now)
        if self._has_ttl:
            self._evict_expired(now)
        while self._count > self._max_idle:
            self._drop(self._pop_cold())
        return None

    def lease(self):
        """A context manager: ``with pool.lease() as obj:`` acquires, then always releases."""
        cdef Lease lease = Lease.__new__(Lease)
        lease._pool = self
        return lease

    # -- eviction -------------------------------------------------------

    cpdef Py_ssize_t evict(self, object now=None) except -1:
        """Destroy idle objects idle for idle_ttl seconds or more; return how many.

        *now* defaults to clock(). Without idle_ttl nothing expires and 0 is
        returned. A *now* that is not a finite int or float raises TypeError
        or ValueError.
        """
        cdef double when
        if now is not None:
            when = _seconds(now, "now")
        if not self._has_ttl:
            return 0
        if now is None:
            when = self._now()
        return self._evict_expired(when)

    cpdef Py_ssize_t clear(self) except -1:
        """Destroy every idle object, least recently used first; return how many."""
        cdef Py_ssize_t dropped = 0
        while self._count:
            self._drop(self._pop_cold())
            dropped += 1
        return dropped

    # -- internals ------------------------------------------------------

    cdef double _now(self) except? -1.0:
        cdef object value = self._clock()
        cdef double seconds
        if type(value) is float:
            seconds = PyFloat_AS_DOUBLE(value)
            if isfinite(seconds):
                return seconds
        return _seconds(value, "clock()")

    cdef Py_ssize_t _evict_expired(self, double now) except -1:
        # Release times grow from the cold end, so the expired objects are a
        # prefix of the ring and the walk stops at the first live one.
        cdef Py_ssize_t dropped = 0
        while self._count and now - self._released_at[self._head] >= self._idle_ttl:
            self._drop(self._pop_cold())
            dropped += 1
        return dropped

    cdef inline int _push_hot(self, object obj, double now) except -1:
        cdef Py_ssize_t slot
        if self._count > self._mask:
            self._grow()
        slot = (self._head + self._count) & self._mask
        self._slots[slot] = obj
        self._released_at[slot] = now
        self._count += 1
        return 0

    cdef inline object _pop_hot(self):
        # Caller guarantees _count > 0.
        cdef Py_ssize_t slot
        self._count -= 1
        slot = (self._head + self._count) & self._mask
        obj = self._slots[slot]
        self._slots[slot] = None
        return obj

    cdef inline object _pop_cold(self):
        # Caller guarantees _count > 0.
        cdef Py_ssize_t slot = self._head
        obj = self._slots[slot]
        self._slots[slot] = None
        self._head = (slot + 1) & self._mask
        self._count -= 1
        return obj

    cdef int _grow(self) except -1:
        cdef Py_ssize_t old_capacity = self._mask + 1
        cdef Py_ssize_t capacity = old_capacity * 2
        cdef Py_ssize_t i, slot
        cdef list slots = [None] * capacity
        cdef double *released_at = <double *>PyMem_Malloc(capacity * sizeof(double))
        if released_at == NULL:
            raise MemoryError()
        for i in range(self._count):
            slot = (self._head + i) & self._mask
            slots[i] = self._slots[slot]
            released_at[i] = self._released_at[slot]
        PyMem_Free(self._released_at)
        self._released_at = released_at
        self._slots = slots
        self._head = 0
        self._mask = capacity - 1
        return 0

    cdef int _drop(self, object obj) except -1:
        # Count first, so the pool stays consistent if destroy() raises.
        self._destroyed += 1
        if self._destroy is not None:
            self._destroy(obj)
        return 0

    # -- introspection --------------------------------------------------

    @property
    def in_use(self):
        """Number of objects currently leased."""
        return PyDict_GET_SIZE(self._in_use)

    @property
    def idle(self):
        """Number of idle objects ready for reuse."""
        return self._count

    @property
    def max_idle(self):
        return self._max_idle

    @property
    def max_total(self):
        return None if self._max_total < 0 else self._max_total

    @property
    def idle_ttl(self):
        return self._idle_ttl if self._has_ttl else None

    def stats(self):
        """Counters: created, reused, destroyed (ever) and in_use, idle (now)."""
        return {
            "created": self._created,
            "reused": self._reused,
            "destroyed": self._destroyed,
            "in_use": PyDict_GET_SIZE(self._in_use),
            "idle": self._count,
        }

    def __repr__(self):
        return (
            f"<ObjectPool in_use={PyDict_GET_SIZE(self._in_use)} idle={self._count} "
            f"max_idle={self._max_idle} max_total={self.max_total}>"
        )


@cython.final
@cython.freelist(16)
@cython.auto_pickle(False)
cdef class Lease:
    """``with Lease(pool) as obj:`` acquires *obj* on entry and releases it on exit.

    Reusable, but not re-entrant: entering an active lease, or exiting one
    that is not active, raises RuntimeError. Exceptions from the body are
    never suppressed.
    """

    def __init__(self, ObjectPool pool not None):
        self._pool = pool
        self._obj = None
        self._active = False

    def __class_getitem__(cls, item):
        return GenericAlias(cls, item)

    def __enter__(self):
        if self._active:
            raise RuntimeError("lease is already active")
        if self._pool is None:  # made by Lease.__new__ without a pool
            raise RuntimeError("lease has no pool")
        obj = self._pool.acquire()
        self._obj = obj
        self._active = True
        return obj

    def __exit__(self, exc_type, exc, tb):
        if not self._active:
            raise RuntimeError("lease is not active")
        obj = self._obj
        self._obj = None
        self._active = False
        self._pool.release(obj)
        return False
