"""Runtime lifecycle: ordering, states, stop deadline, flushes, crashes and restarts.

Everything runs on trio's MockClock (autojump), except the signal test, which
drives a real subprocess with real time, bounded by timeouts.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from shell.service import Runtime, Service, ServiceFailed, ServiceState, Transition, start_order

S = ServiceState
REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("runtime_signal_child.py")


class Recorder(Service):
    """Logs ("start" | "stop" | "flush", name) into a shared list."""

    def __init__(self, name, log, **settings):
        super().__init__(name, **settings)
        self.log = log

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        self.log.append(("start", self.name))
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.log.append(("stop", self.name))

    async def flush(self):
        self.log.append(("flush", self.name))


class Crasher(Service):
    """Crashes on its first `crashes` runs (before or after ready), then serves."""

    def __init__(self, name, *, crashes, ready_first=False, **settings):
        super().__init__(name, **settings)
        self.crashes = crashes
        self.ready_first = ready_first
        self.runs_at = []
        self.flushed = False

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        self.runs_at.append(trio.current_time())
        if self.ready_first:
            task_status.started()
        if len(self.runs_at) <= self.crashes:
            raise ValueError(f"boom {len(self.runs_at)}")
        if not self.ready_first:
            task_status.started()
        await trio.sleep_forever()

    async def flush(self):
        self.flushed = True


async def run_until(runtime, name, state):
    """Run *runtime* in a nursery, wait for *name* to reach *state*, request a stop, wait for the end."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await runtime.wait_state(name, state)
        runtime.request_stop()


def states_of(runtime, name):
    return [t.state for t in runtime.transitions if t.name == name]


# -- ordering and graph checks ----------------------------------------------


async def test_start_in_dependency_order_stop_and_flush_in_reverse(autojump_clock):
    log = []
    services = [
        Recorder("bot", log, depends_on=["cache", "timers"]),
        Recorder("cache", log, depends_on=["store"]),
        Recorder("timers", log),
        Recorder("store", log),
    ]
    runtime = Runtime(services, handle_signals=False)
    assert runtime.order == ("store", "cache", "timers", "bot")
    await run_until(runtime, "bot", S.READY)
    assert log == [
        ("start", "store"), ("start", "cache"), ("start", "timers"), ("start", "bot"),
        ("stop", "bot"), ("stop", "timers"), ("stop", "cache"), ("stop", "store"),
        ("flush", "bot"), ("flush", "timers"), ("flush", "cache"), ("flush", "store"),
    ]  # fmt: skip
    assert runtime.states() == dict.fromkeys(runtime.order, S.STOPPED)


@pytest.mark.parametrize(
    ("deps", "message"),
    [
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, "dependency cycle: a -> b -> c -> a"),
        ({"a": ["a"]}, "dependency cycle: a -> a"),
        ({"a": [], "b": ["a", "ghost"]}, "service 'b' depends on unknown service 'ghost'"),
    ],
)
def test_bad_dependency_graph_is_rejected_before_anything_starts(deps, message):
    log = []
    services = [Recorder(name, log, depends_on=on) for name, on in deps.items()]
    with pytest.raises(ValueError) as caught:
        Runtime(services, handle_signals=False)
    assert str(caught.value) == message
    assert log == []


def test_start_order_keeps_given_order_between_independent_services():
    services = {name: Service(name) for name in ("z", "y", "x")}
    assert start_order(services) == ("z", "y", "x")


def test_duplicate_and_missing_names_are_rejected():
    with pytest.raises(ValueError, match="two services are named 'a'"):
        Runtime([Service("a"), Service("a")])
    with pytest.raises(ValueError, match="Service has no name"):
        Runtime([Service()])


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="restart must be one of"):
        Service("a", restart="sometimes")
    with pytest.raises(ValueError, match="backoff"):
        Service("a", backoff_base=5, backoff_cap=1)
    with pytest.raises(TypeError, match="collection of names"):
        Service("a", depends_on="b")


