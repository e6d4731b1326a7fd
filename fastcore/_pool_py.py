"""Pure-Python twin of :mod:`fastcore._pool_c`: an object pool with idle eviction.

Same API and behaviour as the compiled module; see :mod:`fastcore.pool` for
the documentation. Idle objects live in a deque (hot end on the right, for
LIFO reuse; cold end on the left, for LRU and TTL eviction); leased objects
live in a dict keyed by ``id(obj)``. Not thread-safe: one thread (Trio's) only.
"""

from __future__ import annotations

import math
import operator
import sys
from collections import deque
from types import GenericAlias

__all__ = ["Lease", "ObjectPool", "PoolError", "PoolExhausted"]


class PoolError(ValueError):
    """An object was released that is not currently leased from this pool."""


class PoolExhausted(Exception):
    """acquire() found max_total objects alive and none idle."""


_NOT_LEASED = object()
_INACTIVE = object()  # Lease._obj between leases (a pool may hand out None)
_new_object = object.__new__
_isfinite = math.isfinite


def _count_arg(value, name: str, minimum: int) -> int:
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


def _seconds(value, name: str) -> float:
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


def _callback_arg(value, name: str):
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")
    return value


class ObjectPool:
    """Reuse expensive objects; see :mod:`fastcore.pool` for the full contract."""

    __slots__ = (
        "_factory", "_reset", "_validate", "_clock", "_destroy",
        "_max_idle", "_max_total", "_idle_ttl",
        "_idle", "_released_at", "_in_use",
        "_created", "_reused", "_destroyed", "__weakref__",
    )

    __class_getitem__ = classmethod(GenericAlias)

    def __init__(self, factory, *, max_idle, max_total=None, reset=None, validate=None,
                 idle_ttl=None, clock=None, destroy=None):
        if not callable(factory):
            raise TypeError(f"factory must be callable, not {type(factory).__name__}")
        self._max_idle = _count_arg(max_idle, "max_idle", 0)
        self._max_total = None if max_total is None else _count_arg(max_total, "max_total", 1)
        self._reset = _callback_arg(reset, "reset")
        self._validate = _callback_arg(validate, "validate")
        self._clock = _callback_arg(clock, "clock")
        self._destroy = _callback_arg(destroy, "destroy")
        if idle_ttl is not None:
            idle_ttl = _seconds(idle_ttl, "idle_ttl")
            if idle_ttl < 0:
                raise ValueError(f"idle_ttl must be >= 0, got {idle_ttl!r}")
            if clock is None:
                raise ValueError("idle_ttl needs a clock")
        self._factory = factory
        self._idle_ttl = idle_ttl
        self._idle = deque()          # idle objects, cold (left) to hot (right)
        self._released_at = deque()   # their release times, only when idle_ttl is set
        self._in_use = {}             # id(obj) -> obj for every leased object
        self._created = 0
        self._reused = 0
        self._destroyed = 0

    # -- the hot path ---------------------------------------------------

    def acquire(self):
        """Lease the most recently released idle object, or a new one.

        Raises PoolExhausted when max_total objects are alive and none is
        idle. An idle object that fails validate() (or whose validate()
        raises) is destroyed; after a False the next one is tried, an
        exception propagates. Exceptions from clock() and factory() propagate
        with nothing leased or counted as created.
        """
        idle = self._idle
        if self._idle_ttl is not None:
            self._evict_expired(self._now())
        validate = self._validate
        while idle:
            obj = idle.pop()
            if self._idle_ttl is not None:
                self._released_at.pop()
            if validate is not None:
                try:
                    usable = bool(validate(obj))
                except BaseException:
                    self._drop(obj)
                    raise
                if not usable:
                    self._drop(obj)
                    continue
            self._in_use[id(obj)] = obj
            self._reused += 1
            return obj
        in_use = self._in_use
        if self._max_total is not None and len(in_use) >= self._max_total:
            raise PoolExhausted(
                f"pool exhausted: max_total={self._max_total} objects in use and none idle"
            )
        obj = self._factory()
        key = id(obj)
        if key in in_use:
            raise PoolError("factory returned an object that is already leased")
        in_use[key] = obj
        self._created += 1
        return obj

    def release(self, obj) -> None:
        """Return a leased object to the pool.

        Raises PoolError, changing nothing, when *obj* is not currently
        leased from this pool (a double release, a foreign object). When
        reset() raises, the object is destroyed and the exception propagates.
        """
        key = id(obj)
        # A leased object is kept alive by _in_use, so no other live object
        # can share its id: the id alone identifies it.
        if self._in_use.pop(key, _NOT_LEASED) is _NOT_LEASED:
            raise PoolError(f"release of an object not leased from this pool: {type(obj).__name__}")
        if self._idle_ttl is not None:
            try:
                now = self._now()
            except BaseException:
                self._in_use[key] = obj
                raise
        reset = self._reset
        if reset is not None:
            try:
                reset(obj)
            except BaseException:
                self._drop(obj)
                raise
        idle = self._idle
        idle.append(obj)
        if self._idle_ttl is not None:
            self._released_at.append(now)
            self._evict_expired(now)
        while len(idle) > self._max_idle:
            self._drop_cold()

    def lease(self) -> Lease:
        """A context manager: ``with pool.lease() as obj:`` acquires, then always releases."""
        # Lease(self) minus its argument check: self is a pool.
        lease = _new_object(Lease)
        lease._pool = self
        lease._obj = _INACTIVE
        return lease

    # -- eviction -------------------------------------------------------

    def evict(self, now=None) -> int:
        """Destroy idle objects idle for idle_ttl seconds or more; return how many.

        *now* defaults to clock(). Without idle_ttl nothing expires and 0 is
        returned. A *now* that is not a finite int or float raises TypeError
        or ValueError.
        """
        if now is not None:
            now = _seconds(now, "now")
        if self._idle_ttl is None:
            return 0
        if now is None:
            now = self._now()
        return self._evict_expired(now)

    def clear(self) -> int:
        """Destroy every idle object, least recently used first; return how many."""
        dropped = 0
        while self._idle:
            self._drop_cold()
            dropped += 1
        return dropped

    def _now(self) -> float:
        now = self._clock()
        if type(now) is float and _isfinite(now):
            return now
        return _seconds(now, "clock()")

    def _evict_expired(self, now: float) -> int:
        # Release times grow from the cold end, so the expired objects are a
        # prefix of the deque and the walk stops at the first live one.
        released_at = self._released_at
        ttl = self._idle_ttl
        dropped = 0
        while released_at and now - released_at[0] >= ttl:
            self._drop_cold()
            dropped += 1
        return dropped

    def _drop_cold(self) -> None:
        obj = self._idle.popleft()
        if self._idle_ttl is not None:
            self._released_at.popleft()
        self._drop(obj)

    def _drop(self, obj) -> None:
        # Count first, so the pool stays consistent if destroy() raises.
        self._destroyed += 1
        if self._destroy is not None:
            self._destroy(obj)

    # -- introspection --------------------------------------------------

    @property
    def in_use(self) -> int:
        """Number of objects currently leased."""
        return len(self._in_use)

    @property
    def idle(self) -> int:
        """Number of idle objects ready for reuse."""
        return len(self._idle)

    @property
    def max_idle(self) -> int:
        return self._max_idle

    @property
    def max_total(self):
        return self._max_total

    @property
    def idle_ttl(self):
        return self._idle_ttl

    def stats(self) -> dict:
        """Counters: created, reused, destroyed (ever) and in_use, idle (now)."""
        return {
            "created": self._created,
            "reused": self._reused,
            "destroyed": self._destroyed,
            "in_use": len(self._in_use),
            "idle": len(self._idle),
        }

    def __repr__(self) -> str:
        return (
            f"<ObjectPool in_use={len(self._in_use)} idle={len(self._idle)} "
            f"max_idle={self._max_idle} max_total={self._max_total}>"
        )


class Lease:
    """``with Lease(pool) as obj:`` acquires *obj* on entry and releases it on exit.

    Reusable, but not re-entrant: entering an active lease, or exiting one
    that is not active, raises RuntimeError. Exceptions from the body are
    never suppressed.
    """

    __slots__ = ("_pool", "_obj")

    __class_getitem__ = classmethod(GenericAlias)

    def __init__(self, pool: ObjectPool):
        if not isinstance(pool, ObjectPool):
            raise TypeError(f"pool must be an ObjectPool, not {type(pool).__name__}")
        self._pool = pool
        self._obj = _INACTIVE

    def __enter__(self):
        if self._obj is not _INACTIVE:
            raise RuntimeError("lease is already active")
        obj = self._obj = self._pool.acquire()
        return obj

    def __exit__(self, exc_type, exc, tb):
        obj = self._obj
        if obj is _INACTIVE:
            raise RuntimeError("lease is not active")
        self._obj = _INACTIVE
        self._pool.release(obj)
        return False
