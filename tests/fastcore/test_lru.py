"""fastcore.lru: LRUCache on both implementations, plus a model check and twin-vs-compiled."""

from __future__ import annotations

import gc
import math
import pickle
import sys
import weakref
from collections import OrderedDict

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from conftest import load_impl
from fastcore._select import pure_forced

STATS_KEYS = {"hits", "misses", "evictions", "expirations", "entries", "bytes"}


@pytest.fixture
def mod(impl_kind):
    return load_impl("lru", impl_kind)


class FakeClock:
    """A settable monotonic clock that counts how often it is read."""

    def __init__(self, now: float = 0.0):
        self.now = now
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.now


class EvictLog:
    def __init__(self):
        self.calls: list[tuple[object, object]] = []

    def __call__(self, key, value):
        self.calls.append((key, value))


# -- construction ------------------------------------------------------------------


def test_public_module_exports_lru_cache():
    import fastcore.lru

    assert fastcore.lru.__all__ == ["LRUCache"]
    assert fastcore.lru.LRUCache is fastcore.lru._impl.LRUCache


def test_properties(mod):
    c = mod.LRUCache(3, 100, 2, clock=FakeClock())
    assert (c.maxsize, c.maxbytes, c.ttl) == (3, 100, 2.0)
    assert isinstance(c.ttl, float)
    c = mod.LRUCache(1)
    assert (c.maxsize, c.maxbytes, c.ttl) == (1, None, None)
    assert "maxsize=1" in repr(c)


@pytest.mark.parametrize("maxsize", ["10", 1.5, None, True, b"1"])
def test_maxsize_wrong_type(mod, maxsize):
    with pytest.raises(TypeError):
        mod.LRUCache(maxsize)


@pytest.mark.parametrize("maxsize", [0, -1, sys.maxsize + 1, 2**100])
def test_maxsize_out_of_range(mod, maxsize):
    with pytest.raises(ValueError):
        mod.LRUCache(maxsize)


@pytest.mark.parametrize("maxbytes, exc", [("1", TypeError), (2.0, TypeError), (False, TypeError), (-1, ValueError), (sys.maxsize + 1, ValueError)])
def test_maxbytes_rejected(mod, maxbytes, exc):
    with pytest.raises(exc):
        mod.LRUCache(4, maxbytes)


@pytest.mark.parametrize(
    "ttl, exc",
    [("x", TypeError), (True, TypeError), ([1], TypeError), (0, ValueError), (-1.0, ValueError), (math.nan, ValueError), (math.inf, ValueError), (10**400, ValueError)],
)
def test_ttl_rejected(mod, ttl, exc):
    with pytest.raises(exc):
        mod.LRUCache(4, ttl=ttl, clock=FakeClock())


def test_ttl_needs_clock(mod):
    with pytest.raises(ValueError):
        mod.LRUCache(4, ttl=1.0)


def test_callables_checked(mod):
    with pytest.raises(TypeError):
        mod.LRUCache(4, clock=3)
    with pytest.raises(TypeError):
        mod.LRUCache(4, on_evict="no")


def test_uninitialised_instance_does_not_crash(mod):
    c = mod.LRUCache.__new__(mod.LRUCache)  # __init__ never ran
    for op in (lambda: c.__setitem__("a", 1), lambda: c.get("a"), lambda: list(c.items()), c.expire, c.stats, c.clear):
        try:
            op()
        except Exception:  # pure twin: AttributeError; compiled: a usable zero-capacity cache
            pass


def test_cannot_pickle(mod):
    with pytest.raises(TypeError):
        pickle.dumps(mod.LRUCache(2))


# -- recency and capacity ------------------------------------------------------------


def test_get_promotes_and_lru_is_evicted(mod):
    log = EvictLog()
    c = mod.LRUCache(3, on_evict=log)
    for k in "abc":
        c[k] = k.upper()
    assert c.get("a") == "A"  # a is now the most recent
    c["d"] = "D"
    assert list(c) == ["c", "a", "d"]
    assert log.calls == [("b", "B")]
    assert c.stats() == {"hits": 1, "misses": 0, "evictions": 1, "expirations": 0, "entries": 3, "bytes": 0}


