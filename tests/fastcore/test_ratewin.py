"""fastcore.ratewin: quota windows per key, exact retry times, snapshots."""

from __future__ import annotations

import math
import pickle
import struct
import tracemalloc
import zlib
from collections import OrderedDict
from datetime import datetime, timezone

import pytest
from conftest import load_impl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from fastcore._windows import window_specs_bytes

HOUR = 3600.0
DAY = 86400.0
START = 1_700_000_000.0  # a realistic POSIX time


@pytest.fixture
def mod(impl_kind):
    return load_impl("ratewin", impl_kind)


def gemini_windows(mod):
    return [
        mod.Window(15, 60.0),
        mod.Window(1500, DAY, calendar=True, utc_offset=-8 * HOUR),
        mod.Window(1_000_000, 60.0),
    ]


def clone(mod, limiter):
    """An independent copy of ``limiter`` (same implementation), via a snapshot."""
    copy = mod.RateWindows(limiter.windows, limiter.max_keys)
    copy.restore(limiter.snapshot())
    return copy


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# -- windows and construction ---------------------------------------------------


def test_both_implementations_share_window_and_error_types():
    pure = load_impl("ratewin", "pure")
    assert pure.Window(3, 1.0) == (3, 1.0, False, 0.0)
    assert issubclass(pure.SnapshotError, ValueError)
    import fastcore.ratewin as public

    assert public.Window is pure.Window and public.SnapshotError is pure.SnapshotError


def test_window_fields_and_pickle():
    from fastcore.ratewin import Window

    window = Window(1500, 86400, calendar=True, utc_offset=-28800)
    assert window == (1500, 86400.0, True, -28800.0)
    assert type(window.period) is float and type(window.utc_offset) is float
    assert pickle.loads(pickle.dumps(window)) == window
    with pytest.raises(TypeError):
        Window(1500, 86400, True)  # calendar and utc_offset are keyword-only


@pytest.mark.parametrize(
    "args, kwargs, error",
    [
        ((0, 1.0), {}, ValueError),
        ((2**53 + 1, 1.0), {}, ValueError),
        ((1.5, 1.0), {}, TypeError),
        ((True, 1.0), {}, TypeError),
        (("3", 1.0), {}, TypeError),
        ((3, 0.0), {}, ValueError),
        ((3, -1.0), {}, ValueError),
        ((3, math.nan), {}, ValueError),
        ((3, math.inf), {}, ValueError),
        ((3, "60"), {}, TypeError),
        ((3, 1.0), {"calendar": 1}, TypeError),
        ((3, 1.0), {"utc_offset": math.nan}, ValueError),
        ((3, 1.0), {"utc_offset": "x"}, TypeError),
    ],
)
def test_window_rejects_bad_arguments(args, kwargs, error):
    from fastcore.ratewin import Window

    with pytest.raises(error):
        Window(*args, **kwargs)


def test_constructor_arguments(mod):
    limiter = mod.RateWindows([(3, 1.0), mod.Window(5, 2.0, calendar=True)], 4)
    assert limiter.windows == (mod.Window(3, 1.0), mod.Window(5, 2.0, calendar=True))
    assert limiter.max_keys == 4
    assert limiter.stats() == {"keys": 0, "max_keys": 4, "evictions": 0, "allowed": 0, "denied": 0}
    with pytest.raises(ValueError):
        mod.RateWindows([], 4)
    with pytest.raises(TypeError):
        mod.RateWindows(5, 4)
    with pytest.raises(TypeError):
        mod.RateWindows(["15/min"], 4)
    with pytest.raises(TypeError):
        mod.RateWindows([(3, 1.0, True)], 4)  # calendar is keyword-only in Window(*t)
    with pytest.raises(ValueError):
        mod.RateWindows([mod.Window(3, 1.0)._replace(limit=0)], 4)  # re-validated
    for bad, error in ((0, ValueError), (2**31, ValueError), (1.0, TypeError), (True, TypeError), ("4", TypeError)):
        with pytest.raises(error):
            mod.RateWindows([(3, 1.0)], bad)


# -- limits and estimates ---------------------------------------------------------


