"""Coalescer, TaskPool, Background and run_parallel, on trio's mock clock."""

from __future__ import annotations

import functools
import logging
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from shell.concurrency import (
    Background,
    BackgroundStatistics,
    Coalescer,
    CoalescerStatistics,
    Overloaded,
    TaskPool,
    run_parallel,
)


@asynccontextmanager
async def guarded_nursery(seconds: float = 1000):
    """A nursery that fails (TooSlowError) instead of hanging if its tasks deadlock.

    On the autojump clock a deadlock jumps straight to this deadline.
    """
    with trio.fail_after(seconds):
        async with trio.open_nursery() as nursery:
            yield nursery


class Upstream:
    """A fake upstream call that records how each execution ended."""

    def __init__(self, delay: float = 1, error: Exception | None = None):
        self.delay = delay
        self.error = error
        self.calls = 0
        self.completed = 0
        self.cancelled = 0

    async def __call__(self, value="answer"):
        self.calls += 1
        started = trio.current_time()
        try:
            await trio.sleep(self.delay)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        self.completed += 1
        if self.error is not None:
            raise self.error
        return (value, started)


def traceback_length(exc: BaseException) -> int:
    length, tb = 0, exc.__traceback__
    while tb is not None:
        length, tb = length + 1, tb.tb_next
    return length


# --------------------------------------------------------------------------- Coalescer


async def test_thousand_callers_share_one_call(autojump_clock):
    upstream = Upstream()
    results = []

    async def caller(coalescer):
        results.append(await coalescer.run("key", upstream))

    async with Coalescer() as coalescer:
        async with guarded_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(caller, coalescer)
            await trio.testing.wait_all_tasks_blocked()
            assert coalescer.statistics() == CoalescerStatistics(calls=1, shared_waits=999, in_flight=1)
        assert coalescer.statistics() == CoalescerStatistics(calls=1, shared_waits=999, in_flight=0)
    assert upstream.calls == 1
    assert results == [("answer", 0)] * 1000
    assert trio.current_time() == 1


async def test_different_keys_do_not_share(autojump_clock):
    upstream = Upstream()
    results = {}

    async def caller(coalescer, key):
        results[key] = await coalescer.run(key, upstream, key)

    async with Coalescer() as coalescer:
        async with guarded_nursery() as nursery:
            for key in ("a", "b", "c"):
                nursery.start_soon(caller, coalescer, key)
    assert upstream.calls == 3
    assert results == {"a": ("a", 0), "b": ("b", 0), "c": ("c", 0)}


async def test_cancelling_the_first_caller_does_not_cancel_the_call(autojump_clock):
    upstream = Upstream()
    results = []
    first = trio.CancelScope()

    async def first_caller(coalescer):
        with first:
            await coalescer.run("key", upstream)
            pytest.fail("the first caller was cancelled")

    async def caller(coalescer):
        results.append(await coalescer.run("key", upstream))

    async with Coalescer() as coalescer:
        async with guarded_nursery() as nursery:
            nursery.start_soon(first_caller, coalescer)
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                nursery.start_soon(caller, coalescer)
            await trio.testing.wait_all_tasks_blocked()
            first.cancel()
    assert first.cancelled_caught
    assert upstream.calls == 1
    assert upstream.cancelled == 0
    assert results == [("answer", 0)] * 3
    assert trio.current_time() == 1


async def test_cancelling_every_caller_cancels_the_call(autojump_clock):
    upstream = Upstream(delay=10)
    scopes = []

    async def impatient_caller(coalescer, patience):
        with trio.move_on_after(patience) as scope:
            await coalescer.run("key", upstream)
        scopes.append(scope)

    async with Coalescer() as coalescer:
        async with guarded_nursery() as nursery:
            for patience in (1, 2, 3):
                nursery.start_soon(impatient_caller, coalescer, patience)
            await trio.sleep(2.5)
            assert upstream.cancelled == 0  # one caller is still waiting
            assert coalescer.statistics().in_flight == 1
        assert all(scope.cancelled_caught for scope in scopes)
        assert coalescer.statistics().in_flight == 0
        await trio.testing.wait_all_tasks_blocked()
        assert upstream.cancelled == 1
        assert upstream.completed == 0
        # A later caller starts a fresh call.
        assert await coalescer.run("key", Upstream(delay=1)) == ("answer", 3)
        assert coalescer.statistics().calls == 2
    assert trio.current_time() == 4


