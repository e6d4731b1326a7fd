# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled LRUCache (see fastcore.lru for the API; fastcore._lru_py is its twin).

Layout: ``_map`` (dict key -> _Node) finds an entry. Recency order is a
doubly linked list threaded by index through one C array of Slots (slot 0 is
the sentinel), so promoting an entry rewrites a few words in a compact,
cache-resident array instead of touching three scattered node objects.
Nodes with a TTL also sit in one FIFO list per distinct TTL (``_queues``,
intrusive Links inside the nodes); with a monotonic clock each such list is
sorted by expiry, so expire() only looks at list heads. Everything is O(1)
(slot array growth is amortised O(1)).

Safety: the slot array holds borrowed node pointers, valid while the node is
in ``_map``. User code that runs mid-operation (a key's __hash__/__eq__, the
clock) could break that, so every operation takes the ``_busy`` guard and a
nested call raises RuntimeError; on_evict runs after the guard is released.
"""

cimport cython
from cpython.dict cimport PyDict_DelItem, PyDict_GetItemWithError, PyDict_SetDefault, PyDict_SetItem
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.math cimport isfinite
from libc.stdint cimport UINT32_MAX, uint32_t

from operator import index as _index

cdef extern from "Python.h":
    Py_ssize_t PyDict_GET_SIZE(object p)  # the macro: no call, no error check
    # PyDict_GetItemWithError without Cython's automatic error jump, for hand-made cleanup.
    PyObject* _dict_get "PyDict_GetItemWithError" (object p, object key)
    PyObject* PyErr_Occurred()


cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define __pyx_lru_prefetch(p) __builtin_prefetch(p)
    #else
    #define __pyx_lru_prefetch(p) ((void)(p))
    #endif
    """
    void _prefetch "__pyx_lru_prefetch" (const void* address) noexcept nogil


cdef int _propagate_error() except -1:
    """Return -1 so that Cython propagates the exception already set."""
    return -1


cdef int _raise_reentered() except -1:
    raise RuntimeError("LRUCache used re-entrantly (from a key's __hash__/__eq__ or the clock)")

__all__ = ["LRUCache"]

cdef object _MISSING = object()

cdef enum:
    _KEYS = 0
    _VALUES = 1
    _ITEMS = 2

# Slots allocated by a new or cleared cache; the array doubles as it fills.
cdef uint32_t _INITIAL_SLOTS = 16


# -- recency list over the slot array -------------------------------------------

cdef inline void _slot_unlink(Slot* slots, uint32_t i) noexcept nogil:
    slots[slots[i].prev].next = slots[i].next
    slots[slots[i].next].prev = slots[i].prev


cdef inline void _slot_push_back(Slot* slots, uint32_t i) noexcept nogil:
    cdef uint32_t last = slots[0].prev
    slots[i].prev = last
    slots[i].next = 0
    slots[last].next = i
    slots[0].prev = i


cdef inline bint _slot_move_to_back(Slot* slots, uint32_t i) noexcept nogil:
    """Make slot *i* the most recent; False if it already was."""
    if slots[0].prev == i:
        return False
    _slot_unlink(slots, i)
    _slot_push_back(slots, i)
    return True


# -- expiry queues (intrusive circular lists) -----------------------------------

cdef inline void _link_init(Link* head) noexcept nogil:
    head.prev = head
    head.next = head
    head.node = NULL


cdef inline void _link_unlink(Link* link) noexcept nogil:
    link.prev.next = link.next
    link.next.prev = link.prev


cdef inline void _link_push_back(Link* head, Link* link) noexcept nogil:
    cdef Link* last = head.prev
    link.prev = last
    link.next = head
    last.next = link
    head.prev = link


# -- argument checks (the same rules and exception types as the twin) -----------

