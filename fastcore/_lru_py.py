"""Pure-Python LRUCache: the twin of fastcore._lru_c (same API and behaviour).

Recency order lives in an OrderedDict (key -> _Entry), oldest first, so every
operation is O(1) through its C-level move_to_end/popitem. Expiry uses one
FIFO OrderedDict per distinct TTL: with a monotonic clock, entries that share
a TTL expire in insertion order, so expire() only ever looks at queue heads.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from operator import index as _index

__all__ = ["LRUCache"]

_MISSING = object()
_REENTERED = "LRUCache used re-entrantly (from a key's __hash__/__eq__ or the clock)"
# Totals are C Py_ssize_t in the compiled twin; keep the same ceiling here.
_SIZE_MAX = sys.maxsize


def _check_count(value, name, minimum):
    """Return *value* as an int in [minimum, sys.maxsize]; TypeError/ValueError otherwise."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not bool")
    try:
        number = _index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    if number < minimum or number > _SIZE_MAX:
        raise ValueError(f"{name} must be between {minimum} and {_SIZE_MAX}, got {number}")
    return number


def _check_ttl(value, name="ttl"):
    """Return *value* as a finite float > 0; TypeError/ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    try:
        seconds = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be finite, got {value!r}") from None
    if not (seconds > 0.0 and math.isfinite(seconds)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return seconds


def _check_now(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"now must be a number of seconds, not {type(value).__name__}")
    return float(value)


class _Entry:
    """One cached value; *ttl* names its expiry queue (None: never expires)."""

    __slots__ = ("value", "size", "ttl", "expires_at")

    def __init__(self, value, size, ttl, expires_at):
        self.value = value
        self.size = size
        self.ttl = ttl
        self.expires_at = expires_at


class LRUCache:
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

    __slots__ = (
        "_data",
        "_queues",
        "_maxsize",
        "_maxbytes",
        "_ttl",
        "_clock",
        "_on_evict",
        "_bytes",
        "_hits",
        "_misses",
        "_evictions",
        "_expirations",
        "_busy",
        "_expired",
    )

    def __init__(self, maxsize, maxbytes=None, ttl=None, *, clock=None, on_evict=None):
        self._maxsize = _check_count(maxsize, "maxsize", 1)
        self._maxbytes = None if maxbytes is None else _check_count(maxbytes, "maxbytes", 0)
        self._ttl = None if ttl is None else _check_ttl(ttl)
        if clock is not None and not callable(clock):
            raise TypeError("clock must be callable")
        if on_evict is not None and not callable(on_evict):
            raise TypeError("on_evict must be callable")
        if self._ttl is not None and clock is None:
            raise ValueError("a ttl needs a clock")
        self._clock = clock
        self._on_evict = on_evict
        self._data = OrderedDict()  # key -> _Entry, least recently used first
        self._queues = {}  # ttl -> OrderedDict(key -> _Entry), soonest expiry first
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expirations = 0
        self._busy = False  # an operation is in progress (see _enter)
        self._expired = None  # (key, value) expired by the current operation, for on_evict

    def __reduce__(self):
        raise TypeError("LRUCache cannot be pickled")

    def __repr__(self):
        return f"LRUCache(maxsize={self._maxsize}, maxbytes={self._maxbytes}, ttl={self._ttl}, entries={len(self._data)})"

    # -- properties ---------------------------------------------------------

    @property
    def maxsize(self):
        """The entry budget."""
        return self._maxsize

    @property
    def maxbytes(self):
        """The byte budget, or None."""
        return self._maxbytes

    @property
    def ttl(self):
        """The default time-to-live in seconds, or None."""
        return self._ttl

    # -- lookups ------------------------------------------------------------

    def get(self, key, default=None, /):
        """Return the value for *key* and make it the most recent, else *default*.

        Counts a hit or a miss; an expired entry is removed and counts as a miss.
        """
        if self._busy:
            raise RuntimeError(_REENTERED)
        self._busy = True
        try:
            entry = self._data.get(key)
            if entry is None:
                self._misses += 1
                return default
            if entry.ttl is None or not self._clock() >= entry.expires_at:
                self._data.move_to_end(key)
                self._hits += 1
                return entry.value
            self._misses += 1
            self._expire_entry(key, entry)
        finally:
            self._busy = False
        self._report_expired()
        return default

    def __getitem__(self, key):
        """Like :meth:`get`, but a missing or expired key raises KeyError."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def peek(self, key, default=None):
        """Return the value for *key* without promoting it or counting a hit/miss."""
        entry = self._find(key, False)
        return default if entry is None else entry.value

    def __contains__(self, key):
        """True if *key* holds a live entry; does not promote it."""
        return self._find(key, False) is not None

    def touch(self, key):
        """Make *key* the most recent and restart its TTL; False if missing or expired."""
        self._enter()
        try:
            entry = self._live_entry(key)
            if entry is not None:
                if entry.ttl is not None:
                    entry.expires_at = float(self._clock()) + entry.ttl
                    self._queues[entry.ttl].move_to_end(key)
                self._data.move_to_end(key)
        finally:
            self._busy = False
        self._report_expired()
        return entry is not None

    # -- updates ------------------------------------------------------------

    def __setitem__(self, key, value):
        """``cache[key] = value``: :meth:`set` with the default size and TTL."""
        if self._maxbytes is not None:
            raise ValueError("size is required when maxbytes is set: use set(key, value, size=...)")
        self._store(key, value, 0, self._ttl)

    def set(self, key, value, *, size=None, ttl=None):
        """Insert or replace *key*, make it the most recent and (re)start its TTL.

        *size* (int >= 0) counts against maxbytes and is required when maxbytes
        is set (ValueError otherwise); an entry larger than maxbytes raises
        ValueError and changes nothing. *ttl* overrides the cache's default and
        needs a clock (ValueError otherwise). Least recently used entries are
        then evicted until both budgets hold.
        """
        if size is None:
            if self._maxbytes is not None:
                raise ValueError("size is required when maxbytes is set")
            size = 0
        else:
            size = _check_count(size, "size", 0)
            if self._maxbytes is not None and size > self._maxbytes:
                raise ValueError(f"entry size {size} exceeds maxbytes {self._maxbytes}")
        if ttl is None:
            ttl = self._ttl
        else:
            ttl = _check_ttl(ttl)
            if self._clock is None:
                raise ValueError("a ttl needs a clock")
        self._store(key, value, size, ttl)

    def _store(self, key, value, size, ttl):
        self._enter()
        try:
            evicted = self._place(key, value, size, ttl)
        finally:
            self._busy = False
        if evicted:
            self._notify(evicted)

    def _place(self, key, value, size, ttl):
        """Insert or replace *key* as the newest entry; return the evicted (key, value) pairs."""
        expires_at = 0.0 if ttl is None else float(self._clock()) + ttl
        data = self._data
        entry = data.get(key)
        if entry is not None:
            others = self._bytes - entry.size  # bytes held by every other entry
            if self._maxbytes is None and others + size > _SIZE_MAX:
                raise ValueError("total size would overflow")
            entry.value = value
            entry.size = size
            if entry.ttl != ttl:
                if entry.ttl is not None:
                    self._unqueue(key, entry.ttl)
                if ttl is not None:
                    self._queue_for(ttl)[key] = entry
                entry.ttl = ttl
            elif ttl is not None:
                self._queues[ttl].move_to_end(key)
            entry.expires_at = expires_at
            data.move_to_end(key)
            # The entry is newest and fits maxbytes alone: eviction stops before it.
            self._bytes = others
            evicted = self._make_room(0, size) if self._maxbytes is not None else None
            self._bytes += size
        else:
            if self._maxbytes is None and self._bytes + size > _SIZE_MAX:
                raise ValueError("total size would overflow")
            evicted = self._make_room(1, size)
            entry = _Entry(value, size, ttl, expires_at)
            data[key] = entry
            self._bytes += size
            if ttl is not None:
                self._queue_for(ttl)[key] = entry
        return evicted

    def _make_room(self, extra_entries, extra_bytes):
        """Evict least recently used entries until the budgets hold with the extras."""
        data = self._data
        maxbytes = self._maxbytes
        limit = self._maxsize - extra_entries
        evicted = None
        while len(data) > limit or (maxbytes is not None and self._bytes + extra_bytes > maxbytes):
            key, entry = data.popitem(last=False)
            self._bytes -= entry.size
            if entry.ttl is not None:
                self._unqueue(key, entry.ttl)
            self._evictions += 1
            if self._on_evict is not None:
                if evicted is None:
                    evicted = []
                evicted.append((key, entry.value))
        return evicted

    def __delitem__(self, key):
        """Remove *key*; KeyError if missing or expired."""
        if self._find(key, True) is None:
            raise KeyError(key)

    def pop(self, key, default=_MISSING):
        """Remove *key* and return its value; *default* (else KeyError) if missing or expired."""
        entry = self._find(key, True)
        if entry is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return entry.value

    def delete(self, key):
        """Remove *key*; True if a live entry was removed."""
        return self._find(key, True) is not None

    def clear(self):
        """Remove every entry (no on_evict calls); the statistics are kept."""
        self._enter()
        try:
            self._data.clear()
            self._queues.clear()
            self._bytes = 0
        finally:
            self._busy = False

    def expire(self, now=None):
        """Remove expired entries (at *now*, or clock() when None) and return how many.

        Looks only at the head of each per-TTL queue: the cost is
        O(distinct TTLs + expired entries), never a walk over live entries.
        """
        if now is not None:
            now = _check_now(now)
        elif self._clock is None:
            return 0
        data = self._data
        removed = []
        self._enter()
        try:
            if now is None:
                now = float(self._clock())
            if math.isnan(now):
                raise ValueError("cannot expire at NaN")
            for ttl, queue in list(self._queues.items()):
                while queue:
                    key, entry = next(iter(queue.items()))
                    if entry.expires_at > now:
                        break
                    del queue[key]
                    del data[key]
                    self._bytes -= entry.size
                    removed.append((key, entry.value))
                if not queue:
                    del self._queues[ttl]
            self._expirations += len(removed)
        finally:
            self._busy = False
        if removed and self._on_evict is not None:
            self._notify(removed)
        return len(removed)

    # -- inspection ---------------------------------------------------------

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        """Keys, least recently used first (mutating the cache meanwhile raises RuntimeError)."""
        return (key for key in self._data)

    def keys(self):
        """Iterator over keys, least recently used first."""
        return (key for key in self._data)

    def values(self):
        """Iterator over values, least recently used first."""
        return (entry.value for entry in self._data.values())

    def items(self):
        """Iterator over (key, value) pairs, least recently used first."""
        return ((key, entry.value) for key, entry in self._data.items())

    def stats(self):
        """Counters: hits, misses, evictions, expirations, entries, bytes."""
        return {
            "hits": self._hits,
            "misses": self._misses,
            "evictions": self._evictions,
            "expirations": self._expirations,
            "entries": len(self._data),
            "bytes": self._bytes,
        }

    # -- internals ----------------------------------------------------------

    def _enter(self):
        """Mark an operation in progress; refuse one started from inside another.

        Key lookups run a key's __hash__/__eq__, and TTLs run the clock: if
        those called back into this cache mid-operation, they would see (and
        could break) half-updated state. on_evict runs after _busy is cleared.
        """
        if self._busy:
            raise RuntimeError(_REENTERED)
        self._busy = True

    def _find(self, key, remove):
        """The live entry for *key* or None (an expired one is removed); remove it if *remove*."""
        self._enter()
        try:
            entry = self._live_entry(key)
            if remove and entry is not None:
                self._remove(key)
        finally:
            self._busy = False
        self._report_expired()
        return entry

    def _live_entry(self, key):
        """The entry for *key*, or None if missing; an expired entry is removed first."""
        entry = self._data.get(key)
        if entry is not None and entry.ttl is not None and self._clock() >= entry.expires_at:
            self._expire_entry(key, entry)
            return None
        return entry

    def _expire_entry(self, key, entry):
        """Remove an expired entry; _report_expired() tells on_evict once the operation is over."""
        self._remove(key)
        self._expirations += 1
        self._expired = (key, entry.value)

    def _report_expired(self):
        expired = self._expired
        if expired is not None:
            self._expired = None
            if self._on_evict is not None:
                self._on_evict(*expired)

    def _remove(self, key):
        entry = self._data.pop(key)
        self._bytes -= entry.size
        if entry.ttl is not None:
            self._unqueue(key, entry.ttl)

    def _queue_for(self, ttl):
        queue = self._queues.get(ttl)
        if queue is None:
            queue = self._queues[ttl] = OrderedDict()
        return queue

    def _unqueue(self, key, ttl):
        queue = self._queues[ttl]
        del queue[key]
        if not queue:
            del self._queues[ttl]

    def _notify(self, evicted):
        """Call on_evict for every (key, value); re-raise the first failure afterwards."""
        first_error = None
        for key, value in evicted:
            try:
                self._on_evict(key, value)
            except Exception as exc:
                if first_error is None:
                    first_error = exc
        if first_error is not None:
            raise first_error