def test_get_default_and_miss_counting(mod):
    c = mod.LRUCache(2)
    marker = object()
    assert c.get("x") is None
    assert c.get("x", marker) is marker
    with pytest.raises(KeyError):
        c["x"]
    c["x"] = 0
    assert c["x"] == 0
    assert c.stats()["hits"] == 1 and c.stats()["misses"] == 3


def test_get_default_is_positional_only(mod):
    c = mod.LRUCache(2)
    with pytest.raises(TypeError):
        c.get("x", default=1)


def test_overwrite_promotes_without_eviction_callback(mod):
    log = EvictLog()
    c = mod.LRUCache(2, on_evict=log)
    c["a"] = 1
    c["b"] = 2
    c["a"] = 10
    assert list(c.items()) == [("b", 2), ("a", 10)]
    assert log.calls == []
    c["c"] = 3
    assert log.calls == [("b", 2)]


def test_peek_and_contains_do_not_promote_or_count(mod):
    c = mod.LRUCache(2)
    c["a"] = 1
    c["b"] = 2
    assert c.peek("a") == 1
    assert c.peek("zz", "d") == "d"
    assert "a" in c and "zz" not in c
    c["c"] = 3  # a is still the least recent
    assert list(c) == ["b", "c"]
    assert c.stats()["hits"] == 0 and c.stats()["misses"] == 0


def test_touch(mod):
    c = mod.LRUCache(2)
    c["a"] = 1
    c["b"] = 2
    assert c.touch("a") is True
    assert c.touch("zz") is False
    c["c"] = 3
    assert list(c) == ["a", "c"]


def test_removals_do_not_call_on_evict(mod):
    log = EvictLog()
    c = mod.LRUCache(5, on_evict=log)
    for i, k in enumerate("abcde"):
        c[k] = i
    assert c.pop("a") == 0
    assert c.pop("a", "gone") == "gone"
    with pytest.raises(KeyError):
        c.pop("a")
    assert c.delete("b") is True
    assert c.delete("b") is False
    del c["c"]
    with pytest.raises(KeyError):
        del c["c"]
    c.clear()
    assert len(c) == 0 and list(c) == []
    assert log.calls == []


def test_clear_keeps_statistics_and_cache_is_reusable(mod):
    c = mod.LRUCache(2)
    c["a"] = 1
    c.get("a")
    c.get("b")
    c.clear()
    assert c.stats() == {"hits": 1, "misses": 1, "evictions": 0, "expirations": 0, "entries": 0, "bytes": 0}
    c["x"] = 1
    c["y"] = 2
    c["z"] = 3
    assert list(c) == ["y", "z"]


def test_keys_of_any_hashable_type(mod):
    c = mod.LRUCache(10)
    keys = [1, 1.5, "s", b"b", (1, 2), frozenset({3}), None]
    for i, k in enumerate(keys):
        c[k] = i
    assert [c[k] for k in keys] == list(range(len(keys)))
    c[1.0] = "one"  # equal to 1: replaces it
    assert len(c) == len(keys) and c[1] == "one"


def test_unhashable_key_raises_type_error(mod):
    c = mod.LRUCache(2)
    for op in (lambda: c.get([]), lambda: c.__setitem__([], 1), lambda: [] in c, lambda: c.peek({}), lambda: c.set({}, 1)):
        with pytest.raises(TypeError):
            op()
    assert c.stats()["misses"] == 0 and len(c) == 0