# -- states ------------------------------------------------------------------


async def test_states_are_observable_through_a_lifecycle(autojump_clock):
    log = []
    runtime = Runtime([Recorder("a", log), Recorder("b", log, depends_on=["a"])], handle_signals=False)
    assert runtime.state("a") is S.CREATED
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await runtime.wait_state("b", S.READY)
        assert runtime.state("a") is S.READY
        await trio.sleep(5)
        runtime.request_stop()
        await runtime.wait_state("a", S.STOPPED)
    assert runtime.transitions[0] == Transition(0.0, "a", S.STARTING)
    assert list(runtime.transitions) == [
        Transition(0.0, "a", S.STARTING),
        Transition(0.0, "a", S.READY),
        Transition(0.0, "b", S.STARTING),
        Transition(0.0, "b", S.READY),
        Transition(5.0, "b", S.STOPPING),
        Transition(5.0, "b", S.STOPPED),
        Transition(5.0, "a", S.STOPPING),
        Transition(5.0, "a", S.STOPPED),
    ]


async def test_wait_state_returns_at_once_for_the_current_state():
    runtime = Runtime([Service("a")], handle_signals=False)
    with trio.fail_after(1):
        await runtime.wait_state("a", S.CREATED)


async def test_service_that_returns_after_ready_is_stopped_not_an_error(autojump_clock):
    class OneShot(Service):
        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            await trio.sleep(3)

    log = []
    runtime = Runtime([OneShot("once"), Recorder("other", log)], handle_signals=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await runtime.wait_state("once", S.STOPPED)
        assert trio.current_time() == 3.0
        assert runtime.state("other") is S.READY
        runtime.request_stop()
    assert runtime.state("once") is S.STOPPED
    assert ("flush", "other") in log


# -- stop, deadline, flush -----------------------------------------------------


async def test_request_stop_flushes_every_service(autojump_clock):
    log = []
    runtime = Runtime([Recorder(n, log) for n in "abc"], handle_signals=False)
    await run_until(runtime, "c", S.READY)
    assert [entry for entry in log if entry[0] == "flush"] == [("flush", "c"), ("flush", "b"), ("flush", "a")]


async def test_request_stop_while_a_service_is_still_starting(autojump_clock):
    class NeverReady(Service):
        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            await trio.sleep_forever()

    log = []
    runtime = Runtime([Recorder("a", log), NeverReady("slow"), Recorder("late", log, depends_on=["slow"])],
                      handle_signals=False)  # fmt: skip
    await run_until(runtime, "slow", S.STARTING)
    assert runtime.state("slow") is S.STOPPED
    assert runtime.state("late") is S.CREATED  # never started...
    assert ("flush", "late") in log and ("flush", "a") in log  # ...but every service is flushed


async def test_service_ignoring_cancellation_is_abandoned_and_flushes_still_run(autojump_clock, caplog):
    flushed_at = {}

    class Stubborn(Service):
        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(60)  # ignores the stop for a minute

        async def flush(self):
            flushed_at[self.name] = trio.current_time()

    class SlowFlush(Service):
        async def flush(self):
            await trio.sleep(1)  # flushes that need time get what is left of the deadline
            flushed_at[self.name] = trio.current_time()

    runtime = Runtime([SlowFlush("store"), Stubborn("stubborn", depends_on=["store"])],
                      stop_deadline=10, handle_signals=False)  # fmt: skip
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await runtime.wait_state("stubborn", S.READY)
        await trio.sleep(100)
        runtime.request_stop()
        await runtime.wait_state("stubborn", S.FAILED)
        assert trio.current_time() == 105.0  # abandoned at half the deadline
    assert Transition(105.0, "store", S.STOPPED) in runtime.transitions  # the stop went on without it
    assert flushed_at == {"stubborn": 105.0, "store": 106.0}
    assert trio.current_time() == 160.0  # run() could only return once the task ended
    assert runtime.state("stubborn") is S.FAILED
    assert "service 'stubborn' did not stop before the deadline; abandoned" in caplog.text


async def test_flush_is_bounded_by_the_deadline_and_later_flushes_still_run(autojump_clock, caplog):
    called = []

    class HungFlush(Service):
        async def flush(self):
            called.append(self.name)
            await trio.sleep_forever()

    class QuickFlush(Service):
        async def flush(self):
            called.append(self.name)

    runtime = Runtime([QuickFlush("first"), HungFlush("hung", depends_on=["first"])],
                      stop_deadline=4, handle_signals=False)  # fmt: skip
    await run_until(runtime, "hung", S.READY)
    assert called == ["hung", "first"]
    assert trio.current_time() == 4.0
    assert "flush of service 'hung' did not finish before the stop deadline" in caplog.text


async def test_flush_exception_is_logged_and_other_flushes_still_run(autojump_clock, caplog):
    log = []

    class BadFlush(Recorder):
        async def flush(self):
            raise OSError("disk full")

    runtime = Runtime([Recorder("a", log), BadFlush("bad", log), Recorder("c", log)], handle_signals=False)
    await run_until(runtime, "c", S.READY)
    assert [entry for entry in log if entry[0] == "flush"] == [("flush", "c"), ("flush", "a")]
    records = [r for r in caplog.records if r.getMessage() == "flush of service 'bad' failed"]
    assert len(records) == 1 and records[0].levelno == logging.ERROR
    assert isinstance(records[0].exc_info[1], OSError)


async def test_outside_cancellation_still_stops_and_flushes(autojump_clock):
    log = []
    runtime = Runtime([Recorder("a", log), Recorder("b", log, depends_on=["a"])], handle_signals=False)
    with trio.move_on_after(7):
        await runtime.run()
    assert log[-2:] == [("flush", "b"), ("flush", "a")]
    assert trio.current_time() == 7.0


async def test_a_runtime_runs_only_once(autojump_clock):
    runtime = Runtime([Service("a")], handle_signals=False)
    runtime.request_stop()
    await runtime.run()
    with pytest.raises(RuntimeError, match="runs only once"):
        await runtime.run()


# -- crashes and restarts ------------------------------------------------------


async def test_crash_without_restart_fails_the_runtime_and_flushes_the_others(autojump_clock, caplog):
    log = []
    crasher = Crasher("flaky", crashes=1, ready_first=True, depends_on=["a"])
    runtime = Runtime([Recorder("a", log), crasher, Recorder("c", log)], handle_signals=False)
    with pytest.raises(ServiceFailed, match="service 'flaky' failed") as caught:
        await runtime.run()
    assert caught.value.service == "flaky"
    assert isinstance(caught.value.__cause__, ValueError)
    assert str(caught.value.__cause__) == "boom 1"
    assert runtime.state("flaky") is S.FAILED
    assert runtime.state("c") is S.CREATED  # the start sequence stopped at the failure
    assert crasher.flushed and ("stop", "a") in log and ("flush", "a") in log and ("flush", "c") in log
    crash = [r for r in caplog.records if r.getMessage() == "service 'flaky' crashed"]
    assert len(crash) == 1 and crash[0].exc_info is not None  # logged with its traceback


async def test_crash_later_stops_the_others_in_reverse_order(autojump_clock):
    log = []

    class CrashAt10(Service):
        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            await trio.sleep(10)
            raise KeyError("gone")

    runtime = Runtime([Recorder("a", log), CrashAt10("mid", depends_on=["a"]), Recorder("c", log, depends_on=["mid"])],
                      handle_signals=False)  # fmt: skip
    with pytest.raises(ServiceFailed, match="'mid'"):
        await runtime.run()
    assert trio.current_time() == 10.0
    assert log == [("start", "a"), ("start", "c"), ("stop", "c"), ("stop", "a"), ("flush", "c"), ("flush", "a")]


async def test_return_without_started_is_a_crash(autojump_clock):
    class Quitter(Service):
        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            return

    runtime = Runtime([Quitter("quitter")], handle_signals=False)
    with pytest.raises(ServiceFailed) as caught:
        await runtime.run()
    assert "without calling task_status.started()" in str(caught.value.__cause__)


async def test_crash_restarts_with_exponential_backoff(autojump_clock, caplog):
    log = []
    crasher = Crasher("flaky", crashes=4, restart="always", backoff_base=1, backoff_cap=4)
    runtime = Runtime([crasher, Recorder("user", log, depends_on=["flaky"])], handle_signals=False)
    await run_until(runtime, "user", S.READY)
    assert crasher.runs_at == [0.0, 1.0, 3.0, 7.0, 11.0]  # waits 1, 2, 4, then capped at 4
    flaky = states_of(runtime, "flaky")
    assert flaky == [S.STARTING, S.FAILED] * 4 + [S.STARTING, S.READY, S.STOPPING, S.STOPPED]
    user_start = next(t.time for t in runtime.transitions if t.name == "user")
    assert user_start == 11.0  # dependents wait until it is really ready
    assert len([r for r in caplog.records if r.getMessage() == "service 'flaky' crashed"]) == 4


async def test_restart_count_resets_after_a_healthy_run(autojump_clock):
    class Unstable(Service):
        def __init__(self):
            super().__init__("unstable", restart="always", backoff_base=1, backoff_cap=4)
            self.runs_at = []

        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            self.runs_at.append(trio.current_time())
            task_status.started()
            if len(self.runs_at) == 3:
                await trio.sleep(10)  # healthy for longer than backoff_cap
            if len(self.runs_at) < 5:
                raise ValueError("boom")
            await trio.sleep_forever()

    unstable = Unstable()
    runtime = Runtime([unstable], handle_signals=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        while len(unstable.runs_at) < 5:
            await runtime.wait_state("unstable", S.STARTING)
            await trio.sleep(0)
        runtime.request_stop()
    # waits: 1, 2, then a 10 s healthy run resets the count: 1, 2
    assert unstable.runs_at == [0.0, 1.0, 3.0, 14.0, 16.0]


async def test_restarts_exhausted_fails_the_runtime(autojump_clock):
    log = []
    crasher = Crasher("flaky", crashes=10, restart="always", max_restarts=2, backoff_base=1, backoff_cap=60)
    runtime = Runtime([Recorder("a", log), crasher], handle_signals=False)
    with pytest.raises(ServiceFailed, match="'flaky'") as caught:
        await runtime.run()
    assert crasher.runs_at == [0.0, 1.0, 3.0]
    assert str(caught.value.__cause__) == "boom 3"
    assert ("flush", "a") in log and crasher.flushed


async def test_no_restart_once_stopping(autojump_clock):
    class CrashOnStop(Service):
        async def run(self, task_status=trio.TASK_STATUS_IGNORED):
            self.runs = getattr(self, "runs", 0) + 1
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                raise RuntimeError("cleanup failed")

    async def stop_when_ready():
        await runtime.wait_state("c", S.READY)
        runtime.request_stop()

    service = CrashOnStop("c", restart="always")
    runtime = Runtime([service], handle_signals=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_when_ready)
        with pytest.raises(ServiceFailed, match="'c'"):
            await runtime.run()
    assert service.runs == 1
    assert runtime.state("c") is S.FAILED


# -- a real process and real signals -------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_a_real_process_cleanly(tmp_path, signum):
    flush_file = tmp_path / "flushed.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(CHILD), str(flush_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        readable, _, _ = select.select([proc.stdout], [], [], 30)
        assert readable, "child never printed its ready line"
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert flush_file.read_text() == "flushed after stop\n"
    assert f"{signal.Signals(signum).name} received: stopping" in err