cdef Py_ssize_t _check_count(object value, str name, Py_ssize_t minimum) except -1:
    """*value* as a Py_ssize_t in [minimum, sys.maxsize]; TypeError/ValueError otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        number = _index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if number < minimum or number > PY_SSIZE_T_MAX:
        raise ValueError(f"{name} must be between {minimum} and {PY_SSIZE_T_MAX}, got {number}")
    return number


cdef object _check_ttl(object value):
    """*value* as a finite float > 0; TypeError/ValueError otherwise."""
    cdef double seconds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"ttl must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        raise ValueError(f"ttl must be finite, got {value!r}") from None
    if not (seconds > 0.0 and isfinite(seconds)):
        raise ValueError(f"ttl must be a finite number > 0, got {value!r}")
    return seconds


# -- node types ------------------------------------------------------------------

@cython.final
cdef class _ExpiryQueue:
    """Entries sharing one TTL, soonest expiry first."""

    def __cinit__(self):
        _link_init(&self.head)


@cython.final
@cython.freelist(64)
cdef class _Node:
    """One cache entry."""

    def __cinit__(self):
        self.expiry.node = <PyObject*>self


@cython.final
cdef class _LRUIterator:
    """Keys, values or items oldest to newest; RuntimeError if the cache changes meanwhile."""

    cdef LRUCache cache
    cdef _Node next_node     # None once exhausted
    cdef size_t version
    cdef int kind

    def __iter__(self):
        return self

    def __next__(self):
        cdef _Node node = self.next_node
        cdef PyObject* after
        if node is None:
            raise StopIteration
        if self.cache._version != self.version:
            self.next_node = None
            raise RuntimeError("LRUCache mutated during iteration")
        after = self.cache._owners[self.cache._slots[node.slot].next]
        self.next_node = None if after is NULL else <_Node>after
        if self.kind == _KEYS:
            return node.key
        if self.kind == _VALUES:
            return node.value
        return (node.key, node.value)


cdef _LRUIterator _iterate(LRUCache cache, int kind):
    cdef _LRUIterator iterator = _LRUIterator.__new__(_LRUIterator)
    cdef PyObject* oldest = cache._owners[cache._slots[0].next]
    iterator.cache = cache
    iterator.version = cache._version
    iterator.kind = kind
    if oldest is not NULL:
        iterator.next_node = <_Node>oldest
    return iterator


# -- the cache -------------------------------------------------------------------

@cython.final
@cython.binding(False)  # builtin-method calls: cheaper than cyfunction dispatch on the hot path
@cython.no_gc_clear  # tp_clear would set _map to None under live methods; nodes break cycles
@cython.auto_pickle(False)
cdef class LRUCache:
    """Least-recently-used cache with an entry budget, an optional byte budget and TTLs.

    ``LRUCache(maxsize, maxbytes=None, ttl=None, *, clock=None, on_evict=None)``

    *maxsize* (int >= 1) bounds the number of entries; *maxbytes* (None or
    int >= 0) bounds the sum of the per-entry ``size`` given to :meth:`set`.
    *ttl* (None or finite seconds > 0) is the default time-to-live; TTLs need
    *clock*, a zero-argument callable returning monotonic seconds as a float.
    *on_evict(key, value)* is called for entries removed by capacity eviction
    or by expiry (not for delete, pop, clear or overwrite), after the cache
    has been updated; if it raises, the callbacks for the other entries of the
    same operation still run and the first exception then propagates.

    An entry expires when ``clock() >= set time + ttl``. Key lookups treat
    expired entries as absent and remove them (counted as expirations);
    ``len()``, iteration and ``stats()`` do not read the clock, so they include
    expired entries that nothing has looked at yet: call :meth:`expire`.

    Wrong argument types raise TypeError; out-of-range values (negative,
    NaN, infinite, above sys.maxsize) raise ValueError. Calling back into the
    cache from a key's __hash__/__eq__ or from clock raises RuntimeError.
    """

    def __cinit__(self):
        self._map = {}
        self._queues = {}
        self._maxbytes = -1
        self._reset_slots()

    def __dealloc__(self):
        PyMem_Free(self._slots)
        PyMem_Free(self._owners)

    def __init__(self, maxsize, maxbytes=None, ttl=None, *, clock=None, on_evict=None):
        self._maxsize = _check_count(maxsize, "maxsize", 1)
        self._maxbytes = -1 if maxbytes is None else _check_count(maxbytes, "maxbytes", 0)
        self._ttl = None if ttl is None else _check_ttl(ttl)
        if clock is not None and not callable(clock):
            raise TypeError("clock must be callable")
        if on_evict is not None and not callable(on_evict):
            raise TypeError("on_evict must be callable")
        if self._ttl is not None and clock is None:
            raise ValueError("a ttl needs a clock")
        self._clock = clock
        self._on_evict = on_evict

    def __reduce__(self):
        raise TypeError("LRUCache cannot be pickled")

    def __repr__(self):
        return (
            f"LRUCache(maxsize={self.maxsize}, maxbytes={self.maxbytes}, "
            f"ttl={self._ttl}, entries={len(self._map)})"
        )

    # -- properties ---------------------------------------------------------------

    @property
    def maxsize(self):
        """The entry budget."""
        return self._maxsize

    @property
    def maxbytes(self):
        """The byte budget, or None."""
        return None if self._maxbytes < 0 else self._maxbytes

    @property
    def ttl(self):
        """The default time-to-live in seconds, or None."""
        return self._ttl

    # -- C-level entry points (declared in the .pxd for other Cython modules) -----

    cdef object lookup(self, object key, object default):
        """get(): the value for *key*, promoted, else *default*; counts a hit or miss."""
        # The hot path: guarded by hand (no try/finally), see _enter().
        cdef PyObject* found
        cdef _Node node
        if self._busy:
            _raise_reentered()
        self._busy = True
        found = _dict_get(self._map, key)  # may run the key's __hash__/__eq__
        if found is NULL:
            self._busy = False
            if PyErr_Occurred():
                _propagate_error()
            self._misses += 1
            # A miss is usually followed by an insertion that evicts the least
            # recently used node: start loading it (cold by definition) now.
            _prefetch(self._owners[self._slots[0].next])
            return default
        node = <_Node>found
        if node.queue is not None:
            self._busy = False  # no user code runs before _lookup_timed takes the guard again
            return self._lookup_timed(node, default)
        if _slot_move_to_back(self._slots, node.slot):
            self._version += 1
        self._hits += 1
        self._busy = False
        return node.value

    cdef object _lookup_timed(self, _Node node, object default):
        """lookup() for a node with a TTL: reads the clock, may expire the node."""
        self._enter()
        try:
            if not self._has_expired(node):
                if _slot_move_to_back(self._slots, node.slot):
                    self._version += 1
                self._hits += 1
                return node.value
            self._misses += 1
            self._expire_node(node)
        finally:
            self._busy = False
        self._report_expired()
        return default

    cdef int store(self, object key, object value) except -1:
        """``cache[key] = value``: default size and TTL."""
        if self._maxbytes >= 0:
            raise ValueError("size is required when maxbytes is set: use set(key, value, size=...)")
        return self._place(key, value, 0, self._ttl)

    # -- lookups ------------------------------------------------------------------

    def get(self, key, default=None, /):
        """Return the value for *key* and make it the most recent, else *default*.

        Counts a hit or a miss; an expired entry is removed and counts as a miss.
        """
        return self.lookup(key, default)

    def __getitem__(self, key):
        """Like :meth:`get`, but a missing or expired key raises KeyError."""
        value = self.lookup(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def peek(self, key, default=None):
        """Return the value for *key* without promoting it or counting a hit/miss."""
        cdef _Node node = self._find(key, False)
        return default if node is None else node.value

    def __contains__(self, key):
        """True if *key* holds a live entry; does not promote it."""
        return self._find(key, False) is not None

    def touch(self, key):
        """Make *key* the most recent and restart its TTL; False if missing or expired."""
        cdef _Node node
        self._enter()
        try:
            node = self._live_node(key)
            if node is not None:
                if node.queue is not None:
                    self._enqueue(node, node.queue.ttl, self._now() + node.queue.seconds)
                if _slot_move_to_back(self._slots, node.slot):
                    self._version += 1
        finally:
            self._busy = False
        self._report_expired()
        return node is not None

    # -- updates ------------------------------------------------------------------

    def __setitem__(self, key, value):
        """``cache[key] = value``: :meth:`set` with the default size and TTL."""
        self.store(key, value)

    def set(self, key, value, *, size=None, ttl=None):
        """Insert or replace *key*, make it the most recent and (re)start its TTL.

        *size* (int >= 0) counts against maxbytes and is required when maxbytes
        is set (ValueError otherwise); an entry larger than maxbytes raises
        ValueError and changes nothing. *ttl* overrides the cache's default and
        needs a clock (ValueError otherwise). Least recently used entries are
        then evicted until both budgets hold.
        """
        cdef Py_ssize_t nbytes = 0
        if size is None:
            if self._maxbytes >= 0:
                raise ValueError("size is required when maxbytes is set")
        else:
            nbytes = _check_count(size, "size", 0)
            if self._maxbytes >= 0 and nbytes > self._maxbytes:
                raise ValueError(f"entry size {nbytes} exceeds maxbytes {self._maxbytes}")
        if ttl is None:
            ttl = self._ttl
        else:
            ttl = _check_ttl(ttl)
            if self._clock is None:
                raise ValueError("a ttl needs a clock")
        self._place(key, value, nbytes, ttl)

    def __delitem__(self, key):
        """Remove *key*; KeyError if missing or expired."""
        if self._find(key, True) is None:
            raise KeyError(key)

    def pop(self, key, default=_MISSING):
        """Remove *key* and return its value; *default* (else KeyError) if missing or expired."""
        cdef _Node node = self._find(key, True)
        if node is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return node.value

    def delete(self, key):
        """Remove *key*; True if a live entry was removed."""
        return self._find(key, True) is not None

    def clear(self):
        """Remove every entry (no on_evict calls); the statistics are kept."""
        old_map = self._map  # released on return, once the cache is consistent
        self._enter()
        try:
            self._map = {}
            self._queues = {}
            self._reset_slots()
            self._bytes = 0
            self._version += 1
        finally:
            self._busy = False

    def expire(self, now=None):
        """Remove expired entries (at *now*, or clock() when None) and return how many.

        Looks only at the head of each per-TTL queue: the cost is
        O(distinct TTLs + expired entries), never a walk over live entries.
        """
        cdef double at
        cdef _ExpiryQueue queue
        cdef _Node node
        cdef list removed = []
        if now is not None and (isinstance(now, bool) or not isinstance(now, (int, float))):
            raise TypeError(f"now must be a number of seconds, not {type(now).__name__}")
        if now is None and self._clock is None:
            return 0
        self._enter()
        try:
            at = self._now() if now is None else now
            if at != at:
                raise ValueError("cannot expire at NaN")
            for queue in list(self._queues.values()):
                while queue.head.next.node is not NULL:
                    node = <_Node>queue.head.next.node
                    if node.expires_at > at:
                        break
                    self._detach(node)  # drops the queue once it is empty
                    removed.append(node)
            self._expirations += len(removed)
        finally:
            self._busy = False
        if removed and self._on_evict is not None:
            self._notify(removed)
        return len(removed)

    # -- inspection ---------------------------------------------------------------

    def __len__(self):
        return len(self._map)

    def __iter__(self):
        """Keys, least recently used first (mutating the cache meanwhile raises RuntimeError)."""
        return _iterate(self, _KEYS)

    def keys(self):
        """Iterator over keys, least recently used first."""
        return _iterate(self, _KEYS)

    def values(self):
        """Iterator over values, least recently used first."""
        return _iterate(self, _VALUES)

    def items(self):
        """Iterator over (key, value) pairs, least recently used first."""
        return _iterate(self, _ITEMS)

    def stats(self):
        """Counters: hits, misses, evictions, expirations, entries, bytes."""
        return {
            "hits": self._hits,
            "misses": self._misses,
            "evictions": self._evictions,
            "expirations": self._expirations,
            "entries": len(self._map),
            "bytes": self._bytes,
        }

    # -- internals ----------------------------------------------------------------

    cdef int _reset_slots(self) except -1:
        """Empty the recency list (no entries); shrink the slot array back to its initial size."""
        cdef Slot* slots = <Slot*>PyMem_Realloc(self._slots, _INITIAL_SLOTS * sizeof(Slot))
        cdef PyObject** owners
        if slots is not NULL:
            self._slots = slots
            self._capacity = _INITIAL_SLOTS  # _owners is at least this long either way
            owners = <PyObject**>PyMem_Realloc(self._owners, _INITIAL_SLOTS * sizeof(PyObject*))
            if owners is not NULL:
                self._owners = owners
        # A failed shrink keeps a larger array; only the first allocation can fail for good.
        if self._slots is NULL or self._owners is NULL:
            raise MemoryError()
        self._slots[0].prev = 0
        self._slots[0].next = 0
        self._owners[0] = NULL
        self._top = 1
        self._free = 0
        return 0

    cdef int _take_slot(self, _Node node) except -1:
        """Give *node* a free slot (growing the array if needed) as the most recent entry."""
        cdef uint32_t i = self._free
        cdef size_t capacity
        cdef Slot* slots
        cdef PyObject** owners
        if i != 0:
            self._free = self._slots[i].next
        else:
            if self._top == self._capacity:
                if self._capacity >= UINT32_MAX // 2:
                    raise MemoryError("LRUCache cannot grow beyond 2**31 slots")
                capacity = <size_t>self._capacity * 2
                slots = <Slot*>PyMem_Realloc(self._slots, capacity * sizeof(Slot))
                if slots is NULL:
                    raise MemoryError()
                self._slots = slots
                owners = <PyObject**>PyMem_Realloc(self._owners, capacity * sizeof(PyObject*))
                if owners is NULL:
                    raise MemoryError()
                self._owners = owners
                self._capacity = <uint32_t>capacity
            i = self._top
            self._top += 1
        self._owners[i] = <PyObject*>node
        node.slot = i
        _slot_push_back(self._slots, i)
        return 0

    cdef double _now(self) except? -1.0:
        return self._clock()

    cdef bint _has_expired(self, _Node node) except -1:
        return self._now() >= node.expires_at

    cdef int _enter(self) except -1:
        """Mark an operation in progress; refuse one started from inside another.

        Key lookups run a key's __hash__/__eq__, and TTLs run the clock: if
        those called back into this cache mid-operation, they would see (and
        could break) half-updated links. on_evict runs after _busy is cleared.
        """
        if self._busy:
            _raise_reentered()
        self._busy = True
        return 0

    cdef _Node _find(self, object key, bint remove):
        """The live node for *key* or None (an expired one is removed); detach it if *remove*."""
        cdef _Node node
        self._enter()
        try:
            node = self._live_node(key)
            if remove and node is not None:
                self._detach(node)
        finally:
            self._busy = False
        self._report_expired()
        return node

    cdef _Node _live_node(self, object key):
        """The node for *key*, or None if missing; an expired node is removed first."""
        cdef PyObject* found = PyDict_GetItemWithError(self._map, key)
        cdef _Node node
        if found is NULL:
            return None
        node = <_Node>found
        if node.queue is not None and self._has_expired(node):
            self._expire_node(node)
            return None
        return node

    cdef int _detach(self, _Node node) except -1:
        """Remove *node* from the map, the recency list and its expiry queue."""
        cdef uint32_t i = node.slot
        PyDict_DelItem(self._map, node.key)
        _slot_unlink(self._slots, i)
        self._owners[i] = NULL
        self._slots[i].next = self._free
        self._free = i
        if node.queue is not None:
            self._dequeue(node)
        self._bytes -= node.size
        self._version += 1
        return 0

    cdef int _expire_node(self, _Node node) except -1:
        """Remove an expired node; _report_expired() tells on_evict once the operation is over."""
        self._detach(node)
        self._expirations += 1
        self._expired = node
        return 0

    cdef int _report_expired(self) except -1:
        cdef _Node node = self._expired
        if node is not None:
            self._expired = None
            if self._on_evict is not None:
                self._on_evict(node.key, node.value)
        return 0

    cdef int _dequeue(self, _Node node) except -1:
        """Take *node* out of its expiry queue, dropping the queue once empty."""
        cdef _ExpiryQueue queue = node.queue
        if queue is None:
            return 0
        _link_unlink(&node.expiry)
        node.queue = None
        if queue.head.next == &queue.head:
            PyDict_DelItem(self._queues, queue.ttl)
        return 0

    cdef int _enqueue(self, _Node node, object ttl, double expires_at) except -1:
        """Put *node* last in the queue for *ttl* (a float), expiring at *expires_at*."""
        cdef _ExpiryQueue queue = node.queue
        cdef PyObject* found
        if queue is not None and queue.seconds == <double>ttl:
            _link_unlink(&node.expiry)
        else:
            self._dequeue(node)
            found = PyDict_GetItemWithError(self._queues, ttl)
            if found is NULL:
                queue = _ExpiryQueue.__new__(_ExpiryQueue)
                queue.ttl = ttl
                queue.seconds = ttl
                PyDict_SetItem(self._queues, ttl, queue)
            else:
                queue = <_ExpiryQueue>found
            node.queue = queue
        _link_push_back(&queue.head, &node.expiry)
        node.expires_at = expires_at
        return 0

    cdef int _place(self, object key, object value, Py_ssize_t size, object ttl) except -1:
        """Insert or replace *key* as the newest entry, then evict down to the budgets.

        One dict probe finds or inserts the key (PyDict_SetDefault with a spare
        node); evicted nodes are recycled as the next spare, so a steady stream
        of misses allocates nothing.
        """
        cdef double expires_at = 0.0
        cdef PyObject* found
        cdef Py_ssize_t others
        cdef _Node node
        cdef _Node victim = None
        cdef list evicted = None
        cdef bint inserted
        cdef object old_value, victim_key, victim_value  # released on return, once consistent
        cdef PyObject* oldest = self._owners[self._slots[0].next]
        if oldest is not NULL and PyDict_GET_SIZE(self._map) >= self._maxsize:
            # Eviction will drop the oldest key: start loading it (see lookup()).
            _prefetch(<PyObject*>(<_Node>oldest).key)
        self._enter()
        try:
            if self._maxbytes < 0 and size > PY_SSIZE_T_MAX - self._bytes:
                # Only an explicit huge size gets here: the exact check needs the old entry.
                found = PyDict_GetItemWithError(self._map, key)
                if found is NULL or size > PY_SSIZE_T_MAX - (self._bytes - (<_Node>found).size):
                    raise ValueError("total size would overflow")
            if ttl is not None:
                expires_at = self._now() + <double>ttl
            if self._on_evict is not None:
                evicted = []
            node = self._spare
            if node is None:
                node = _Node.__new__(_Node)
            found = PyDict_SetDefault(self._map, key, node)
            inserted = found == <PyObject*>node
            if not inserted:
                # Replacing: the spare stays spare.
                self._spare = node
                node = <_Node>found
                others = self._bytes - node.size  # bytes held by every other entry
                old_value = node.value
                node.value = value
                node.size = size
                if ttl is not None:
                    self._enqueue(node, ttl, expires_at)
                else:
                    self._dequeue(node)
                if _slot_move_to_back(self._slots, node.slot):
                    self._version += 1
                self._bytes = others
            else:
                self._spare = None
                node.key = key
                node.value = value
                node.size = size
                try:
                    self._take_slot(node)
                except MemoryError:
                    node.key = None
                    node.value = None
                    PyDict_DelItem(self._map, key)
                    raise
                self._version += 1
                while PyDict_GET_SIZE(self._map) > self._maxsize:
                    victim = self._evict_oldest(evicted)
            # The node is newest and fits maxbytes alone, so eviction stops before it.
            # self._bytes excludes it here: no overflow even when maxbytes is near the max.
            if self._maxbytes >= 0:
                while self._bytes > self._maxbytes - size:
                    victim = self._evict_oldest(evicted)
            self._bytes += size
            if inserted and ttl is not None:
                # Queue a new entry only after evicting, as the twin does, so that
                # expiry queues are created (and expire() visits them) in the same order.
                self._enqueue(node, ttl, expires_at)
            if victim is not None and evicted is None:
                # Recycle the last victim as the next spare; its key and value die on return.
                victim_key = victim.key
                victim_value = victim.value
                victim.key = None
                victim.value = None
                self._spare = victim
        finally:
            self._busy = False
        if evicted:
            self._notify(evicted)
        return 0

    cdef _Node _evict_oldest(self, list evicted):
        """Evict the least recently used node (the list must not be empty) and return it."""
        cdef _Node node = <_Node>self._owners[self._slots[0].next]
        self._detach(node)
        self._evictions += 1
        if evicted is not None:
            evicted.append(node)
        return node

    cdef int _notify(self, list evicted) except -1:
        """Call on_evict for every evicted node; re-raise the first failure afterwards."""
        cdef _Node node
        first_error = None
        for node in evicted:
            try:
                self._on_evict(node.key, node.value)
            except Exception as exc:
                if first_error is None:
                    first_error = exc
        if first_error is not None:
            raise first_error
        return 0