async def test_newcomer_never_joins_a_call_being_torn_down(autojump_clock):
    """All callers left; the call is still unwinding when a new caller arrives."""
    slow_cleanup_done = trio.Event()

    async def upstream_with_slow_cleanup():
        try:
            await trio.sleep(10)
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(5)
            slow_cleanup_done.set()
        return "stale"

    async with Coalescer() as coalescer:
        with trio.move_on_after(1):
            await coalescer.run("key", upstream_with_slow_cleanup)
        assert coalescer.statistics().in_flight == 0
        assert await coalescer.run("key", Upstream()) == ("answer", 1)
        assert trio.current_time() == 2
        assert not slow_cleanup_done.is_set()
    assert slow_cleanup_done.is_set()


async def test_an_exception_reaches_every_caller_as_its_own_copy(autojump_clock):
    cause = KeyError("quota")
    error = Overloaded("busy", retry_after=3)
    error.__cause__ = cause
    upstream = Upstream(error=error)
    caught = []

    async def caller(coalescer):
        try:
            await coalescer.run("key", upstream)
        except Overloaded as exc:
            caught.append((exc, traceback_length(exc)))

    async with Coalescer() as coalescer:
        async with guarded_nursery() as nursery:
            for _ in range(100):
                nursery.start_soon(caller, coalescer)
        assert coalescer.statistics().in_flight == 0
    assert upstream.calls == 1
    assert len(caught) == 100
    assert len({id(exc) for exc, _ in caught}) == 100
    assert {length for _, length in caught} == {caught[0][1]}  # no traceback grows
    for exc, _ in caught:
        assert str(exc) == "busy"
        assert exc.retry_after == 3
        assert exc.__cause__ is cause
    assert traceback_length(error) == traceback_length(caught[0][0]) - 2  # + run() + caller()


async def test_an_uncopyable_exception_is_shared_without_growing(autojump_clock):
    class Unusual(Exception):
        def __init__(self, *, code):
            super().__init__(f"code {code}")
            self.code = code

    upstream = Upstream(error=Unusual(code=7))
    caught = []

    async def caller(coalescer):
        try:
            await coalescer.run("key", upstream)
        except Unusual as exc:
            caught.append((exc, traceback_length(exc)))

    async with Coalescer() as coalescer:
        async with guarded_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(caller, coalescer)
    assert len(caught) == 50
    assert all(exc is upstream.error for exc, _ in caught)
    assert {length for _, length in caught} == {caught[0][1]}


async def test_caller_cancelled_while_the_result_is_delivered(autojump_clock):
    """The call cancels a caller and returns in the same step: nobody hangs."""
    scopes = {"a": trio.CancelScope(), "b": trio.CancelScope()}
    results = {}

    async def upstream():
        await trio.sleep(1)
        scopes["b"].cancel()
        return "done"

    async def caller(coalescer, name):
        with scopes[name]:
            results[name] = await coalescer.run("key", upstream)

    async with Coalescer() as coalescer:
        async with guarded_nursery() as nursery:
            nursery.start_soon(caller, coalescer, "a")
            nursery.start_soon(caller, coalescer, "b")
        # b was still waiting when cancelled: it raised Cancelled; a got the result.
        assert results == {"a": "done"}
        assert scopes["b"].cancelled_caught
        # The only waiter is cancelled as the call returns: the call is not torn down.
        lone = trio.CancelScope()
        seen = []

        async def upstream_alone():
            await trio.sleep(1)
            lone.cancel()
            seen.append("returned")
            return "late"

        with lone:
            await coalescer.run("other", upstream_alone)
        assert lone.cancelled_caught
        assert seen == ["returned"]
        assert coalescer.statistics().in_flight == 0


