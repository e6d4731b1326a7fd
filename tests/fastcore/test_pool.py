"""fastcore.pool: ObjectPool behaviour on both implementations, plus a model check."""

from __future__ import annotations

import gc
import math
import sys
import weakref

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from conftest import load_impl

STATS_KEYS = {"created", "reused", "destroyed", "in_use", "idle"}


@pytest.fixture
def mod(impl_kind):
    return load_impl("pool", impl_kind)


class Thing:
    """A pooled object that records what the pool did to it."""

    def __init__(self, serial: int):
        self.serial = serial
        self.healthy = True
        self.fail_reset = False
        self.resets = 0
        self.validations = 0

    def __repr__(self):
        return f"Thing({self.serial})"


class Harness:
    """Factory, callbacks and a fake clock for one pool, with logs of their calls."""

    def __init__(self):
        self.made: list[Thing] = []
        self.destroyed: list[int] = []
        self.now = 0.0

    def factory(self) -> Thing:
        thing = Thing(len(self.made))
        self.made.append(thing)
        return thing

    def reset(self, thing: Thing) -> None:
        thing.resets += 1
        if thing.fail_reset:
            raise OSError(f"cannot reset {thing}")

    def validate(self, thing: Thing) -> bool:
        thing.validations += 1
        return thing.healthy

    def destroy(self, thing: Thing) -> None:
        self.destroyed.append(thing.serial)

    def clock(self) -> float:
        return self.now


@pytest.fixture
def harness():
    return Harness()


def make_pool(mod, h: Harness, **kwargs):
    kwargs.setdefault("max_idle", 8)
    kwargs.setdefault("destroy", h.destroy)
    return mod.ObjectPool(h.factory, **kwargs)


def serials(things):
    return [thing.serial for thing in things]


# -- reuse order and limits ------------------------------------------------


def test_reuses_most_recently_released_first(mod, harness):
    pool = make_pool(mod, harness)
    a, b, c = pool.acquire(), pool.acquire(), pool.acquire()
    for thing in (a, b, c):
        pool.release(thing)
    assert [pool.acquire() for _ in range(3)] == [c, b, a]
    assert pool.acquire().serial == 3
    assert pool.stats() == {"created": 4, "reused": 3, "destroyed": 0, "in_use": 4, "idle": 0}


def test_max_idle_evicts_least_recently_used(mod, harness):
    pool = make_pool(mod, harness, max_idle=2)
    things = [pool.acquire() for _ in range(4)]
    for thing in things:
        pool.release(thing)
    assert harness.destroyed == [0, 1]
    assert pool.idle == 2
    assert serials([pool.acquire(), pool.acquire()]) == [3, 2]
    assert pool.stats() == {"created": 4, "reused": 2, "destroyed": 2, "in_use": 2, "idle": 0}


def test_max_idle_zero_keeps_nothing_but_still_resets(mod, harness):
    pool = make_pool(mod, harness, max_idle=0, reset=harness.reset)
    thing = pool.acquire()
    pool.release(thing)
    assert thing.resets == 1
    assert harness.destroyed == [0]
    assert pool.acquire().serial == 1
    assert pool.stats() == {"created": 2, "reused": 0, "destroyed": 1, "in_use": 1, "idle": 0}


def test_max_total_raises_exhausted_and_recovers(mod, harness):
    pool = make_pool(mod, harness, max_total=2)
    a, b = pool.acquire(), pool.acquire()
    before = pool.stats()
    with pytest.raises(mod.PoolExhausted, match="max_total"):
        pool.acquire()
    assert pool.stats() == before
    assert len(harness.made) == 2
    pool.release(b)
    assert pool.acquire() is b
    pool.release(a)
    pool.release(b)
    assert pool.stats() == {"created": 2, "reused": 1, "destroyed": 0, "in_use": 0, "idle": 2}


def test_max_total_counts_idle_objects_and_validate_frees_room(mod, harness):
    pool = make_pool(mod, harness, max_total=1, validate=harness.validate)
    thing = pool.acquire()
    pool.release(thing)
    thing.healthy = False
    fresh = pool.acquire()  # the idle one fails validation, making room
    assert fresh.serial == 1
    assert harness.destroyed == [0]
    with pytest.raises(mod.PoolExhausted):
        pool.acquire()