def test_many_entries_keep_exact_order(mod):
    c = mod.LRUCache(1000)
    for i in range(3000):
        c[i] = -i
        if i % 3 == 0:
            c.get(i // 2)
    model = OrderedDict()
    for i in range(3000):
        model[i] = -i
        if len(model) > 1000:
            model.popitem(last=False)
        if i % 3 == 0 and i // 2 in model:
            model.move_to_end(i // 2)
    assert list(c.items()) == list(model.items())
    c.clear()
    for i in range(50):
        c[i] = i
    assert list(c) == list(range(50))


def test_random_churn_matches_ordered_dict(mod):
    # Thousands of mixed operations: exercises slot reuse after deletes and array growth.
    import random

    rng = random.Random(1234)
    c = mod.LRUCache(300)
    model = OrderedDict()
    for step in range(6000):
        key = rng.randrange(600)
        op = rng.random()
        if op < 0.5:
            c[key] = step
            model[key] = step
            model.move_to_end(key)
            if len(model) > 300:
                model.popitem(last=False)
        elif op < 0.8:
            assert c.get(key) == model.get(key)
            if key in model:
                model.move_to_end(key)
        else:
            assert c.pop(key, None) == model.pop(key, None)
    assert list(c.items()) == list(model.items())


# -- byte budget ---------------------------------------------------------------------


def test_size_required_with_maxbytes(mod):
    c = mod.LRUCache(4, maxbytes=10)
    with pytest.raises(ValueError):
        c["a"] = 1
    with pytest.raises(ValueError):
        c.set("a", 1)
    assert len(c) == 0


def test_byte_budget_evicts_lru(mod):
    log = EvictLog()
    c = mod.LRUCache(10, maxbytes=10, on_evict=log)
    c.set("a", 1, size=4)
    c.set("b", 2, size=4)
    c.set("c", 3, size=2)
    assert c.stats()["bytes"] == 10
    c.set("d", 4, size=5)
    assert list(c) == ["c", "d"] and log.calls == [("a", 1), ("b", 2)]
    assert c.stats()["bytes"] == 7 and c.stats()["evictions"] == 2


def test_replacement_growing_evicts_others_not_itself(mod):
    c = mod.LRUCache(10, maxbytes=10)
    c.set("a", 1, size=3)
    c.set("b", 2, size=3)
    c.set("c", 3, size=3)
    c.set("a", 10, size=10)
    assert list(c.items()) == [("a", 10)] and c.stats()["bytes"] == 10
    c.set("a", 11, size=1)
    assert c.stats()["bytes"] == 1


def test_entry_larger_than_maxbytes_changes_nothing(mod):
    c = mod.LRUCache(10, maxbytes=5)
    c.set("a", 1, size=5)
    with pytest.raises(ValueError):
        c.set("a", 2, size=6)
    with pytest.raises(ValueError):
        c.set("b", 2, size=6)
    assert list(c.items()) == [("a", 1)] and c.stats()["bytes"] == 5


def test_zero_maxbytes_holds_only_empty_entries(mod):
    c = mod.LRUCache(3, maxbytes=0)
    c.set("a", 1, size=0)
    with pytest.raises(ValueError):
        c.set("b", 1, size=1)
    assert list(c) == ["a"]


def test_sizes_counted_without_maxbytes(mod):
    c = mod.LRUCache(2)
    c.set("a", 1, size=7)
    c["b"] = 2
    assert c.stats()["bytes"] == 7
    c["c"] = 3  # evicts a
    assert c.stats()["bytes"] == 0


@pytest.mark.parametrize("size, exc", [(1.5, TypeError), ("3", TypeError), (True, TypeError), (-1, ValueError), (sys.maxsize + 1, ValueError), (2**80, ValueError)])
def test_bad_sizes(mod, size, exc):
    c = mod.LRUCache(2, maxbytes=100)
    with pytest.raises(exc):
        c.set("a", 1, size=size)
    c = mod.LRUCache(2)
    with pytest.raises(exc):
        c.set("a", 1, size=size)
    assert len(c) == 0


def test_total_size_overflow_rejected(mod):
    half = sys.maxsize // 2 + 1
    c = mod.LRUCache(4)
    c.set("a", 1, size=half)
    with pytest.raises(ValueError):
        c.set("b", 2, size=half)
    assert list(c) == ["a"] and c.stats()["bytes"] == half
    c.set("a", 3, size=sys.maxsize)  # replacing: the old size no longer counts
    assert c.stats()["bytes"] == sys.maxsize


def test_huge_maxbytes_does_not_overflow(mod):
    c = mod.LRUCache(4, maxbytes=sys.maxsize)
    c.set("a", 1, size=sys.maxsize - 1)
    c.set("b", 2, size=sys.maxsize)
    assert list(c) == ["b"] and c.stats()["bytes"] == sys.maxsize
    c.set("b", 3, size=sys.maxsize)
    assert c.stats()["bytes"] == sys.maxsize


# -- time to live --------------------------------------------------------------------


def test_expired_entry_is_a_miss_and_an_expiration(mod):
    clock, log = FakeClock(), EvictLog()
    c = mod.LRUCache(4, ttl=10, clock=clock, on_evict=log)
    c["a"] = 1
    clock.now = 9.999
    assert c.get("a") == 1
    clock.now = 10.0  # expiry is inclusive
    assert c.get("a") is None
    assert log.calls == [("a", 1)]
    assert c.stats() == {"hits": 1, "misses": 1, "evictions": 0, "expirations": 1, "entries": 0, "bytes": 0}


@pytest.mark.parametrize("op", ["getitem", "peek", "contains", "touch", "pop", "delete", "delitem"])
def test_every_key_lookup_treats_expired_as_absent(mod, op):
    clock, log = FakeClock(), EvictLog()
    c = mod.LRUCache(4, clock=clock, on_evict=log)
    c.set("a", 1, size=3, ttl=1)
    clock.now = 1.5
    if op == "getitem":
        with pytest.raises(KeyError):
            c["a"]
    elif op == "peek":
        assert c.peek("a", "d") == "d"
    elif op == "contains":
        assert "a" not in c
    elif op == "touch":
        assert c.touch("a") is False
    elif op == "pop":
        assert c.pop("a", "d") == "d"
    elif op == "delete":
        assert c.delete("a") is False
    else:
        with pytest.raises(KeyError):
            del c["a"]
    assert log.calls == [("a", 1)]
    assert c.stats()["expirations"] == 1 and len(c) == 0 and c.stats()["bytes"] == 0


def test_per_entry_ttl_overrides_default(mod):
    clock = FakeClock()
    c = mod.LRUCache(4, ttl=10, clock=clock)
    c.set("short", 1, ttl=1)
    c["long"] = 2
    clock.now = 5
    assert "short" not in c and "long" in c


def test_per_entry_ttl_needs_clock(mod):
    c = mod.LRUCache(4)
    with pytest.raises(ValueError):
        c.set("a", 1, ttl=1)
    for ttl, exc in (("x", TypeError), (0, ValueError), (math.nan, ValueError), (-math.inf, ValueError)):
        with pytest.raises(exc):
            mod.LRUCache(4, clock=FakeClock()).set("a", 1, ttl=ttl)
    assert len(c) == 0


def test_set_and_touch_restart_ttl(mod):
    clock = FakeClock()
    c = mod.LRUCache(4, ttl=10, clock=clock)
    c["a"] = 1
    c["b"] = 2
    clock.now = 8
    c["a"] = 3
    assert c.touch("b")
    clock.now = 15
    assert c.peek("a") == 3 and c.peek("b") == 2
    clock.now = 18
    assert c.expire() == 2


def test_replacing_with_no_ttl_removes_expiry(mod):
    clock = FakeClock()
    c = mod.LRUCache(4, clock=clock)
    c.set("a", 1, ttl=1)
    c.set("a", 2)
    clock.now = 100
    assert c.get("a") == 2 and c.expire() == 0


def test_expire_removes_only_expired_in_queue_order(mod):
    clock, log = FakeClock(), EvictLog()
    c = mod.LRUCache(10, clock=clock, on_evict=log)
    c.set("a", 1, ttl=5)  # expires at 5
    c.set("b", 2, ttl=1)  # 1
    clock.now = 1
    c.set("c", 3, ttl=5)  # 6
    c.set("d", 4, ttl=1)  # 2
    c.set("e", 5)  # never
    assert c.expire(0.5) == 0
    assert c.expire(5) == 3
    assert sorted(log.calls) == [("a", 1), ("b", 2), ("d", 4)]
    assert list(c) == ["c", "e"]
    clock.now = 100
    assert c.expire() == 1 and list(c) == ["e"]
    assert c.stats()["expirations"] == 4 and c.stats()["evictions"] == 0


def test_expire_without_clock_and_bad_now(mod):
    c = mod.LRUCache(4)
    c["a"] = 1
    assert c.expire() == 0 and c.expire(1e9) == 0
    with pytest.raises(TypeError):
        c.expire("now")
    with pytest.raises(TypeError):
        c.expire(True)
    with pytest.raises(ValueError):
        c.expire(math.nan)
    assert c.expire(math.inf) == 0 and list(c) == ["a"]


def test_expire_at_infinity_and_nan_clock(mod):
    clock = FakeClock()
    c = mod.LRUCache(4, clock=clock)
    c.set("a", 1, ttl=1)
    c["b"] = 2
    clock.now = math.nan
    with pytest.raises(ValueError):
        c.expire()
    assert c.expire(math.inf) == 1 and list(c) == ["b"]


def test_clock_not_read_for_entries_without_ttl(mod):
    clock = FakeClock()
    c = mod.LRUCache(4, clock=clock)
    c.set("timed", 0, ttl=5)
    reads = clock.calls
    c["a"] = 1
    for _ in range(10):
        c.get("a")
        c.get("missing")
        "a" in c
        c.peek("a")
        c.touch("a")
    list(c.items())
    len(c)
    c.stats()
    assert clock.calls == reads


def test_iteration_does_not_read_clock_and_includes_expired(mod):
    clock = FakeClock()
    c = mod.LRUCache(4, ttl=1, clock=clock)
    c["a"] = 1
    clock.now = 5
    calls = clock.calls
    assert list(c.items()) == [("a", 1)] and len(c) == 1
    assert clock.calls == calls


def test_clock_errors_propagate(mod):
    def broken():
        raise OSError("no time")

    c = mod.LRUCache(4, clock=broken)
    with pytest.raises(OSError):
        c.set("a", 1, ttl=1)
    assert len(c) == 0


def test_many_distinct_ttls_and_queue_cleanup(mod):
    clock = FakeClock()
    c = mod.LRUCache(1000, clock=clock)
    for i in range(200):
        c.set(i, i, ttl=1 + i % 7)
    clock.now = 3.5  # ttls 1, 2, 3 are gone
    removed = c.expire()
    assert removed == sum(1 for i in range(200) if 1 + i % 7 <= 3.5)
    clock.now = 1000
    assert c.expire() == 200 - removed and len(c) == 0
    c.set("x", 1, ttl=1)  # queues were dropped and are rebuilt
    clock.now = 1001
    assert c.expire() == 1


# -- callbacks -----------------------------------------------------------------------


def test_on_evict_failure_still_reports_every_entry(mod):
    seen = []

    def on_evict(key, value):
        seen.append(key)
        raise RuntimeError(f"boom {key}")

    c = mod.LRUCache(10, maxbytes=10, on_evict=on_evict)
    for k in "abc":
        c.set(k, 0, size=3)
    with pytest.raises(RuntimeError, match="boom a"):
        c.set("d", 0, size=10)
    assert seen == ["a", "b", "c"]
    assert list(c) == ["d"] and c.stats()["bytes"] == 10


def test_on_evict_may_use_the_cache(mod):
    c = None
    seen = []

    def on_evict(key, value):
        seen.append(key)
        if not key.startswith("echo-"):
            c[f"echo-{key}"] = value  # reentrant insert, which itself evicts

    c = mod.LRUCache(2, on_evict=on_evict)
    c["a"] = 1
    c["b"] = 2
    c["c"] = 3
    # c evicts a; echo-a evicts b; echo-b evicts c; echo-c evicts echo-a.
    assert seen == ["a", "b", "c", "echo-a"]
    assert list(c.items()) == [("echo-b", 2), ("echo-c", 3)]
    assert c.stats()["evictions"] == 4 and c.stats()["entries"] == 2


# -- hostile keys and clocks -----------------------------------------------------------


class CollidingKey:
    """Every instance hashes alike; comparing two runs *on_eq* first."""

    def __init__(self, name, on_eq=None):
        self.name = name
        self.on_eq = on_eq

    def __hash__(self):
        return 42

    def __eq__(self, other):
        if self.on_eq is not None:
            self.on_eq()
        return isinstance(other, CollidingKey) and other.name == self.name

    def __repr__(self):
        return f"CollidingKey({self.name!r})"


@pytest.mark.parametrize("reentry", ["clear", "set", "get", "pop", "expire"])
@pytest.mark.parametrize("op", ["get", "getitem", "set", "setitem", "peek", "contains", "touch", "pop", "delete"])
def test_reentry_from_key_comparison_is_refused(mod, op, reentry):
    c = mod.LRUCache(4, clock=FakeClock())
    resident = CollidingKey("resident")
    c[resident] = "r"
    c["plain"] = "p"
    snapshot = list(c.items())
    resident.on_eq = {
        "clear": c.clear,
        "set": lambda: c.__setitem__("intruder", 1),
        "get": lambda: c.get("plain"),
        "pop": lambda: c.pop("plain", None),
        "expire": lambda: c.expire(100.0),
    }[reentry]
    probe = CollidingKey("probe")  # same hash: the dict compares it with resident
    actions = {
        "get": lambda: c.get(probe),
        "getitem": lambda: c[probe],
        "set": lambda: c.set(probe, 1, ttl=5),
        "setitem": lambda: c.__setitem__(probe, 1),
        "peek": lambda: c.peek(probe),
        "contains": lambda: probe in c,
        "touch": lambda: c.touch(probe),
        "pop": lambda: c.pop(probe, None),
        "delete": lambda: c.delete(probe),
    }
    with pytest.raises(RuntimeError):
        actions[op]()
    resident.on_eq = None
    assert list(c.items()) == snapshot
    # Still fully usable afterwards.
    c["after"] = 3
    assert c.get(resident) == "r" and c.pop("plain") == "p"
    assert list(c) == ["after", resident]


def test_reentry_from_clock_is_refused(mod):
    armed = False

    def clock():
        if armed:
            c.get("other")
        return 0.0

    c = mod.LRUCache(4, clock=clock)
    c["other"] = 1
    c.set("timed", 2, ttl=5)
    armed = True
    for op in (lambda: c.set("x", 3, ttl=1), lambda: c.get("timed"), lambda: "timed" in c, lambda: c.touch("timed"), c.expire):
        with pytest.raises(RuntimeError):
            op()
    armed = False
    assert list(c.items()) == [("other", 1), ("timed", 2)]
    assert c.get("timed") == 2 and c.stats()["expirations"] == 0


def test_failing_hash_leaves_cache_usable(mod):
    class Unhashable:
        def __hash__(self):
            raise ArithmeticError("no hash")

    c = mod.LRUCache(2)
    c["a"] = 1
    for op in (lambda: c.get(Unhashable()), lambda: c.set(Unhashable(), 1), lambda: c.pop(Unhashable(), None)):
        with pytest.raises(ArithmeticError):
            op()
    c["b"] = 2
    assert list(c.items()) == [("a", 1), ("b", 2)] and c.stats()["misses"] == 0


# -- iteration -----------------------------------------------------------------------


def test_iterators_oldest_first(mod):
    c = mod.LRUCache(4)
    for i, k in enumerate("abc"):
        c[k] = i
    c.get("a")
    assert list(c) == list(c.keys()) == ["b", "c", "a"]
    assert list(c.values()) == [1, 2, 0]
    assert list(c.items()) == [("b", 1), ("c", 2), ("a", 0)]
    assert list(mod.LRUCache(1)) == []


@pytest.mark.parametrize("kind", ["iter", "keys", "values", "items"])
@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.__setitem__("new", 9),
        lambda c: c.get("a"),  # promotion reorders
        lambda c: c.pop("b"),
        lambda c: c.clear(),
        lambda c: c.touch("a"),
    ],
)
def test_mutation_during_iteration_raises(mod, kind, mutate):
    c = mod.LRUCache(4)
    for i, k in enumerate("abc"):
        c[k] = i
    it = iter(c) if kind == "iter" else getattr(c, kind)()
    next(it)
    mutate(c)
    with pytest.raises(RuntimeError):
        next(it)