@pytest.mark.parametrize("attempt", range(10))
async def test_caller_deadline_at_the_completion_instant(autojump_clock, attempt):
    """Deadline and completion fall in the same scheduling batch, in either order."""
    upstream = Upstream()
    outcomes = []

    async def caller(coalescer, patience):
        with trio.move_on_after(patience) as scope:
            outcomes.append(await coalescer.run("key", upstream))
        if scope.cancelled_caught:
            outcomes.append("cancelled")

    async with Coalescer() as coalescer:
        async with guarded_nursery() as nursery:
            nursery.start_soon(caller, coalescer, 1)
            nursery.start_soon(caller, coalescer, 5)
    assert len(outcomes) == 2
    assert ("answer", 0) in outcomes
    assert set(outcomes) <= {("answer", 0), "cancelled"}
    assert upstream.calls == 1


async def test_a_caller_arriving_just_after_completion_starts_a_new_call(autojump_clock):
    upstream = Upstream()
    async with Coalescer() as coalescer:
        first = await coalescer.run("key", upstream, "one")
        # No checkpoint in between: the finished call must already be forgotten.
        assert coalescer.statistics().in_flight == 0
        second = await coalescer.run("key", upstream, "two")
    assert (first, second) == (("one", 0), ("two", 1))
    assert upstream.calls == 2


async def test_waiters_woken_together_then_calling_again_start_one_new_call(autojump_clock):
    upstream = Upstream()
    results = []

    async def caller(coalescer):
        results.append(await coalescer.run("key", upstream, "first"))
        results.append(await coalescer.run("key", upstream, "second"))

    async with Coalescer() as coalescer:
        async with guarded_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(caller, coalescer)
    assert upstream.calls == 2
    assert sorted(results) == [("first", 0)] * 10 + [("second", 1)] * 10


async def test_closing_cancels_calls_and_releases_outside_callers(autojump_clock):
    upstream = Upstream(delay=10)
    outcome = []

    async def outside_caller(coalescer):
        with pytest.raises(trio.ClosedResourceError):
            await coalescer.run("key", upstream)
        outcome.append("closed")

    async with guarded_nursery() as nursery:
        async with Coalescer() as coalescer:
            nursery.start_soon(outside_caller, coalescer)
            await trio.sleep(1)
        assert trio.current_time() == 1
    assert outcome == ["closed"]
    assert upstream.cancelled == 1
    with pytest.raises(RuntimeError):
        await coalescer.run("key", upstream)


async def test_coalescer_must_be_open_and_passes_body_errors_through():
    coalescer = Coalescer()
    with pytest.raises(RuntimeError):
        await coalescer.run("key", Upstream())
    with pytest.raises(KeyError):
        async with coalescer:
            raise KeyError("from the body")
    with pytest.raises(RuntimeError):
        async with coalescer:
            pass


@settings(max_examples=150, deadline=None)
@given(
    delay=st.integers(1, 3),
    fails=st.booleans(),
    callers=st.lists(
        st.tuples(st.integers(0, 6), st.one_of(st.none(), st.integers(0, 4))),  # arrival, patience
        min_size=1,
        max_size=12,
    ),
)
def test_coalescer_random_schedules(delay, fails, callers):
    """Patient callers always get the answer of a call in flight when they came."""

    async def main():
        upstream = Upstream(delay=delay, error=ValueError("boom") if fails else None)
        outcomes = [None] * len(callers)

        async def caller(coalescer, index, arrival, patience):
            await trio.sleep(arrival)
            with trio.move_on_after(patience if patience is not None else float("inf")):
                try:
                    outcomes[index] = await coalescer.run("key", upstream, index)
                except ValueError as exc:
                    assert str(exc) == "boom"
                    outcomes[index] = "boom"
                return
            outcomes[index] = "cancelled"

        async with Coalescer() as coalescer:
            async with guarded_nursery() as nursery:
                for index, (arrival, patience) in enumerate(callers):
                    nursery.start_soon(caller, coalescer, index, arrival, patience)
            stats = coalescer.statistics()
        assert stats.in_flight == 0
        assert stats.calls + stats.shared_waits == len(callers)
        assert stats.calls == upstream.calls
        assert upstream.completed + upstream.cancelled == upstream.calls
        for index, (arrival, patience) in enumerate(callers):
            got = outcomes[index]
            assert got is not None  # nobody is left without an outcome
            if patience is None:
                assert got != "cancelled"
            if fails:
                assert got in ("boom", "cancelled")
            elif got != "cancelled":
                _, started = got
                assert started <= arrival <= started + delay  # never a finished call's result
        if all(patience is None for _, patience in callers):
            assert upstream.cancelled == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --------------------------------------------------------------------------- TaskPool


