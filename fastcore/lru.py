"""O(1) least-recently-used cache with an entry budget, a byte budget and TTLs.

``LRUCache(maxsize, maxbytes=None, ttl=None, *, clock=None, on_evict=None)``

- ``get(key, default=None)`` returns the value and makes it the most recent
  (counting a hit or a miss); ``cache[key]`` does the same but raises
  KeyError. ``peek(key)`` and ``key in cache`` neither promote nor count.
  ``touch(key)`` promotes and restarts the entry's TTL.
- ``cache[key] = value`` or ``set(key, value, *, size=None, ttl=None)``
  inserts or replaces (replacing promotes and restarts the TTL), then evicts
  least recently used entries until at most ``maxsize`` entries remain and,
  when ``maxbytes`` is set, the per-entry ``size`` values sum to at most
  ``maxbytes``. A per-entry ``ttl`` overrides the cache's default ``ttl``.
- ``pop(key[, default])``, ``delete(key) -> bool``, ``del cache[key]`` and
  ``clear()`` remove entries without calling ``on_evict``.
- ``on_evict(key, value)`` runs for entries removed by capacity eviction or
  expiry, after the cache is consistent again (so it may use the cache).
- TTLs need ``clock``, a zero-argument callable returning monotonic seconds
  (``time.monotonic``, ``trio.current_time``). An entry expires once
  ``clock() >= set time + ttl``; key lookups treat it as absent and remove
  it (counted in ``expirations``). ``expire(now=None)`` removes every expired
  entry in O(distinct TTLs + expired entries): entries sharing a TTL sit in
  one FIFO queue, sorted by expiry because the clock is monotonic.
- ``len()``, iteration (``iter``, ``keys()``, ``values()``, ``items()``:
  least recently used first) and ``stats()`` do not read the clock.
  Changing the cache while iterating raises RuntimeError at the next step.
- ``stats()`` returns ``{"hits", "misses", "evictions", "expirations",
  "entries", "bytes"}``; ``maxsize``, ``maxbytes`` and ``ttl`` are properties.

Errors: wrong argument types (``maxsize="10"``, ``size=1.5``, ``ttl="x"``,
unhashable keys) raise TypeError; negative, NaN, infinite or too large
(above ``sys.maxsize``) sizes and TTLs raise ValueError, as do an entry
larger than ``maxbytes`` (nothing changes), a missing ``size`` when
``maxbytes`` is set, a TTL without a clock, and ``expire()`` at NaN.
Exceptions raised by ``clock`` or ``on_evict`` propagate; when ``on_evict``
raises for one of several entries evicted together, the others are still
reported and the first exception is re-raised.

A key's ``__hash__``/``__eq__`` and ``clock`` run in the middle of an
operation: if they call back into the same cache, that call raises
RuntimeError and the cache is left as it was (``on_evict`` runs after the
operation and may use the cache freely).

Not thread-safe, by design: triobot runs the cache on one Trio thread.
"""

from fastcore._select import load

_impl = load("lru")

LRUCache = _impl.LRUCache

__all__ = ["LRUCache"]