def test_each_window_enforces_its_limit(mod):
    limiter = mod.RateWindows([mod.Window(3, 60.0), mod.Window(5, DAY, calendar=True)], 10)
    now = 1_700_006_400.0  # a multiple of 60 and of 86400 (UTC midnight)
    assert [limiter.try_acquire("a", now + i)[0] for i in range(4)] == [True, True, True, False]
    # 120 s later the minute window is empty, but the day window has 2 left.
    assert limiter.try_acquire("a", now + 120, 2) == (True, 0.0)
    allowed, retry = limiter.try_acquire("a", now + 121)
    assert not allowed and retry == pytest.approx(DAY - 121)
    assert limiter.try_acquire("b", now + 121) == (True, 0.0)  # keys are independent
    assert limiter.stats()["allowed"] == 5 and limiter.stats()["denied"] == 2


def test_sliding_window_estimate(mod):
    limiter = mod.RateWindows([mod.Window(10, 60.0)], 10)
    base = 60.0 * 28_333_334  # a bucket boundary
    for i in range(8):
        assert limiter.try_acquire("k", base + i)[0]
    assert limiter.usage("k", base + 30) == [(8.0, 10)]
    assert limiter.usage("k", base + 60) == [(8.0, 10)]  # previous bucket at weight 1
    assert limiter.usage("k", base + 75) == [(6.0, 10)]  # 8 * (1 - 0.25)
    assert limiter.usage("k", base + 105) == [(2.0, 10)]  # 8 * (1 - 0.75)
    assert limiter.usage("k", base + 120) == [(0.0, 10)]
    assert limiter.try_acquire("k", base + 75, 4) == (True, 0.0)  # 6 + 4 <= 10
    assert limiter.usage("k", base + 75) == [(10.0, 10)]
    assert limiter.usage("k", base + 90) == [(8.0, 10)]  # 8 * 0.5 + 4
    assert limiter.usage("unknown", base) == [(0.0, 10)]
    assert "unknown" not in limiter


def test_calendar_boundary_honours_utc_offset(mod):
    # Midnight Pacific (UTC-8) is 08:00 UTC.
    before = datetime(2024, 3, 1, 7, 59, 59, tzinfo=timezone.utc).timestamp()
    boundary = datetime(2024, 3, 1, 8, 0, 0, tzinfo=timezone.utc).timestamp()
    limiter = mod.RateWindows([mod.Window(2, DAY, calendar=True, utc_offset=-8 * HOUR)], 10)
    assert limiter.try_acquire("k", before - 3600, 2) == (True, 0.0)
    allowed, retry = limiter.try_acquire("k", before)
    assert not allowed
    assert before + retry == boundary and retry == pytest.approx(1.0)
    assert limiter.usage("k", before) == [(2.0, 2)]
    assert limiter.usage("k", boundary) == [(0.0, 2)]
    assert limiter.try_acquire("k", boundary, 2) == (True, 0.0)
    # Without the offset the same instants fall in one UTC day: no reset at 08:00.
    utc = mod.RateWindows([mod.Window(2, DAY, calendar=True)], 10)
    assert utc.try_acquire("k", before, 2)[0]
    assert not utc.try_acquire("k", boundary)[0]


def test_all_or_nothing(mod):
    limiter = mod.RateWindows([mod.Window(10, 60.0), mod.Window(3, DAY, calendar=True)], 10)
    assert limiter.try_acquire("k", START, 3)[0]
    before = limiter.usage("k", START)
    allowed, retry = limiter.try_acquire("k", START, 1)  # the minute window has room, the day not
    assert not allowed and retry > 0
    assert limiter.usage("k", START) == before == [(3.0, 10), (3.0, 3)]


def test_per_window_costs(mod):
    limiter = mod.RateWindows(gemini_windows(mod), 10)
    assert limiter.try_acquire("k", START, (1, 1, 600_000)) == (True, 0.0)
    allowed, retry = limiter.try_acquire("k", START + 1, [1, 1, 600_000])
    assert not allowed and retry > 0
    assert limiter.try_acquire("k", START + 1, (1, 1, 400_000)) == (True, 0.0)
    assert [used for used, _limit in limiter.usage("k", START + 1)] == [2.0, 2.0, 1_000_000.0]
    limiter.refund("k", START + 1, (0, 0, 400_000))
    assert [used for used, _limit in limiter.usage("k", START + 1)] == [2.0, 2.0, 600_000.0]
    with pytest.raises(ValueError):
        limiter.try_acquire("k", START, (1, 1))  # one per window
    with pytest.raises(ValueError):
        limiter.try_acquire("k", START, (16, 1, 1))  # above 15/min: can never succeed
    with pytest.raises(TypeError):
        limiter.try_acquire("k", START, (1, 1.0, 1))


