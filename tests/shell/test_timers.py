"""TimerWheel: rounding, shared wake-ups, exact run times, errors, timeouts, skips, cancel.

All on trio's MockClock (autojump): the wheel starts at virtual time 0.0, so
run times are exact.
"""

from __future__ import annotations

import logging

import pytest
import trio

from shell.service import Runtime, Service, ServiceState
from shell.timers import TimerWheel, wheel_period


def recorder(times):
    """An async job that appends trio.current_time() to *times*."""

    async def job():
        times.append(trio.current_time())

    return job


async def run_wheel_for(wheel, seconds):
    """Run *wheel* from virtual time 0 for *seconds*, then stop it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(wheel.run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("given", "actual"),
    [(7, 10.0), (12, 20.0), (3, 3.0), (0.5, 0.5), (4.99, 4.99), (5, 10.0), (10, 10.0), (20, 20.0), (20.5, 30.0)],
)
def test_periods_of_5_s_or_more_round_up_to_a_multiple_of_10(given, actual):
    assert wheel_period(given) == actual
    handle = TimerWheel().every(given, recorder([]), name="job")
    assert handle.period == actual
    assert handle.timeout == actual  # the timeout defaults to the rounded period


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan")])
def test_bad_period_or_timeout_is_rejected(bad):
    wheel = TimerWheel()
    with pytest.raises(ValueError, match="period"):
        wheel.every(bad, recorder([]), name="job")
    with pytest.raises(ValueError, match="timeout"):
        wheel.every(10, recorder([]), name="job", timeout=bad)
    assert wheel.stats.jobs == 0


async def test_jobs_due_together_share_one_wakeup(autojump_clock):
    wheel = TimerWheel()
    ten, twenty = [], []
    wheel.every(10, recorder(ten), name="ten")
    wheel.every(20, recorder(twenty), name="twenty")
    await run_wheel_for(wheel, 65)
    assert ten == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert twenty == [20.0, 40.0, 60.0]
    assert wheel.stats.jobs == 2
    assert wheel.stats.runs == 9
    assert wheel.stats.wakeups == 6  # 9 runs, 3 of them riding along at 20, 40, 60
    assert wheel.stats.wakeups_saved == 3


async def test_rounded_periods_align_across_services(autojump_clock):
    """Jobs registered at odd moments land on the shared grid, not at registration + period."""
    wheel = TimerWheel()
    seven, twelve = [], []
    async with trio.open_nursery() as nursery:
        await nursery.start(wheel.run)
        await trio.sleep(3)
        wheel.every(7, recorder(seven), name="from-cache")  # -> 10 s
        await trio.sleep(4)
        wheel.every(12, recorder(twelve), name="from-ratelimit")  # -> 20 s
        await trio.sleep(38)
        nursery.cancel_scope.cancel()
    assert seven == [10.0, 20.0, 30.0, 40.0]
    assert twelve == [20.0, 40.0]
    assert wheel.stats.wakeups == 4
    assert wheel.stats.wakeups_saved == 2


async def test_short_period_is_kept_exact(autojump_clock):
    wheel = TimerWheel()
    times = []
    wheel.every(3, recorder(times), name="fast")
    await run_wheel_for(wheel, 10)
    assert times == [3.0, 6.0, 9.0]


async def test_registering_an_earlier_job_wakes_a_sleeping_ticker(autojump_clock):
    wheel = TimerWheel()
    slow, fast = [], []
    wheel.every(60, recorder(slow), name="slow")
    async with trio.open_nursery() as nursery:
        await nursery.start(wheel.run)
        await trio.sleep(1)  # the ticker now sleeps until 60
        wheel.every(2, recorder(fast), name="fast")
        await trio.sleep(4)
        nursery.cancel_scope.cancel()
    assert fast == [2.0, 4.0]
    assert slow == []


async def test_raising_job_is_logged_and_counted_and_the_wheel_keeps_running(autojump_clock, caplog):
    wheel = TimerWheel()
    good = []

    async def broken():
        raise ZeroDivisionError("oops")

    wheel.every(10, broken, name="broken")
    wheel.every(10, recorder(good), name="good")
    await run_wheel_for(wheel, 35)
    assert wheel.stats.errors == 3  # every run failed, and it ran every time
    assert good == [10.0, 20.0, 30.0]
    failures = [r for r in caplog.records if r.getMessage() == "timer job 'broken' failed"]
    assert len(failures) == 3 and failures[0].levelno == logging.ERROR
    assert isinstance(failures[0].exc_info[1], ZeroDivisionError)


async def test_slow_job_is_cancelled_at_its_timeout(autojump_clock):
    wheel = TimerWheel()
    ended = []

    async def slow():
        try:
            await trio.sleep(5)
        finally:
            ended.append(trio.current_time())

    wheel.every(10, slow, name="slow", timeout=2)
    await run_wheel_for(wheel, 25)
    assert ended == [12.0, 22.0]
    assert wheel.stats.timeouts == 2
    assert wheel.stats.errors == 0


async def test_job_still_running_is_not_started_twice(autojump_clock, caplog):
    wheel = TimerWheel()
    started, running = [], []

    async def long():
        started.append(trio.current_time())
        running.append(1)
        assert len(running) == 1, "two runs at once"
        await trio.sleep(15)
        running.pop()

    wheel.every(10, long, name="long", timeout=25)
    await run_wheel_for(wheel, 35)
    assert started == [10.0, 30.0]  # due at 20 while the 10 run was still going
    assert wheel.stats.skips == 1
    assert wheel.stats.runs == 2
    assert wheel.stats.wakeups == 3
    assert "timer job 'long' still running when due again; skipped" in caplog.text


async def test_cancelled_handle_stops_the_job(autojump_clock):
    wheel = TimerWheel()
    kept, dropped = [], []
    wheel.every(10, recorder(kept), name="kept")
    handle = wheel.every(10, recorder(dropped), name="dropped")
    async with trio.open_nursery() as nursery:
        await nursery.start(wheel.run)
        await trio.sleep(25)
        handle.cancel()
        handle.cancel()  # idempotent
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert dropped == [10.0, 20.0]
    assert kept == [10.0, 20.0, 30.0, 40.0]
    assert handle.cancelled
    assert wheel.stats.jobs == 1


async def test_cancelling_the_only_due_job_does_not_count_a_wakeup(autojump_clock):
    wheel = TimerWheel()
    times = []
    handle = wheel.every(10, recorder(times), name="only")
    async with trio.open_nursery() as nursery:
        await nursery.start(wheel.run)
        await trio.sleep(5)
        handle.cancel()  # the ticker still wakes at 10, finds nothing due
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert times == []
    assert wheel.stats.wakeups == 0


async def test_stopping_the_wheel_cancels_runs_in_progress(autojump_clock):
    wheel = TimerWheel()
    ended = []

    async def long():
        try:
            await trio.sleep(8)
        finally:
            ended.append(trio.current_time())

    wheel.every(10, long, name="long")
    await run_wheel_for(wheel, 13)
    assert ended == [13.0]


async def test_wheel_serves_other_services_in_a_runtime(autojump_clock):
    """Jobs registered before the wheel runs are kept; services register theirs once it is up."""
    early, late = [], []

    class Cache(Service):
        name = "cache"
        depends_on = ("timers",)

        def __init__(self, wheel):
            super().__init__()
            self.wheel = wheel

        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            self.wheel.every(20, recorder(late), name="cache-flush")
            task_status.started()
            await trio.sleep_forever()

    wheel = TimerWheel()
    wheel.every(10, recorder(early), name="early")
    runtime = Runtime([Cache(wheel), wheel], handle_signals=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await runtime.wait_state("cache", ServiceState.READY)
        await trio.sleep(45)
        runtime.request_stop()
    assert runtime.order == ("timers", "cache")
    assert early == [10.0, 20.0, 30.0, 40.0]
    assert late == [20.0, 40.0]
    assert wheel.stats.wakeups_saved == 2