def test_exceptions_hierarchy(mod):
    assert issubclass(mod.PoolError, ValueError)
    assert issubclass(mod.PoolExhausted, Exception)
    assert not issubclass(mod.PoolExhausted, ValueError)


# -- validate and reset ----------------------------------------------------


def test_validate_failure_destroys_and_falls_through(mod, harness):
    pool = make_pool(mod, harness, validate=harness.validate)
    things = [pool.acquire() for _ in range(3)]
    for thing in things:
        pool.release(thing)
    things[2].healthy = things[1].healthy = False
    assert pool.acquire() is things[0]
    assert harness.destroyed == [2, 1]
    assert [t.validations for t in things] == [1, 1, 1]
    things[0].healthy = False
    pool.release(things[0])
    assert pool.acquire().serial == 3  # every idle object failed: a new one
    assert pool.stats() == {"created": 4, "reused": 1, "destroyed": 3, "in_use": 1, "idle": 0}


def test_validate_not_called_for_new_objects(mod, harness):
    pool = make_pool(mod, harness, validate=harness.validate)
    thing = pool.acquire()
    assert thing.validations == 0


def test_validate_raising_destroys_and_propagates(mod, harness):
    def validate(thing):
        raise OSError("probe failed")

    pool = make_pool(mod, harness, validate=validate)
    pool.release(pool.acquire())
    with pytest.raises(OSError, match="probe failed"):
        pool.acquire()
    assert harness.destroyed == [0]
    assert pool.stats() == {"created": 1, "reused": 0, "destroyed": 1, "in_use": 0, "idle": 0}


def test_reset_called_on_release_only(mod, harness):
    pool = make_pool(mod, harness, reset=harness.reset)
    thing = pool.acquire()
    assert thing.resets == 0
    pool.release(thing)
    assert thing.resets == 1
    assert pool.acquire() is thing
    assert thing.resets == 1


def test_reset_raising_destroys_and_propagates(mod, harness):
    pool = make_pool(mod, harness, reset=harness.reset)
    keep, broken = pool.acquire(), pool.acquire()
    pool.release(keep)
    broken.fail_reset = True
    with pytest.raises(OSError, match="cannot reset"):
        pool.release(broken)
    assert harness.destroyed == [1]
    assert pool.stats() == {"created": 2, "reused": 0, "destroyed": 1, "in_use": 0, "idle": 1}
    with pytest.raises(mod.PoolError):
        pool.release(broken)  # it is gone, not leased
    assert pool.acquire() is keep


# -- release errors ----------------------------------------------------------


def test_double_release_raises_and_changes_nothing(mod, harness):
    pool = make_pool(mod, harness, reset=harness.reset)
    thing = pool.acquire()
    pool.release(thing)
    before = pool.stats()
    with pytest.raises(mod.PoolError):
        pool.release(thing)
    assert pool.stats() == before
    assert thing.resets == 1
    assert harness.destroyed == []


def test_foreign_object_raises_and_changes_nothing(mod, harness):
    pool = make_pool(mod, harness, reset=harness.reset)
    other = make_pool(mod, Harness())
    leased = pool.acquire()
    before = pool.stats()
    for stranger in (Thing(99), other.acquire(), None, 3):
        with pytest.raises(mod.PoolError, match="not leased"):
            pool.release(stranger)
    assert pool.stats() == before
    assert harness.destroyed == []
    pool.release(leased)


def test_factory_may_return_none_one_at_a_time(mod):
    pool = mod.ObjectPool(lambda: None, max_idle=1)
    assert pool.acquire() is None
    with pytest.raises(mod.PoolError, match="already leased"):
        pool.acquire()  # a second None would be indistinguishable
    assert pool.stats() == {"created": 1, "reused": 0, "destroyed": 0, "in_use": 1, "idle": 0}
    pool.release(None)
    assert pool.acquire() is None


def test_factory_raising_changes_nothing(mod, harness):
    def factory():
        raise MemoryError("no room")

    pool = mod.ObjectPool(factory, max_idle=1)
    with pytest.raises(MemoryError):
        pool.acquire()
    assert pool.stats() == {"created": 0, "reused": 0, "destroyed": 0, "in_use": 0, "idle": 0}