def test_cost_zero_probes_without_recording(mod):
    limiter = mod.RateWindows([mod.Window(2, 60.0)], 10)
    assert limiter.try_acquire("k", START, 0) == (True, 0.0)
    assert "k" in limiter and limiter.usage("k", START) == [(0.0, 2)]
    limiter.try_acquire("k", START, 2)
    assert limiter.try_acquire("k", START, 0) == (True, 0.0)  # 2 + 0 <= 2


def test_refund(mod):
    limiter = mod.RateWindows([mod.Window(10, 60.0), mod.Window(10, DAY, calendar=True)], 10)
    limiter.try_acquire("k", START, 5)
    limiter.refund("k", START, 3)
    assert limiter.usage("k", START) == [(2.0, 10), (2.0, 10)]
    limiter.refund("k", START, 10)  # never below zero
    assert limiter.usage("k", START) == [(0.0, 10), (0.0, 10)]
    limiter.refund("k", START, 10**6)  # above the limit is fine for a refund
    limiter.refund("nobody", START, 1)
    assert "nobody" not in limiter and len(limiter) == 1
    with pytest.raises(ValueError):
        limiter.refund("nobody", START, -1)
    with pytest.raises(ValueError):
        limiter.refund("nobody", math.nan)


def test_refund_reaches_only_the_current_bucket(mod):
    limiter = mod.RateWindows([mod.Window(10, 60.0)], 10)
    base = 60.0 * 28_333_334
    limiter.try_acquire("k", base, 8)
    limiter.try_acquire("k", base + 60, 2)
    limiter.refund("k", base + 60, 5)  # current bucket holds 2: floored at 0
    assert limiter.usage("k", base + 90) == [(4.0, 10)]  # 8 * 0.5 + 0


def test_lru_eviction(mod):
    limiter = mod.RateWindows([mod.Window(5, 60.0)], 2)
    limiter.try_acquire("a", START)
    limiter.try_acquire("b", START)
    limiter.try_acquire("a", START)  # a is now the most recently used
    limiter.try_acquire("c", START)  # evicts b
    assert "a" in limiter and "c" in limiter and "b" not in limiter
    assert limiter.stats() == {"keys": 2, "max_keys": 2, "evictions": 1, "allowed": 4, "denied": 0}
    assert limiter.usage("b", START) == [(0.0, 5)]
    limiter.try_acquire("d", START)  # evicts a
    assert sorted(k for k in "abcd" if k in limiter) == ["c", "d"]


def test_denied_request_refreshes_recency(mod):
    limiter = mod.RateWindows([mod.Window(1, 60.0)], 2)
    limiter.try_acquire("a", START)
    limiter.try_acquire("b", START)
    assert not limiter.try_acquire("a", START)[0]  # denied, but a is in use
    limiter.try_acquire("c", START)
    assert "a" in limiter and "b" not in limiter


def test_forget_clear_len_contains(mod):
    limiter = mod.RateWindows([mod.Window(5, 60.0)], 3)
    for key in "abc":
        limiter.try_acquire(key, START)
    assert len(limiter) == 3 and "b" in limiter and 5 not in limiter and None not in limiter
    assert limiter.forget("b") is True and limiter.forget("b") is False
    assert len(limiter) == 2 and "b" not in limiter
    limiter.try_acquire("d", START)  # reuses the freed slot without evicting
    assert limiter.stats()["evictions"] == 0 and len(limiter) == 3
    limiter.clear()
    assert len(limiter) == 0 and "a" not in limiter
    assert limiter.stats()["allowed"] == 4  # counters keep counting
    limiter.try_acquire("a", START)
    assert len(limiter) == 1


def test_str_subclass_keys_are_plain_strings(mod):
    class Name(str):
        def __hash__(self):
            return 0

    limiter = mod.RateWindows([mod.Window(5, 60.0)], 3)
    limiter.try_acquire(Name("alice"), START)
    assert "alice" in limiter and Name("alice") in limiter
    assert limiter.usage("alice", START) == [(1.0, 5)]