def test_non_reordering_operations_keep_iterators_valid(mod):
    c = mod.LRUCache(4)
    for i, k in enumerate("abc"):
        c[k] = i
    it = c.keys()
    assert next(it) == "a"
    c.get("c")  # already the most recent
    c.peek("a")
    "b" in c
    c.get("missing")
    c["c"] = 5  # replacing the most recent does not reorder
    assert list(it) == ["b", "c"]


def test_exhausted_iterator_stays_exhausted(mod):
    c = mod.LRUCache(4)
    c["a"] = 1
    it = c.items()
    assert list(it) == [("a", 1)]
    c["b"] = 2
    assert list(it) == []


# -- memory --------------------------------------------------------------------------


def test_reference_cycles_through_values_are_collected(mod):
    class Holder:
        pass

    c = mod.LRUCache(4)
    holder = Holder()
    holder.cache = c
    c["self"] = holder
    ref = weakref.ref(holder)
    del c, holder
    gc.collect()
    assert ref() is None


def test_evicted_values_are_released(mod):
    class Value:
        pass

    c = mod.LRUCache(1)
    v = Value()
    ref = weakref.ref(v)
    c["a"] = v
    del v
    c["b"] = 1
    gc.collect()
    assert ref() is None


# -- stateful: model vs pure vs compiled -----------------------------------------------