def test_destroy_raising_keeps_bookkeeping_consistent(mod, harness):
    def destroy(thing):
        raise OSError("close failed")

    pool = mod.ObjectPool(harness.factory, max_idle=0, destroy=destroy)
    thing = pool.acquire()
    with pytest.raises(OSError, match="close failed"):
        pool.release(thing)
    assert pool.stats() == {"created": 1, "reused": 0, "destroyed": 1, "in_use": 0, "idle": 0}


# -- lease ---------------------------------------------------------------------


def test_lease_acquires_and_releases(mod, harness):
    pool = make_pool(mod, harness, reset=harness.reset)
    with pool.lease() as thing:
        assert pool.in_use == 1
        with pool.lease() as inner:
            assert inner is not thing
    assert thing.resets == 1
    assert pool.stats() == {"created": 2, "reused": 0, "destroyed": 0, "in_use": 0, "idle": 2}


def test_lease_releases_on_exception_and_does_not_suppress(mod, harness):
    pool = make_pool(mod, harness, reset=harness.reset)
    with pytest.raises(KeyError):
        with pool.lease() as thing:
            raise KeyError("boom")
    assert thing.resets == 1
    assert pool.in_use == 0
    assert pool.idle == 1


def test_lease_is_reusable_but_not_reentrant(mod, harness):
    pool = make_pool(mod, harness)
    lease = pool.lease()
    with pytest.raises(RuntimeError, match="not active"):
        lease.__exit__(None, None, None)
    with lease as first:
        with pytest.raises(RuntimeError, match="already active"):
            lease.__enter__()
    with lease as second:
        assert second is first
    assert pool.stats()["in_use"] == 0


def test_lease_constructor(mod, harness):
    pool = make_pool(mod, harness)
    with mod.Lease(pool) as thing:
        assert isinstance(thing, Thing)
    assert pool.idle == 1
    with pytest.raises(TypeError):
        mod.Lease(object())


def test_lease_when_exhausted_raises_and_releases_nothing(mod, harness):
    pool = make_pool(mod, harness, max_total=1)
    held = pool.acquire()
    with pytest.raises(mod.PoolExhausted):
        with pool.lease():
            pass
    assert pool.in_use == 1
    pool.release(held)


# -- idle_ttl --------------------------------------------------------------


def test_idle_ttl_evicts_expired_on_acquire(mod, harness):
    pool = make_pool(mod, harness, idle_ttl=10, clock=harness.clock)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a)  # at t=0
    harness.now = 5.0
    pool.release(b)  # at t=5
    harness.now = 9.5
    assert pool.idle == 2  # eviction is lazy
    harness.now = 10.0
    assert pool.acquire() is b  # a (idle for 10 s) is dropped first
    assert harness.destroyed == [0]
    pool.release(b)  # at t=10
    harness.now = 19.5
    assert pool.acquire() is b


def test_idle_ttl_evicts_expired_on_release(mod, harness):
    pool = make_pool(mod, harness, idle_ttl=1.5, clock=harness.clock)
    a, b = pool.acquire(), pool.acquire()
    pool.release(a)
    harness.now = 2.0
    pool.release(b)
    assert harness.destroyed == [0]
    assert pool.stats() == {"created": 2, "reused": 0, "destroyed": 1, "in_use": 0, "idle": 1}


def test_evict_walks_expired_from_the_old_end(mod, harness):
    pool = make_pool(mod, harness, idle_ttl=3, clock=harness.clock)
    things = [pool.acquire() for _ in range(4)]
    for t, thing in enumerate(things):
        harness.now = t / 2
        pool.release(thing)
    assert pool.evict(now=4.0) == 3  # released at 0, 0.5 and 1
    assert harness.destroyed == [0, 1, 2]
    assert pool.evict(now=4.0) == 0
    harness.now = 4.5
    assert pool.evict() == 1
    assert harness.destroyed == [0, 1, 2, 3]
    assert pool.idle == 0


def test_idle_ttl_zero_keeps_nothing_idle(mod, harness):
    pool = make_pool(mod, harness, idle_ttl=0, clock=harness.clock)
    pool.release(pool.acquire())
    assert harness.destroyed == [0]
    assert pool.idle == 0


def test_evict_without_ttl_returns_zero(mod, harness):
    pool = make_pool(mod, harness)
    pool.release(pool.acquire())
    assert pool.evict() == 0
    assert pool.evict(now=1e9) == 0
    assert pool.idle == 1