def test_time_going_backwards_is_conservative(mod):
    limiter = mod.RateWindows([mod.Window(10, 60.0), mod.Window(10, DAY, calendar=True)], 10)
    base = 60.0 * 28_333_334
    limiter.try_acquire("k", base - 30, 6)
    limiter.try_acquire("k", base + 30, 2)
    # Earlier than the stored bucket: read as its start (previous at full weight).
    assert limiter.usage("k", base - 1000)[0] == (8.0, 10)
    assert limiter.try_acquire("k", base - 1000, 2) == (True, 0.0)
    assert limiter.usage("k", base + 30)[0] == (7.0, 10)  # 6 * 0.5 + 4


# -- exact retry_after ------------------------------------------------------------

WINDOW_SPECS = st.tuples(
    st.integers(1, 8),
    st.sampled_from([0.5, 1.0, 2.5, 60.0, DAY]),
    st.booleans(),
    st.sampled_from([0.0, -8 * HOUR, 1.25]),
)
STEPS = st.lists(
    st.tuples(
        st.sampled_from("abc"),
        st.one_of(st.sampled_from([0.0, 0.5, 1.0, 60.0]), st.floats(0.0, 3.0, allow_nan=False)),
        st.integers(0, 8),
    ),
    min_size=1,
    max_size=25,
)


def make_windows(mod, specs):
    return [mod.Window(limit, period, calendar=calendar, utc_offset=offset) for limit, period, calendar, offset in specs]


# impl_kind is a plain string: nothing to reset between examples.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(WINDOW_SPECS, min_size=1, max_size=3), steps=STEPS)
def test_retry_after_is_exact(impl_kind, specs, steps):
    mod = load_impl("ratewin", impl_kind)
    windows = make_windows(mod, specs)
    min_limit = min(w.limit for w in windows)
    limiter = mod.RateWindows(windows, 4)
    now = START
    for key, step, cost in steps:
        now += step
        cost = min(cost, min_limit)
        allowed, retry = limiter.try_acquire(key, now, cost)
        if allowed:
            assert retry == 0.0
            continue
        assert retry > 0.0 and math.isfinite(retry)
        assert clone(mod, limiter).try_acquire(key, now + retry, cost)[0]
        later = now + retry
        for earlier in (math.nextafter(later, -math.inf), later - 1e-6):
            assert not clone(mod, limiter).try_acquire(key, earlier, cost)[0]


def test_retry_after_needing_the_next_bucket(mod):
    limiter = mod.RateWindows([mod.Window(10, 60.0)], 4)
    base = 60.0 * 28_333_334
    limiter.try_acquire("k", base + 30, 9)
    # 9 + 3 > 10 within this bucket whatever happens; in the next one
    # 9 * (1 - f) + 3 <= 10 needs f >= 2/9.
    allowed, retry = limiter.try_acquire("k", base + 30, 3)
    assert not allowed
    assert retry == pytest.approx(30 + 60 * 2 / 9, abs=1e-6)


# -- snapshots --------------------------------------------------------------------


def busy_limiter(mod, max_keys=10):
    limiter = mod.RateWindows(gemini_windows(mod), max_keys)
    for i, key in enumerate(["alice", "bob", "carol", "dave", "\u00e9mile", "\ud800lone", ""]):
        limiter.try_acquire(key, START + i * 7.5, (1, 1, 1000 * (i + 1)))
    limiter.try_acquire("alice", START + 90.0, (2, 2, 5))
    return limiter


def test_snapshot_round_trip(mod):
    limiter = busy_limiter(mod)
    data = limiter.snapshot()
    assert data[:4] == b"RWIN" and data[4] == 1
    copy = mod.RateWindows(gemini_windows(mod), 10)
    copy.restore(data)
    assert copy.snapshot() == data
    assert len(copy) == len(limiter) and "\ud800lone" in copy and "" in copy
    for key in ("alice", "bob", "\ud800lone", "zed"):
        assert copy.usage(key, START + 100) == limiter.usage(key, START + 100)
    restored = pickle.loads(pickle.dumps(limiter))
    assert type(restored) is type(limiter) and restored.snapshot() == data


def test_snapshot_is_compact(mod):
    limiter = mod.RateWindows(gemini_windows(mod), 10)
    limiter.try_acquire("abc", START)
    # header 5 + windows 1 + 3 * 25 + count 1 + key 1 + 3 + state 72 + crc 4
    assert len(limiter.snapshot()) == 5 + 76 + 1 + 4 + 72 + 4