async def test_pool_bounds_concurrency_and_measures_waits(autojump_clock):
    pool = TaskPool("llm", 3)
    active = most = 0

    async def job():
        nonlocal active, most
        active += 1
        most = max(most, active)
        await trio.sleep(1)
        active -= 1

    async with guarded_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(pool.run, job)
        await trio.sleep(0.5)
        stats = pool.statistics()
        assert (stats.active, stats.queued) == (3, 17)
    stats = pool.statistics()
    assert most == 3
    assert trio.current_time() == 7  # ceil(20 / 3) rounds of 1 s
    assert (stats.runs, stats.failures, stats.active, stats.queued) == (20, 0, 0, 0)
    # Waits are 0,0,0,1,1,1,...,6,6 seconds.
    assert stats.wait_count == 20
    assert stats.wait_sum == sum(i // 3 for i in range(20))
    assert stats.wait_max == 6
    assert stats.wait_p50 == 3
    assert stats.wait_p99 == 6


async def test_pool_returns_results_and_raises_errors():
    pool = TaskPool("llm", 2)

    async def double(x):
        return 2 * x

    async def broken():
        raise ValueError("nope")

    assert await pool.run(double, 21) == 42
    with pytest.raises(ValueError):
        await pool.run(broken)
    stats = pool.statistics()
    assert (stats.runs, stats.failures, stats.overloads, stats.limit) == (2, 1, 0, 2)


async def _overloaded():
    raise Overloaded("429", retry_after=1)


async def _ok():
    await trio.sleep(0)


async def test_aimd_halves_on_overload_and_grows_back(caplog):
    caplog.set_level(logging.INFO, logger="shell.concurrency")
    pool = TaskPool("gemini", 8, adaptive=True, min_limit=1)
    limits = []
    for _ in range(4):
        with pytest.raises(Overloaded):
            await pool.run(_overloaded)
        limits.append(pool.limit)
    assert limits == [4, 2, 1, 1]  # never below min_limit
    assert "limit 8 -> 4" in caplog.text

    growth = []
    for _ in range(1 + 2 + 3 + 4 + 5 + 6 + 7 + 10):
        await pool.run(_ok)
        growth.append(pool.limit)
    # +1 after `limit` successes: 1 -> 2 after 1, -> 3 after 2 more, ...
    assert growth[0] == 2
    assert growth[2] == 3
    assert growth[5] == 4
    assert growth[1 + 2 + 3 + 4 + 5 + 6 + 7 - 1] == 8
    assert growth[-1] == 8  # capped at max_limit (the initial limit)
    stats = pool.statistics()
    assert (stats.overloads, stats.failures, stats.limit) == (4, 4, 8)


async def test_aimd_respects_min_and_max_limit():
    pool = TaskPool("p", 6, adaptive=True, min_limit=4, max_limit=7)
    with pytest.raises(Overloaded):
        await pool.run(_overloaded)
    assert pool.limit == 4
    for _ in range(4 + 5 + 6 + 7 + 20):
        await pool.run(_ok)
    assert pool.limit == 7


async def test_aimd_counts_a_burst_of_overloads_once(autojump_clock):
    pool = TaskPool("p", 8, adaptive=True)

    async def overloaded_later():
        await trio.sleep(1)
        raise Overloaded("503")

    async def swallow(fn):
        with pytest.raises(Overloaded):
            await pool.run(fn)

    async with guarded_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(swallow, overloaded_later)
    assert pool.limit == 4
    assert pool.statistics().overloads == 8


async def test_shrinking_the_limit_spares_runs_in_flight(autojump_clock):
    pool = TaskPool("p", 8, adaptive=True)
    finished = {}

    async def job(name, seconds):
        await trio.sleep(seconds)
        finished[name] = trio.current_time()

    async def overload_at_1():
        await trio.sleep(1)
        raise Overloaded()

    async def swallow(fn):
        with pytest.raises(Overloaded):
            await pool.run(fn)

    async with guarded_nursery() as nursery:
        nursery.start_soon(swallow, overload_at_1)
        for i in range(7):
            nursery.start_soon(pool.run, job, f"old{i}", 3)
        await trio.sleep(2)
        assert pool.limit == 4
        assert pool.statistics().active == 7  # over the new limit, and nobody evicted
        for i in range(6):
            nursery.start_soon(pool.run, job, f"new{i}", 1)
        await trio.sleep(0.5)
        assert pool.statistics().queued == 6  # 7 active >= 4 slots: all wait
    assert all(finished[f"old{i}"] == 3 for i in range(7))
    assert all(finished[f"new{i}"] > 3 for i in range(6))


async def test_additive_increase_under_load(autojump_clock):
    pool = TaskPool("p", 8, adaptive=True)
    active = 0
    most_per_second: dict[int, int] = {}

    async def job():
        nonlocal active
        active += 1
        second = int(trio.current_time())
        most_per_second[second] = max(most_per_second.get(second, 0), active)
        await trio.sleep(1)
        active -= 1

    with pytest.raises(Overloaded):
        await pool.run(_overloaded)
    assert pool.limit == 4
    async with guarded_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(pool.run, job)
    # 4 run; 4 successes make it 5; 5 more successes make it 6.
    assert most_per_second == {0: 4, 1: 5, 2: 3}
    assert pool.limit == 6
    assert trio.current_time() == 3


async def test_timeouts_are_overloads_and_the_test_can_be_customised():
    async def too_slow():
        raise trio.TooSlowError

    pool = TaskPool("p", 4, adaptive=True)
    with pytest.raises(trio.TooSlowError):
        await pool.run(too_slow)
    assert pool.limit == 2

    def is_overload(exc):
        return isinstance(exc, ValueError)

    custom = TaskPool("q", 4, adaptive=True, is_overload=is_overload)
    with pytest.raises(Overloaded):
        await custom.run(_overloaded)
    assert custom.limit == 4

    async def bad_value():
        raise ValueError

    with pytest.raises(ValueError):
        await custom.run(bad_value)
    assert custom.limit == 2


async def test_fixed_pool_counts_overloads_but_keeps_its_limit():
    pool = TaskPool("p", 4)
    with pytest.raises(Overloaded):
        await pool.run(_overloaded)
    assert pool.limit == 4
    assert pool.statistics().overloads == 1


async def test_cancelled_runs_release_their_slot(autojump_clock):
    pool = TaskPool("p", 1)
    with trio.move_on_after(1):
        await pool.run(trio.sleep_forever)
    with trio.move_on_after(1):
        async with guarded_nursery() as nursery:
            nursery.start_soon(pool.run, trio.sleep_forever)
            await trio.testing.wait_all_tasks_blocked()
            assert pool.statistics().active == 1
            await pool.run(trio.sleep_forever)  # queued, then cancelled while waiting
    stats = pool.statistics()
    assert (stats.active, stats.queued, stats.failures) == (0, 0, 0)
    assert await pool.run(_ok) is None


def test_pool_validates_its_limits():
    for kwargs in ({"limit": 0}, {"limit": 4, "min_limit": 5}, {"limit": 4, "max_limit": 3}):
        with pytest.raises(ValueError):
            TaskPool("p", **kwargs)


# --------------------------------------------------------------------------- Background


async def test_background_logs_and_counts_failures(autojump_clock, caplog):
    async def fails():
        await trio.sleep(1)
        raise RuntimeError("disk full")

    async def works():
        await trio.sleep(1)

    async with Background("after-reply") as bg:
        bg.spawn(works)
        bg.spawn(fails, name="history-append")
        bg.spawn(works)
        await trio.sleep(2)
        assert bg.statistics() == BackgroundStatistics(spawned=3, running=0, succeeded=2, failed=1, cancelled=0)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.name == "shell.concurrency"
    assert "history-append" in record.getMessage()
    assert "after-reply" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert "disk full" in caplog.text


async def test_drain_cancels_stragglers_at_the_deadline(autojump_clock, caplog):
    observed = []

    async def slow(seconds):
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            observed.append(seconds)
            raise

    async with Background("bot") as bg:
        bg.spawn(slow, 1)
        bg.spawn(slow, 100)
        bg.spawn(slow, 200)
        cancelled = await bg.drain(5)
        assert trio.current_time() == 5
        assert cancelled == 2
        assert sorted(observed) == [100, 200]
        assert bg.statistics() == BackgroundStatistics(spawned=3, running=0, succeeded=1, failed=0, cancelled=2)
        with pytest.raises(RuntimeError):
            bg.spawn(slow, 1)
        assert await bg.drain(5) == 0
    assert "cancelling 2 task(s)" in caplog.text


async def test_leaving_the_block_drains_with_the_exit_deadline(autojump_clock):
    finished = []

    async def job(seconds):
        await trio.sleep(seconds)
        finished.append(seconds)

    async with Background("bot", exit_deadline=3) as bg:
        bg.spawn(job, 2)
        bg.spawn(job, 10)
    assert trio.current_time() == 3
    assert finished == [2]
    assert bg.statistics().cancelled == 1


async def test_an_error_in_the_owner_block_cancels_tasks_at_once(autojump_clock):
    async with Background("bot") as bg:
        pass
    with pytest.raises(RuntimeError):
        bg.spawn(trio.sleep, 1)

    other = Background("bot")
    with pytest.raises(RuntimeError):
        other.spawn(trio.sleep, 1)  # not open yet
    with pytest.raises(KeyError):
        async with other:
            other.spawn(trio.sleep_forever)
            await trio.sleep(1)
            raise KeyError("owner failed")
    assert trio.current_time() == 1
    assert other.statistics() == BackgroundStatistics(spawned=1, running=0, succeeded=0, failed=0, cancelled=1)


async def test_spawn_never_raises_for_the_tasks_own_errors(autojump_clock):
    async def instantly_broken():
        raise ZeroDivisionError

    async with Background("bot") as bg:
        for _ in range(10):
            bg.spawn(instantly_broken)
        bg.spawn(trio.sleep, 1)
    assert bg.statistics() == BackgroundStatistics(spawned=11, running=0, succeeded=1, failed=10, cancelled=0)


# --------------------------------------------------------------------------- run_parallel


async def test_run_parallel_returns_results_in_order(autojump_clock):
    async def after(seconds, value):
        await trio.sleep(seconds)
        return value

    results = await run_parallel(
        functools.partial(after, 3, "a"), functools.partial(after, 1, "b"), functools.partial(after, 2, "c")
    )
    assert results == ["a", "b", "c"]
    assert trio.current_time() == 3
    assert await run_parallel() == []


async def test_run_parallel_cancels_siblings_on_first_failure(autojump_clock):
    cancelled = []

    async def sibling(name):
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            cancelled.append(name)
            raise

    async def fails():
        await trio.sleep(1)
        raise LookupError("memory unavailable")

    with pytest.raises(LookupError, match="memory unavailable") as info:
        await run_parallel(functools.partial(sibling, "history"), fails, functools.partial(sibling, "persona"))
    assert not isinstance(info.value, BaseExceptionGroup)
    assert sorted(cancelled) == ["history", "persona"]
    assert trio.current_time() == 1


async def test_run_parallel_reports_simultaneous_failures_as_a_group():
    async def fails(exc):
        raise exc

    with pytest.raises(BaseExceptionGroup) as info:
        await run_parallel(functools.partial(fails, KeyError("a")), functools.partial(fails, ValueError("b")))
    assert sorted(type(e).__name__ for e in info.value.exceptions) == ["KeyError", "ValueError"]


async def test_run_parallel_is_cancelled_with_its_caller(autojump_clock):
    with trio.move_on_after(1) as scope:
        await run_parallel(trio.sleep_forever, trio.sleep_forever)
    assert scope.cancelled_caught
    assert trio.current_time() == 1