@pytest.mark.parametrize(
    "now, error",
    [("1", TypeError), (True, TypeError), ([1.0], TypeError), (math.nan, ValueError),
     (math.inf, ValueError), (-math.inf, ValueError), (10**400, ValueError)],
)
def test_evict_rejects_bad_now(mod, harness, now, error):
    pool = make_pool(mod, harness, idle_ttl=1, clock=harness.clock)
    pool.release(pool.acquire())
    with pytest.raises(error):
        pool.evict(now=now)
    assert pool.idle == 1


@pytest.mark.parametrize("reading, error", [("5", TypeError), (None, TypeError), (math.nan, ValueError)])
def test_bad_clock_reading_raises_and_changes_nothing(mod, harness, reading, error):
    readings = iter([0.0, reading, reading])
    pool = make_pool(mod, harness, idle_ttl=1, clock=lambda: next(readings))
    thing = pool.acquire()
    with pytest.raises(error):
        pool.release(thing)
    assert pool.stats() == {"created": 1, "reused": 0, "destroyed": 0, "in_use": 1, "idle": 0}
    with pytest.raises(error):
        pool.acquire()
    assert pool.stats() == {"created": 1, "reused": 0, "destroyed": 0, "in_use": 1, "idle": 0}


def test_clock_raising_on_release_leaves_object_leased(mod, harness):
    readings = iter([0.0])

    def clock():
        return next(readings)

    pool = make_pool(mod, harness, idle_ttl=1, clock=clock, reset=harness.reset)
    thing = pool.acquire()  # reads the clock once
    with pytest.raises(StopIteration):
        pool.release(thing)
    assert thing.resets == 0
    assert pool.stats() == {"created": 1, "reused": 0, "destroyed": 0, "in_use": 1, "idle": 0}


def test_integer_clock_readings_are_accepted(mod, harness):
    ticks = iter(range(100))
    pool = make_pool(mod, harness, idle_ttl=2, clock=lambda: next(ticks))
    thing = pool.acquire()  # t=0
    pool.release(thing)  # t=1
    assert pool.acquire() is thing  # t=2: idle for 1 s
    pool.release(thing)  # t=3
    assert pool.evict() == 0  # t=4: idle for 1 s
    assert pool.evict() == 1  # t=5: idle for 2 s


def test_ring_growth_keeps_order_and_release_times(mod, harness):
    pool = make_pool(mod, harness, max_idle=sys.maxsize, idle_ttl=100, clock=harness.clock)
    things = [pool.acquire() for _ in range(70)]
    for t, thing in enumerate(things[:10]):
        harness.now = float(t)
        pool.release(thing)
    assert pool.evict(now=104.5) == 5  # the cold end moves, so the ring wraps below
    for t, thing in enumerate(things[10:], start=10):
        harness.now = float(t)
        pool.release(thing)
    assert pool.idle == 65
    assert pool.evict(now=129.0) == 25  # released at 5..29
    assert harness.destroyed == list(range(30))
    assert serials(pool.acquire() for _ in range(3)) == [69, 68, 67]


# -- clear, destroy, stats ---------------------------------------------------


def test_clear_destroys_idle_objects_coldest_first(mod, harness):
    pool = make_pool(mod, harness)
    things = [pool.acquire() for _ in range(4)]
    for thing in things[:3]:
        pool.release(thing)
    assert pool.clear() == 3
    assert harness.destroyed == [0, 1, 2]
    assert pool.stats() == {"created": 4, "reused": 0, "destroyed": 3, "in_use": 1, "idle": 0}
    assert pool.clear() == 0
    pool.release(things[3])


def test_destroy_called_exactly_for_dropped_objects(mod, harness):
    pool = make_pool(
        mod, harness, max_idle=2, reset=harness.reset, validate=harness.validate,
        idle_ttl=5, clock=harness.clock,
    )
    things = [pool.acquire() for _ in range(6)]
    things[0].fail_reset = True
    with pytest.raises(OSError):
        pool.release(things[0])  # dropped: reset raised
    for thing in things[1:4]:
        pool.release(thing)  # 1 dropped: over max_idle
    things[3].healthy = False
    assert pool.acquire() is things[2]  # 3 dropped: failed validation
    harness.now = 5.0
    pool.release(things[4])  # no drop: 4 joins at t=5
    assert pool.evict() == 0
    harness.now = 10.0
    pool.release(things[5])  # 4 expired (idle 5 s): dropped
    pool.release(things[2])
    assert pool.clear() == 2  # 5 and 2
    assert harness.destroyed == [0, 1, 3, 4, 5, 2]
    assert pool.stats()["destroyed"] == 6
    assert pool.stats() == {"created": 6, "reused": 1, "destroyed": 6, "in_use": 0, "idle": 0}