def test_snapshot_keeps_lru_order(mod):
    limiter = mod.RateWindows([mod.Window(5, 60.0)], 3)
    for key in "abc":
        limiter.try_acquire(key, START)
    limiter.try_acquire("a", START)  # order now b, c, a
    copy = mod.RateWindows([mod.Window(5, 60.0)], 3)
    copy.restore(limiter.snapshot())
    copy.try_acquire("d", START)  # evicts the oldest: b
    assert "b" not in copy and all(k in copy for k in "acd")


def test_restore_keeps_the_newest_keys_beyond_max_keys(mod):
    big = mod.RateWindows([mod.Window(5, 60.0)], 10)
    for key in "abcdef":
        big.try_acquire(key, START)
    small = mod.RateWindows([mod.Window(5, 60.0)], 3)
    small.restore(big.snapshot())
    assert [k for k in "abcdef" if k in small] == ["d", "e", "f"]
    small.try_acquire("g", START)
    assert "d" not in small and small.stats()["evictions"] == 1


def test_snapshot_crosses_implementations():
    pure = load_impl("ratewin", "pure")
    compiled = load_impl("ratewin", "compiled")
    source = busy_limiter(compiled)
    data = source.snapshot()
    twin = pure.RateWindows(gemini_windows(pure), 10)
    twin.restore(data)
    assert twin.snapshot() == data
    back = compiled.RateWindows(gemini_windows(compiled), 10)
    back.restore(twin.snapshot())
    assert back.snapshot() == data
    now = START + 95.0
    for step, key in enumerate(["alice", "bob", "alice", "new", "alice", "carol", "alice"] * 3):
        now += step * 0.7
        cost = (1, 1, 300 * step)
        assert twin.try_acquire(key, now, cost) == back.try_acquire(key, now, cost) == source.try_acquire(key, now, cost)
        assert twin.usage(key, now) == back.usage(key, now)
    assert twin.snapshot() == back.snapshot() == source.snapshot()


def assert_restore_rejected(limiter, data):
    before, stats = limiter.snapshot(), limiter.stats()
    with pytest.raises(limiter_error(limiter)):
        limiter.restore(data)
    assert limiter.snapshot() == before and limiter.stats() == stats


def limiter_error(limiter):
    return load_impl("ratewin", "pure").SnapshotError


def test_every_truncation_is_rejected(mod):
    limiter = busy_limiter(mod)
    data = limiter.snapshot()
    for size in range(len(data)):
        assert_restore_rejected(limiter, data[:size])


