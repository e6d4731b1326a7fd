"""Object pool with idle eviction: reuse expensive objects (buffers, parsers, connections).

``ObjectPool(factory, *, max_idle, max_total=None, reset=None, validate=None,
idle_ttl=None, clock=None, destroy=None)``

- ``acquire()`` leases the most recently released idle object (LIFO: warm
  caches) or makes one with ``factory()``; ``release(obj)`` gives it back.
  ``with pool.lease() as obj:`` acquires, then always releases.
- ``reset(obj)`` runs on every release, before the object goes idle;
  ``validate(obj)`` runs before an idle object is reused, and a false result
  destroys it and tries the next idle object (or a new one).
- At most ``max_idle`` objects stay idle (least recently used evicted first);
  at most ``max_total`` are alive, idle plus leased. With ``idle_ttl`` (which
  needs ``clock``, a zero-argument callable returning float seconds) objects
  idle for ``idle_ttl`` seconds or more are evicted lazily on acquire and
  release, or by ``evict(now=None)``. ``clear()`` destroys every idle object.
- ``destroy(obj)`` is called once for every object the pool drops (evicted,
  failed validation, reset raised, cleared); objects still leased when the
  pool goes away are the caller's.
- ``stats()`` returns ``{"created", "reused", "destroyed", "in_use", "idle"}``;
  ``in_use`` and ``idle`` are also properties.

Errors: ``acquire()`` raises ``PoolExhausted`` when ``max_total`` objects are
alive and none is idle. ``release()`` of an object not currently leased from
this pool (a double release, a foreign object) raises ``PoolError`` (a
``ValueError``) and changes nothing. When ``reset()`` or ``validate()``
raises, the object is destroyed and the exception propagates; exceptions
from ``factory()``, ``clock()`` and ``destroy()`` propagate with the
bookkeeping consistent. Bad constructor arguments raise ``TypeError`` (wrong
types, non-callables) or ``ValueError`` (negative, NaN or infinite values,
``idle_ttl`` without ``clock``).

Not thread-safe, by design: triobot runs the pool on one Trio thread.
"""

from fastcore._select import load

_impl = load("pool")

ObjectPool = _impl.ObjectPool
Lease = _impl.Lease
PoolError = _impl.PoolError
PoolExhausted = _impl.PoolExhausted

__all__ = ["Lease", "ObjectPool", "PoolError", "PoolExhausted"]