def test_stats_keys_and_properties(mod, harness):
    pool = make_pool(mod, harness, max_idle=3, max_total=5, idle_ttl=2.5, clock=harness.clock)
    stats = pool.stats()
    assert set(stats) == STATS_KEYS
    assert all(type(value) is int for value in stats.values())
    thing = pool.acquire()
    assert (pool.in_use, pool.idle) == (1, 0)
    pool.release(thing)
    assert (pool.in_use, pool.idle) == (0, 1)
    assert (pool.max_idle, pool.max_total, pool.idle_ttl) == (3, 5, 2.5)
    assert type(pool.idle_ttl) is float
    plain = make_pool(mod, harness)
    assert (plain.max_total, plain.idle_ttl) == (None, None)
    assert "idle=1" in repr(pool)


def test_generic_alias(mod):
    assert mod.ObjectPool[Thing].__origin__ is mod.ObjectPool
    assert mod.Lease[Thing].__origin__ is mod.Lease


def test_public_module_exports():
    import fastcore.pool as public

    assert set(public.__all__) == {"ObjectPool", "Lease", "PoolError", "PoolExhausted"}
    for name in public.__all__:
        assert getattr(public, name) is getattr(public._impl, name)


def test_both_implementations_expose_the_same_api():
    compiled, pure = load_impl("pool", "compiled"), load_impl("pool", "pure")
    assert compiled.__all__ == pure.__all__
    for name in ("ObjectPool", "Lease"):
        public = {attr for attr in dir(getattr(pure, name)) if not attr.startswith("_")}
        assert public == {attr for attr in dir(getattr(compiled, name)) if not attr.startswith("_")}


def test_reference_cycles_through_the_pool_are_collected(mod):
    class Node:
        pass

    pool = mod.ObjectPool(Node, max_idle=2)
    idle, leased = pool.acquire(), pool.acquire()
    idle.pool = leased.pool = pool
    pool.release(idle)
    refs = [weakref.ref(idle), weakref.ref(leased), weakref.ref(pool)]
    del pool, idle, leased
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]


def test_callbacks_reentering_the_pool_keep_it_consistent(mod, harness):
    """A destroy() that acquires, releases and clears while the pool is evicting."""
    pool = None
    spare = []

    def destroy(thing):
        harness.destroyed.append(thing.serial)
        if len(harness.destroyed) == 1:
            spare.append(pool.acquire())
            pool.clear()
        elif spare:
            pool.release(spare.pop())

    pool = mod.ObjectPool(harness.factory, max_idle=2, destroy=destroy)
    things = [pool.acquire() for _ in range(5)]
    for thing in things:
        pool.release(thing)
    pool.clear()
    stats = pool.stats()
    assert stats["created"] - stats["destroyed"] == stats["in_use"] + stats["idle"]
    assert stats["destroyed"] == len(harness.destroyed)
    assert sorted(harness.destroyed) == sorted(set(harness.destroyed))  # nobody destroyed twice
    for thing in [pool.acquire() for _ in range(stats["idle"])]:
        pool.release(thing)


# -- bad arguments -------------------------------------------------------------


def _tick():
    return 0.0