def test_every_bit_flip_is_rejected(mod):
    source = mod.RateWindows(gemini_windows(mod), 10)
    source.try_acquire("ab", START, (1, 1, 77))
    data = source.snapshot()
    target = busy_limiter(mod)
    for bit in range(len(data) * 8):
        corrupt = bytearray(data)
        corrupt[bit // 8] ^= 1 << (bit % 8)
        assert_restore_rejected(target, bytes(corrupt))


def test_wrong_magic_version_and_windows(mod):
    limiter = busy_limiter(mod)
    data = limiter.snapshot()
    assert_restore_rejected(limiter, with_crc(b"XWIN" + data[4:-4]))
    assert_restore_rejected(limiter, with_crc(data[:4] + b"\x02" + data[5:-4]))
    other = mod.RateWindows([mod.Window(15, 60.0)], 10)
    other.try_acquire("alice", START)
    assert_restore_rejected(limiter, other.snapshot())
    shifted = mod.RateWindows(
        [mod.Window(15, 60.0), mod.Window(1500, DAY, calendar=True, utc_offset=-7 * HOUR), mod.Window(1_000_000, 60.0)],
        10,
    )
    assert_restore_rejected(limiter, shifted.snapshot())
    assert_restore_rejected(limiter, b"")
    with pytest.raises(TypeError):
        limiter.restore("RWIN")


def hostile_body(mod, windows, count_bytes, rest=b""):
    return with_crc(b"RWIN\x01" + window_specs_bytes(tuple(windows)) + count_bytes + rest)


def state_bytes(*values):
    return struct.pack(f"<{len(values)}q", *values)


def test_hostile_snapshots_are_rejected_without_allocating(mod):
    windows = [mod.Window(5, 60.0), mod.Window(5, DAY, calendar=True)]
    limiter = mod.RateWindows(windows, 10)
    limiter.try_acquire("keep", START)
    bucket = int(START // 60)
    good_state = state_bytes(bucket, 1, 0, int(START // DAY), 1, 0)
    cases = [
        varint(2**60),  # huge key count
        varint(2**64 - 1),
        b"\x80" * 10 + b"\x01",  # varint too long
        b"\xff" * 9 + b"\x7f",  # varint >= 2**64
        varint(1) + varint(2**40) + b"k",  # huge key length
        varint(1) + varint(1) + b"\xff" + good_state,  # invalid UTF-8
        varint(2) + (varint(1) + b"k" + good_state) * 2,  # duplicate key
        varint(1) + varint(1) + b"k" + state_bytes(bucket, 6, 0, 0, 0, 0),  # count above limit
        varint(1) + varint(1) + b"k" + state_bytes(bucket, -1, 0, 0, 0, 0),  # negative count
        varint(1) + varint(1) + b"k" + state_bytes(bucket, 0, 9, 0, 0, 0),  # previous above limit
        varint(1) + varint(1) + b"k" + state_bytes(2**62, 0, 0, 0, 0, 0),  # bucket out of range
        varint(1) + varint(1) + b"k" + state_bytes(-(2**63), 0, 0, 0, 0, 0),
        varint(1) + varint(1) + b"k" + state_bytes(bucket, 0, 0, 0, 1, 1),  # calendar with a previous count
        varint(1) + varint(1) + b"k" + good_state + b"\x00",  # trailing bytes
        varint(1) + varint(1) + b"k" + good_state[:-1],  # state cut short
        varint(2) + varint(1) + b"k" + good_state,  # fewer keys than declared
    ]
    for rest in cases:
        data = hostile_body(mod, windows, rest)
        tracemalloc.start()
        try:
            assert_restore_rejected(limiter, data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 64 * 1024, rest[:16]
    # The same framing with sane content is accepted.
    limiter.restore(hostile_body(mod, windows, varint(1) + varint(1) + b"k" + good_state))
    assert list(limiter.usage("k", START)) == [(1.0, 5), (1.0, 5)] and "keep" not in limiter
    limiter.restore(hostile_body(mod, windows, varint(0)))
    assert len(limiter) == 0


# -- argument checking ------------------------------------------------------------


@pytest.mark.parametrize("method", ["try_acquire", "refund", "usage"])
def test_bad_keys_and_times(mod, method):
    limiter = mod.RateWindows(gemini_windows(mod), 10)
    call = getattr(limiter, method)
    for bad_key in (None, 1, b"bytes", ("a",)):
        with pytest.raises(TypeError):
            call(bad_key, START)
    for bad_now, error in (("1", TypeError), (None, TypeError), (True, TypeError), (math.nan, ValueError),
                           (math.inf, ValueError), (-math.inf, ValueError), (10**400, ValueError),
                           (1e300, ValueError)):
        with pytest.raises(error):
            call("k", bad_now)
    call("k", 1_700_000_000)  # ints are fine
    with pytest.raises(TypeError):
        limiter.forget(3)
    assert len(limiter) == (1 if method == "try_acquire" else 0)


@pytest.mark.parametrize("method", ["try_acquire", "refund"])
def test_bad_costs(mod, method):
    limiter = mod.RateWindows(gemini_windows(mod), 10)
    call = getattr(limiter, method)
    for bad_cost, error in ((1.0, TypeError), ("1", TypeError), (None, TypeError), (True, TypeError),
                            (-1, ValueError), (2**63, ValueError), (2**80, ValueError), ((1, 1, -1), ValueError),
                            ((1, 1, 2**64), ValueError), ((1, 1, 1, 1), ValueError), ({1, 2, 3}, TypeError)):
        with pytest.raises(error):
            call("k", START, bad_cost)
    assert len(limiter) == 0 and limiter.stats()["allowed"] == 0
    if method == "try_acquire":
        with pytest.raises(ValueError):
            call("k", START, 16)  # above the 15/min window: can never succeed
    call("k", START, 2**63 - 1 if method == "refund" else 15)


def test_index_types_are_accepted_as_costs(mod):
    numpy = pytest.importorskip("numpy")
    limiter = mod.RateWindows([mod.Window(5, 60.0)], 10)
    assert limiter.try_acquire("k", START, numpy.int64(3)) == (True, 0.0)
    assert limiter.try_acquire("k", numpy.float64(START), 2) == (True, 0.0)
    assert limiter.usage("k", START) == [(5.0, 5)]


def test_memory_per_key_of_the_compiled_version():
    compiled = load_impl("ratewin", "compiled")
    keys = [f"user:{i:06d}" for i in range(20_000)]
    limiter = compiled.RateWindows(gemini_windows(compiled), len(keys))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for key in keys:
            limiter.try_acquire(key, START, (1, 1, 100))
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert used / len(keys) <= 200


# -- the compiled module, the twin and a model, operation by operation -------------


class Model:
    """Per key and window, a dict of bucket index -> units recorded there."""

    def __init__(self, windows, max_keys):
        self.windows = windows
        self.max_keys = max_keys
        self.keys: OrderedDict[str, list[dict[int, int]]] = OrderedDict()

    @staticmethod
    def where(window, now):
        q = (now + window.utc_offset) / window.period
        index = math.floor(q)
        return index, q - index

    def estimates(self, key, now):
        buckets = self.keys.get(key)
        result = []
        for j, window in enumerate(self.windows):
            index, frac = self.where(window, now)
            counts = buckets[j] if buckets else {}
            if window.calendar:
                result.append(float(counts.get(index, 0)))
            else:
                result.append(counts.get(index - 1, 0) * (1.0 - frac) + counts.get(index, 0))
        return result

    def fits(self, key, now, costs):
        return all(
            used <= float(window.limit - cost) for used, window, cost in zip(self.estimates(key, now), self.windows, costs)
        )

    def acquire(self, key, now, costs):
        if key in self.keys:
            self.keys.move_to_end(key)
        if not self.fits(key, now, costs):
            return False
        if key not in self.keys:
            if len(self.keys) >= self.max_keys:
                self.keys.popitem(last=False)
            self.keys[key] = [{} for _ in self.windows]
        for j, window in enumerate(self.windows):
            index, _frac = self.where(window, now)
            self.keys[key][j][index] = self.keys[key][j].get(index, 0) + costs[j]
        return True

    def refund(self, key, now, costs):
        if key not in self.keys:
            return
        for j, window in enumerate(self.windows):
            index, _frac = self.where(window, now)
            self.keys[key][j][index] = max(0, self.keys[key][j].get(index, 0) - costs[j])


KEYS = st.sampled_from(["a", "b", "c", "d", "\u00e9"])
DELAYS = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.5, 60.0, DAY]), st.floats(0.0, 5.0, allow_nan=False))


class RateWindowsMachine(RuleBasedStateMachine):
    """Drives the model and every implementation under test with the same operations."""

    implementations: tuple = ()

    @initialize(specs=st.lists(WINDOW_SPECS, min_size=1, max_size=3), max_keys=st.integers(1, 4))
    def setup(self, specs, max_keys):
        first = self.implementations[0]
        self.windows = make_windows(first, specs)
        self.min_limit = min(w.limit for w in self.windows)
        self.model = Model(self.windows, max_keys)
        self.limiters = [mod.RateWindows(self.windows, max_keys) for mod in self.implementations]
        self.now = START

    def costs(self, cost, per_window):
        if per_window:
            return tuple(min(cost + j, w.limit) for j, w in enumerate(self.windows))
        return min(cost, self.min_limit)

    @rule(key=KEYS, delay=DELAYS, cost=st.integers(0, 8), per_window=st.booleans())
    def acquire(self, key, delay, cost, per_window):
        self.now += delay
        cost = self.costs(cost, per_window)
        costs = cost if isinstance(cost, tuple) else (cost,) * len(self.windows)
        results = [limiter.try_acquire(key, self.now, cost) for limiter in self.limiters]
        assert all(result == results[0] for result in results), results
        allowed, retry = results[0]
        assert allowed == self.model.acquire(key, self.now, costs)
        if not allowed:
            assert self.model.fits(key, self.now + retry, costs)
            assert not self.model.fits(key, math.nextafter(self.now + retry, -math.inf), costs)

    @rule(key=KEYS, delay=DELAYS, cost=st.integers(0, 10), per_window=st.booleans())
    def refund(self, key, delay, cost, per_window):
        self.now += delay
        cost = tuple(cost + j for j in range(len(self.windows))) if per_window else cost
        costs = cost if isinstance(cost, tuple) else (cost,) * len(self.windows)
        for limiter in self.limiters:
            limiter.refund(key, self.now, cost)
        self.model.refund(key, self.now, costs)

    @rule(key=KEYS)
    def usage(self, key):
        expected = [(used, w.limit) for used, w in zip(self.model.estimates(key, self.now), self.windows)]
        for limiter in self.limiters:
            assert limiter.usage(key, self.now) == expected

    @rule(key=KEYS)
    def forget(self, key):
        expected = self.model.keys.pop(key, None) is not None
        for limiter in self.limiters:
            assert limiter.forget(key) is expected

    @precondition(lambda self: len(self.limiters) > 1)
    @rule()
    def swap_snapshots(self):
        snapshots = [limiter.snapshot() for limiter in self.limiters]
        for limiter, data in zip(self.limiters, reversed(snapshots)):
            limiter.restore(data)

    @rule()
    def clear(self):
        self.model.keys.clear()
        for limiter in self.limiters:
            limiter.clear()

    @invariant()
    def same_keys_and_state(self):
        if not hasattr(self, "model"):
            return
        snapshots = {limiter.snapshot() for limiter in self.limiters}
        assert len(snapshots) == 1
        for limiter in self.limiters:
            assert len(limiter) == len(self.model.keys)
            assert all(key in limiter for key in self.model.keys)
        stats = [limiter.stats() for limiter in self.limiters]
        assert all(s == stats[0] for s in stats)


def test_stateful_against_model_and_twin(impl_kind):
    pure = load_impl("ratewin", "pure")
    implementations = (pure,) if impl_kind == "pure" else (load_impl("ratewin", "compiled"), pure)
    machine = type("Machine", (RateWindowsMachine,), {"implementations": implementations})
    run_state_machine_as_test(machine, settings=settings(max_examples=120, stateful_step_count=40, deadline=None))


@settings(max_examples=120, deadline=None)
@given(
    specs=st.lists(WINDOW_SPECS, min_size=1, max_size=3),
    operations=st.lists(
        st.tuples(st.sampled_from(["acquire", "refund", "usage"]), KEYS,
                  st.floats(-200.0, 200.0, allow_nan=False), st.integers(0, 8)),
        max_size=40,
    ),
)
def test_compiled_matches_twin_with_a_wandering_clock(specs, operations):
    pure = load_impl("ratewin", "pure")
    compiled = load_impl("ratewin", "compiled")
    limiters = [mod.RateWindows(make_windows(mod, specs), 3) for mod in (compiled, pure)]
    min_limit = min(limit for limit, _p, _c, _o in specs)
    for operation, key, offset, cost in operations:
        now = START + offset  # time may go backwards
        cost = min(cost, min_limit)
        if operation == "acquire":
            results = [limiter.try_acquire(key, now, cost) for limiter in limiters]
        elif operation == "refund":
            results = [limiter.refund(key, now, cost) for limiter in limiters]
        else:
            results = [limiter.usage(key, now) for limiter in limiters]
        assert results[0] == results[1]
        assert limiters[0].snapshot() == limiters[1].snapshot()


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 40),
)
def test_both_implementations_judge_resealed_corruptions_alike(edits, cut):
    """Corrupt a snapshot's body, then fix its CRC so the parsers see the damage."""
    pure = load_impl("ratewin", "pure")
    compiled = load_impl("ratewin", "compiled")
    windows = [pure.Window(5, 60.0), pure.Window(9, DAY, calendar=True)]
    source = pure.RateWindows(windows, 10)
    for i, key in enumerate(["a", "bb", "\u00e9\u00e9"]):
        source.try_acquire(key, START + i, 1 + i)
    body = bytearray(source.snapshot()[:-4])
    for position, value in edits:
        body[position % len(body)] = value
    data = with_crc(bytes(body[: len(body) - cut % len(body)]))
    outcomes = []
    for mod in (compiled, pure):
        limiter = mod.RateWindows(windows, 2)
        try:
            limiter.restore(data)
        except pure.SnapshotError:
            outcomes.append("rejected")
        else:
            outcomes.append(limiter.snapshot())
    assert outcomes[0] == outcomes[1]