def _implementations():
    impls = [load_impl("lru", "pure")]
    if not pure_forced():
        impls.append(load_impl("lru", "compiled"))
    return impls


class ModelLRU:
    """The obvious O(n) reference: an OrderedDict of key -> [value, size, expires_at, ttl]."""

    def __init__(self, maxsize, maxbytes, ttl, clock, log):
        self.maxsize, self.maxbytes, self.ttl = maxsize, maxbytes, ttl
        self.clock, self.log = clock, log
        self.data = OrderedDict()
        self.stats = dict.fromkeys(("hits", "misses", "evictions", "expirations"), 0)

    def _live(self, key):
        entry = self.data.get(key)
        if entry is not None and entry[2] is not None and self.clock.now >= entry[2]:
            del self.data[key]
            self.stats["expirations"] += 1
            self.log.calls.append((key, entry[0]))
            return None
        return entry

    def bytes(self):
        return sum(e[1] for e in self.data.values())

    def get(self, key, default):
        entry = self._live(key)
        if entry is None:
            self.stats["misses"] += 1
            return default
        self.data.move_to_end(key)
        self.stats["hits"] += 1
        return entry[0]

    def set(self, key, value, size, ttl):
        if size is None:
            if self.maxbytes is not None:
                raise ValueError
            size = 0
        elif self.maxbytes is not None and size > self.maxbytes:
            raise ValueError
        ttl = self.ttl if ttl is None else ttl
        expires = None if ttl is None else self.clock.now + ttl
        self.data[key] = [value, size, expires, ttl]
        self.data.move_to_end(key)
        while len(self.data) > self.maxsize or (self.maxbytes is not None and self.bytes() > self.maxbytes):
            old_key, old = self.data.popitem(last=False)
            self.stats["evictions"] += 1
            self.log.calls.append((old_key, old[0]))

    def peek(self, key, default):
        entry = self._live(key)
        return default if entry is None else entry[0]

    def touch(self, key):
        entry = self._live(key)
        if entry is None:
            return False
        if entry[3] is not None:
            entry[2] = self.clock.now + entry[3]
        self.data.move_to_end(key)
        return True

    def pop(self, key, default):
        entry = self._live(key)
        if entry is None:
            if default is KeyError:
                raise KeyError(key)
            return default
        del self.data[key]
        return entry[0]

    def expire(self, now):
        gone = [k for k, e in self.data.items() if e[2] is not None and now >= e[2]]
        for k in gone:
            self.log.calls.append((k, self.data.pop(k)[0]))
        self.stats["expirations"] += len(gone)
        return len(gone)

    def full_stats(self):
        return dict(self.stats, entries=len(self.data), bytes=self.bytes())