BAD_ARGUMENTS = [
    (dict(max_idle=None), TypeError),
    (dict(max_idle="2"), TypeError),
    (dict(max_idle=2.0), TypeError),
    (dict(max_idle=True), TypeError),
    (dict(max_idle=-1), ValueError),
    (dict(max_idle=sys.maxsize + 1), ValueError),
    (dict(max_idle=2**200), ValueError),
    (dict(max_idle=1, max_total=0), ValueError),
    (dict(max_idle=1, max_total=-3), ValueError),
    (dict(max_idle=1, max_total=1.5), TypeError),
    (dict(max_idle=1, max_total=False), TypeError),
    (dict(max_idle=1, max_total=2**100), ValueError),
    (dict(max_idle=1, reset=1), TypeError),
    (dict(max_idle=1, validate="yes"), TypeError),
    (dict(max_idle=1, destroy=object()), TypeError),
    (dict(max_idle=1, clock=3.0), TypeError),
    (dict(max_idle=1, idle_ttl="1", clock=_tick), TypeError),
    (dict(max_idle=1, idle_ttl=True, clock=_tick), TypeError),
    (dict(max_idle=1, idle_ttl=-0.5, clock=_tick), ValueError),
    (dict(max_idle=1, idle_ttl=math.nan, clock=_tick), ValueError),
    (dict(max_idle=1, idle_ttl=math.inf, clock=_tick), ValueError),
    (dict(max_idle=1, idle_ttl=10**400, clock=_tick), ValueError),
    (dict(max_idle=1, idle_ttl=1.0), ValueError),  # no clock
]


@pytest.mark.parametrize("kwargs, error", BAD_ARGUMENTS)
def test_bad_arguments(mod, kwargs, error):
    with pytest.raises(error):
        mod.ObjectPool(Thing.__new__, **kwargs)


@pytest.mark.parametrize("factory", [None, 1, "Thing"])
def test_factory_must_be_callable(mod, factory):
    with pytest.raises(TypeError, match="factory"):
        mod.ObjectPool(factory, max_idle=1)


def test_max_idle_is_keyword_only_and_required(mod):
    with pytest.raises(TypeError):
        mod.ObjectPool(list, 4)
    with pytest.raises(TypeError):
        mod.ObjectPool(list)


def test_large_limits_accepted(mod):
    pool = mod.ObjectPool(list, max_idle=sys.maxsize, max_total=sys.maxsize, idle_ttl=0.0, clock=_tick)
    assert (pool.max_idle, pool.max_total) == (sys.maxsize, sys.maxsize)


# -- model check -------------------------------------------------------------

EXHAUSTED = "exhausted"
RESET_FAILED = "reset failed"


class Model:
    """The pool's contract, spelled out with lists and sets."""

    def __init__(self, max_idle, max_total, idle_ttl, validate, reset):
        self.max_idle, self.max_total, self.idle_ttl = max_idle, max_total, idle_ttl
        self.validate, self.reset = validate, reset
        self.idle: list[tuple[int, float]] = []  # (serial, released_at), coldest first
        self.in_use: set[int] = set()
        self.unhealthy: set[int] = set()
        self.failing_reset: set[int] = set()
        self.created = self.reused = 0
        self.destroyed: list[int] = []

    def stats(self):
        return {"created": self.created, "reused": self.reused, "destroyed": len(self.destroyed),
                "in_use": len(self.in_use), "idle": len(self.idle)}

    def evict(self, now):
        dropped = 0
        while self.idle and now - self.idle[0][1] >= self.idle_ttl:
            self.destroyed.append(self.idle.pop(0)[0])
            dropped += 1
        return dropped

    def acquire(self, now):
        if self.idle_ttl is not None:
            self.evict(now)
        while self.idle:
            serial, _ = self.idle.pop()
            if self.validate and serial in self.unhealthy:
                self.destroyed.append(serial)
                continue
            self.in_use.add(serial)
            self.reused += 1
            return serial
        if self.max_total is not None and len(self.in_use) >= self.max_total:
            return EXHAUSTED
        serial = self.created
        self.created += 1
        self.in_use.add(serial)
        return serial

    def release(self, serial, now):
        self.in_use.remove(serial)
        if self.reset and serial in self.failing_reset:
            self.destroyed.append(serial)
            return RESET_FAILED
        self.idle.append((serial, now))
        if self.idle_ttl is not None:
            self.evict(now)
        while len(self.idle) > self.max_idle:
            self.destroyed.append(self.idle.pop(0)[0])
        return None


class Boom(Exception):
    pass


def outcome(call):
    """What a pool operation did: its serial/count, or the kind of error."""
    try:
        result = call()
    except Boom:
        return "boom"
    except OSError:
        return RESET_FAILED
    except Exception as exc:  # PoolExhausted / PoolError differ per module
        return type(exc).__name__
    return result.serial if isinstance(result, Thing) else result


