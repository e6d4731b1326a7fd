# cython: language_level=3
"""Declarations of fastcore._lru_c, so other Cython modules can cimport LRUCache.

Cython code should use the C-level entry points :meth:`LRUCache.lookup` and
:meth:`LRUCache.store` (same semantics as ``get`` and ``__setitem__``) and
read the counters (``_hits``, ``_misses``, ``_evictions``, ``_expirations``)
directly; the other fields are private.
"""

cimport cython
from cpython.object cimport PyObject
from libc.stdint cimport uint32_t


cdef struct Slot:
    # One position in the recency list, a doubly linked list threaded through
    # a C array by index (8 bytes a slot, so promoting an entry stays in cache).
    # Slot 0 is the sentinel: slots[0].next is the least recently used entry.
    uint32_t prev
    uint32_t next


cdef struct Link:
    # One position in an expiry queue, a circular doubly linked list headed by
    # a sentinel Link whose ``node`` is NULL; other Links live inside _Nodes.
    Link* prev
    Link* next
    PyObject* node


@cython.final
cdef class _ExpiryQueue:
    cdef Link head          # sentinel; head.next expires first
    cdef object ttl         # float: this queue's key in LRUCache._queues
    cdef double seconds     # the same ttl as a C double


@cython.final
cdef class _Node:
    # Hit-path fields first, so a hit touches as few cache lines as possible.
    cdef uint32_t slot       # index in LRUCache._slots
    cdef _ExpiryQueue queue  # None: the entry never expires
    cdef object value
    cdef object key
    cdef Py_ssize_t size
    cdef double expires_at
    cdef Link expiry         # position in queue.head (unused when queue is None)


@cython.final
cdef class LRUCache:
    cdef dict _map           # key -> _Node
    cdef Slot* _slots        # recency list; see Slot
    cdef PyObject** _owners  # _owners[i]: the node in slot i (borrowed: _map owns it), or NULL
    cdef uint32_t _capacity  # slots allocated
    cdef uint32_t _top       # slots [0, _top) have been handed out at least once
    cdef uint32_t _free      # head of the free-slot chain (through .next), 0 if none
    cdef dict _queues        # ttl (float) -> _ExpiryQueue
    cdef Py_ssize_t _maxsize
    cdef Py_ssize_t _maxbytes  # -1: no byte budget
    cdef Py_ssize_t _bytes
    cdef object _ttl         # default ttl: None or float
    cdef object _clock
    cdef object _on_evict
    cdef _Node _spare        # a detached node ready for the next insertion, or None
    cdef _Node _expired      # removed by the current operation as expired, for on_evict
    cdef bint _busy          # an operation is in progress (see _enter)
    cdef size_t _version     # bumped on every insertion, removal and reordering
    cdef Py_ssize_t _hits
    cdef Py_ssize_t _misses
    cdef Py_ssize_t _evictions
    cdef Py_ssize_t _expirations

    cdef object lookup(self, object key, object default)
    cdef object _lookup_timed(self, _Node node, object default)
    cdef int store(self, object key, object value) except -1
    cdef int _take_slot(self, _Node node) except -1
    cdef int _reset_slots(self) except -1
    cdef double _now(self) except? -1.0
    cdef bint _has_expired(self, _Node node) except -1
    cdef int _detach(self, _Node node) except -1
    cdef int _enter(self) except -1
    cdef _Node _find(self, object key, bint remove)
    cdef int _expire_node(self, _Node node) except -1
    cdef int _report_expired(self) except -1
    cdef int _dequeue(self, _Node node) except -1
    cdef int _enqueue(self, _Node node, object ttl, double expires_at) except -1
    cdef int _place(self, object key, object value, Py_ssize_t size, object ttl) except -1
    cdef _Node _evict_oldest(self, list evicted)
    cdef _Node _live_node(self, object key)
    cdef int _notify(self, list evicted) except -1