KEYS = st.sampled_from(["a", "b", "c", 7])
VALUES = st.integers(0, 9)
SIZES = st.sampled_from([None, 0, 1, 2, 3, 5])
TTLS = st.sampled_from([None, 0.5, 1.0, 2.0])
MISSING = object()


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as exc:  # the type is what must agree
        return ("raise", type(exc))


class LRUMachine(RuleBasedStateMachine):
    """Drive the model, the twin and (unless TRIOBOT_PURE) the compiled cache in lockstep.

    Few rules with a variant argument each, so that short runs still reach
    the interesting interleavings (store, time passing, lookup).
    """

    @initialize(maxsize=st.integers(1, 4), maxbytes=st.sampled_from([None, None, 0, 4, 8]), ttl=TTLS)
    def setup(self, maxsize, maxbytes, ttl):
        self.clock = FakeClock()
        self.model_log = EvictLog()
        self.model = ModelLRU(maxsize, maxbytes, ttl, self.clock, self.model_log)
        self.logs = [EvictLog() for _ in _implementations()]
        self.caches = [
            impl.LRUCache(maxsize, maxbytes, ttl, clock=self.clock, on_evict=log)
            for impl, log in zip(_implementations(), self.logs)
        ]
        self.iterators = None

    def _same(self, call, expected):
        outcomes = [_outcome(lambda c=c: call(c)) for c in self.caches]
        for outcome in outcomes:
            assert outcome == outcomes[0], outcomes
        assert outcomes[0] == expected, (outcomes[0], expected)

    def _check_logs(self, ordered=True):
        for log in self.logs:
            assert log.calls == self.logs[0].calls
        if ordered:
            assert self.logs[0].calls == self.model_log.calls
        else:
            assert sorted(self.logs[0].calls, key=repr) == sorted(self.model_log.calls, key=repr)
            self.model_log.calls[:] = self.logs[0].calls  # keep comparing exactly from here on

    @rule(dt=st.sampled_from([0.25, 0.5, 1.0, 2.0]))
    def advance(self, dt):
        self.clock.now += dt

    @rule(key=KEYS, value=VALUES, size=SIZES, ttl=TTLS)
    def set(self, key, value, size, ttl):
        expected = _outcome(lambda: self.model.set(key, value, size, ttl))
        self._same(lambda c: c.set(key, value, size=size, ttl=ttl), expected)
        self._check_logs()

    @rule(key=KEYS, value=VALUES)
    def setitem(self, key, value):
        def assign(c):
            c[key] = value

        self._same(assign, _outcome(lambda: self.model.set(key, value, None, None)))
        self._check_logs()

    @rule(key=KEYS, how=st.sampled_from(["get", "getitem", "peek", "contains", "touch"]))
    def lookup(self, key, how):
        model = self.model
        if how == "get":
            self._same(lambda c: c.get(key, MISSING), ("ok", model.get(key, MISSING)))
        elif how == "getitem":
            value = model.get(key, MISSING)
            self._same(lambda c: c[key], ("raise", KeyError) if value is MISSING else ("ok", value))
        elif how == "peek":
            self._same(lambda c: c.peek(key, MISSING), ("ok", model.peek(key, MISSING)))
        elif how == "contains":
            self._same(lambda c: key in c, ("ok", model.peek(key, MISSING) is not MISSING))
        else:
            self._same(lambda c: c.touch(key), ("ok", model.touch(key)))
        self._check_logs()

    @rule(key=KEYS, how=st.sampled_from(["pop", "pop_default", "delete", "delitem"]))
    def remove(self, key, how):
        value = self.model.pop(key, MISSING)
        if how == "pop":
            self._same(lambda c: c.pop(key), ("raise", KeyError) if value is MISSING else ("ok", value))
        elif how == "pop_default":
            self._same(lambda c: c.pop(key, MISSING), ("ok", value))
        elif how == "delete":
            self._same(lambda c: c.delete(key), ("ok", value is not MISSING))
        else:

            def remove(c):
                del c[key]

            self._same(remove, ("raise", KeyError) if value is MISSING else ("ok", None))
        self._check_logs()

    @rule(how=st.sampled_from(["clock", "now", "later"]))
    def expire(self, how):
        if how == "clock":
            self._same(lambda c: c.expire(), ("ok", self.model.expire(self.clock.now)))
        else:
            now = self.clock.now + (0.0 if how == "now" else 1.0)
            self._same(lambda c: c.expire(now), ("ok", self.model.expire(now)))
        # Per-TTL queues are visited in their own order; the set of entries must match.
        self._check_logs(ordered=False)

    @rule(kind=st.sampled_from(["clear", "keys", "values", "items"]))
    def clear_or_iterate(self, kind):
        if kind == "clear":
            self.model.data.clear()
            self._same(lambda c: c.clear(), ("ok", None))
        else:
            self.iterators = [getattr(c, kind)() for c in self.caches]

    @precondition(lambda self: self.iterators is not None)
    @rule()
    def step_iterators(self):
        outcomes = [_outcome(lambda it=it: next(it)) for it in self.iterators]
        for outcome in outcomes:
            assert outcome == outcomes[0], outcomes
        if outcomes[0][0] == "raise":
            self.iterators = None

    @invariant()
    def agree(self):
        if not hasattr(self, "model"):
            return
        expected_items = [(k, e[0]) for k, e in self.model.data.items()]
        expected_stats = self.model.full_stats()
        for c in self.caches:
            assert c.stats() == expected_stats
            assert len(c) == len(expected_items)
            assert list(c.items()) == expected_items


TestLRUMachine = LRUMachine.TestCase
TestLRUMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