class PoolMachine(RuleBasedStateMachine):
    """Drives the model and one or more implementations in lockstep."""

    modules: tuple = ()

    @initialize(
        max_idle=st.sampled_from([0, 1, 2, 3]),
        max_total=st.sampled_from([None, 1, 2, 4]),
        idle_ttl=st.sampled_from([None, 0.0, 1.0, 2.5]),
        use_validate=st.booleans(),
        use_reset=st.booleans(),
    )
    def build(self, max_idle, max_total, idle_ttl, use_validate, use_reset):
        self.model = Model(max_idle, max_total, idle_ttl, use_validate, use_reset)
        self.harnesses = [Harness() for _ in self.modules]
        self.pools = []
        for module, h in zip(self.modules, self.harnesses):
            self.pools.append(module.ObjectPool(
                h.factory, max_idle=max_idle, max_total=max_total, idle_ttl=idle_ttl,
                clock=h.clock if idle_ttl is not None else None, destroy=h.destroy,
                validate=h.validate if use_validate else None,
                reset=h.reset if use_reset else None,
            ))
        self.now = 0.0

    def check(self, expected, calls):
        got = [outcome(call) for call in calls]
        assert got == [expected] * len(calls)

    @rule()
    def acquire(self):
        expected = self.model.acquire(self.now)
        self.check("PoolExhausted" if expected == EXHAUSTED else expected, [p.acquire for p in self.pools])

    @rule(data=st.data())
    def release(self, data):
        if not self.model.in_use:
            return
        serial = data.draw(st.sampled_from(sorted(self.model.in_use)))
        expected = self.model.release(serial, self.now)
        self.check(expected, [lambda p=p, h=h: p.release(h.made[serial])
                              for p, h in zip(self.pools, self.harnesses)])

    @rule(data=st.data())
    def release_not_leased(self, data):
        strangers = sorted(set(range(self.model.created)) - self.model.in_use)
        serial = data.draw(st.sampled_from(strangers + [-1]))
        self.check("PoolError", [lambda p=p, h=h: p.release(h.made[serial] if serial >= 0 else Thing(-1))
                                 for p, h in zip(self.pools, self.harnesses)])

    @rule()
    def lease_body_raises(self):
        expected = self.model.acquire(self.now)
        if expected == EXHAUSTED:
            expected = "PoolExhausted"
        else:
            expected = self.model.release(expected, self.now) or "boom"

        def leased_body(pool):
            with pool.lease():
                raise Boom

        self.check(expected, [lambda p=p: leased_body(p) for p in self.pools])

    @rule(data=st.data())
    def spoil(self, data):
        """Make one object fail validation or reset from now on."""
        if not self.model.created:
            return
        serial = data.draw(st.integers(0, self.model.created - 1))
        if data.draw(st.booleans()):
            self.model.unhealthy.add(serial)
            for h in self.harnesses:
                h.made[serial].healthy = False
        else:
            self.model.failing_reset.add(serial)
            for h in self.harnesses:
                h.made[serial].fail_reset = True

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0]))
    def advance(self, seconds):
        self.now += seconds
        for h in self.harnesses:
            h.now = self.now

    @rule(ahead=st.sampled_from([None, 0.0, 1.5, 3.0]))
    def evict(self, ahead):
        now = self.now if ahead is None else self.now + ahead
        expected = self.model.evict(now) if self.model.idle_ttl is not None else 0
        self.check(expected, [lambda p=p: p.evict() if ahead is None else p.evict(now=now) for p in self.pools])

    @rule()
    def clear(self):
        expected = len(self.model.idle)
        self.model.destroyed.extend(serial for serial, _ in self.model.idle)
        self.model.idle.clear()
        self.check(expected, [p.clear for p in self.pools])

    @invariant()
    def agrees_with_model(self):
        if not hasattr(self, "model"):
            return
        for pool, h in zip(self.pools, self.harnesses):
            assert pool.stats() == self.model.stats()
            assert (pool.in_use, pool.idle) == (len(self.model.in_use), len(self.model.idle))
            assert h.destroyed == self.model.destroyed
            assert len(h.made) == self.model.created


def test_model_and_twin_agree(impl_kind):
    module = load_impl("pool", impl_kind)
    modules = (module,) if impl_kind == "pure" else (module, load_impl("pool", "pure"))
    machine = type(f"PoolMachine_{impl_kind}", (PoolMachine,), {"modules": modules})
    run_state_machine_as_test(machine, settings=settings(max_examples=150, stateful_step_count=40, deadline=None))
