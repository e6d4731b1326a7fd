"""MemoryMonitor, the RSS readers and WeakAux.

The monitor reads RSS through a fake ``read_rss`` that returns a scripted
sequence (``iter(values).__next__``), so levels are exact; time is trio's
MockClock, so sample times are exact too.
"""

from __future__ import annotations

import gc
import logging
import sys
from dataclasses import dataclass

import pytest
import trio

from shell.monitor import rss
from shell.monitor.alerts import AlertLog, Severity
from shell.monitor.memory import MemoryMonitor, MiB, WeakAux
from shell.service import Runtime, ServiceState
from shell.timers import TimerWheel


def make_monitor(values, **settings):
    """A monitor whose read_rss returns *values* one per sample, and its AlertLog."""
    alerts = AlertLog()
    monitor = MemoryMonitor(TimerWheel(), alerts, read_rss=iter(values).__next__, **settings)
    return monitor, alerts


# -- alerts ----------------------------------------------------------------


async def test_alert_fires_once_per_crossing_and_rearms_below_90_percent():
    monitor, alerts = make_monitor([100, 1000, 1200, 900, 1100, 899, 1000], alert_bytes=1000, critical_bytes=10**9)
    alert_counts, armed = [], []
    for _ in range(7):
        await monitor.sample()
        alert_counts.append(len(alerts.recent("memory")))
        armed.append(monitor.stats()["armed"])
    # 1000 crosses; 1200 and 1100 stay quiet; 900 is not below 90 % so it does not re-arm; 899 does.
    assert alert_counts == [0, 1, 1, 1, 1, 1, 2]
    assert armed == [True, False, False, False, False, True, False]
    first = alerts.recent("memory")[0]
    assert (first.kind, first.severity) == ("rss-high", Severity.WARNING)
    assert first.details == {"rss": 1000, "alert_bytes": 1000}
    assert monitor.stats()["alerts"] == 2
    assert monitor.stats()["sheds"] == 0


async def test_default_levels_are_500_mib_and_one_and_a_half_times_that():
    monitor, alerts = make_monitor([499 * MiB, 500 * MiB, 749 * MiB, 750 * MiB])
    assert (monitor.alert_bytes, monitor.critical_bytes) == (500 * MiB, 750 * MiB)
    for _ in range(4):
        await monitor.sample()
    assert [a.kind for a in alerts.recent()] == ["rss-high", "rss-critical"]
    assert monitor.stats()["sheds"] == 1
    assert monitor.stats()["last_rss"] == 750 * MiB


# -- shedding ----------------------------------------------------------------


async def test_shedding_calls_every_shedder_sync_and_async():
    monitor, alerts = make_monitor([1500, 2500], alert_bytes=1000, critical_bytes=2000)
    calls = []

    def clear_cache():
        calls.append("cache")
        return 3

    async def drop_idle_conversations():
        await trio.sleep(0)
        calls.append("idle")
        return 5

    monitor.register_shedder("response-cache", clear_cache)
    monitor.register_shedder("idle-conversations", drop_idle_conversations)
    await monitor.sample()  # 1500: above alert, below critical
    assert calls == []
    await monitor.sample()  # 2500: shed
    assert calls == ["cache", "idle"]
    assert monitor.stats()["sheds"] == 1
    shed = monitor.last_shed
    assert shed.freed == {"response-cache": 3, "idle-conversations": 5}
    assert shed.failed == []
    assert shed.rss == 2500
    assert shed.rss_after is None  # no sample since
    critical = alerts.recent()[-1]
    assert (critical.kind, critical.severity) == ("rss-critical", Severity.CRITICAL)
    assert critical.details["freed"] == {"response-cache": 3, "idle-conversations": 5}
    assert "response-cache: 3" in critical.message


async def test_no_second_shed_within_the_cooldown_unless_rss_keeps_rising(autojump_clock):
    # critical 2000: "keeps rising" means above the last shed's RSS + 5 % of 2000 = +100.
    values = [2500, 2500, 2550, 2500, 2700, 2750, 2801]
    monitor, alerts = make_monitor(values, alert_bytes=1000, critical_bytes=2000, cooldown=300)
    calls = []
    monitor.register_shedder("cache", lambda: calls.append(trio.current_time()) or 1)
    start = trio.current_time()
    for wait in (0, 30, 30, 240, 30, 30, 30):
        await trio.sleep(wait)
        await monitor.sample()
    # t=0 sheds; 30 and 60 cool down (2550 is not 100 above 2500); 300 is past the
    # cool-down; 330 rose to 2700 > 2500 + 100; 360 is only 50 above 2700; 390 is 101 above.
    assert [t - start for t in calls] == [0, 300, 330, 390]
    assert monitor.stats()["sheds"] == 4
    assert [a.kind for a in alerts.recent()].count("rss-critical") == 4
    assert monitor.last_shed.rss == 2801


async def test_sample_after_a_shed_records_its_effect():
    monitor, _ = make_monitor([2500, 1200], alert_bytes=1000, critical_bytes=2000)
    await monitor.sample()
    await monitor.sample()
    assert monitor.last_shed.rss_after == 1200
    assert monitor.stats()["last_shed"]["rss_after"] == 1200


async def test_a_failing_shedder_is_logged_and_the_others_still_run(caplog):
    monitor, alerts = make_monitor([2500], alert_bytes=1000, critical_bytes=2000)

    async def second():
        return 2

    def boom():
        raise RuntimeError("boom")

    monitor.register_shedder("first", lambda: 1)
    monitor.register_shedder("boom", boom)
    monitor.register_shedder("no-count", lambda: None)
    monitor.register_shedder("second", second)
    with caplog.at_level(logging.ERROR, logger="shell.monitor.memory"):
        await monitor.sample()
    assert monitor.last_shed.freed == {"first": 1, "second": 2}
    assert monitor.last_shed.failed == ["boom", "no-count"]
    assert monitor.stats()["shed_errors"] == 2
    failures = [r for r in caplog.records if r.name == "shell.monitor.memory" and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == ["memory shedder 'boom' failed", "memory shedder 'no-count' failed"]
    assert isinstance(failures[0].exc_info[1], RuntimeError)
    assert isinstance(failures[1].exc_info[1], TypeError)
    assert "failed: boom, no-count" in alerts.recent()[-1].message


async def test_a_shed_cancelled_midway_is_still_counted_and_alerted(autojump_clock):
    monitor, alerts = make_monitor([2500], alert_bytes=1000, critical_bytes=2000)

    async def hangs():
        await trio.sleep_forever()

    monitor.register_shedder("quick", lambda: 4)
    monitor.register_shedder("hangs", hangs)
    with trio.move_on_after(5) as limit:
        await monitor.sample()
    assert limit.cancelled_caught
    assert monitor.stats()["sheds"] == 1
    assert monitor.last_shed.freed == {"quick": 4}
    assert alerts.recent()[-1].kind == "rss-critical"


async def test_shedders_register_once_by_name_and_can_unregister():
    monitor, alerts = make_monitor([2500, 2500], alert_bytes=1000, critical_bytes=2000, cooldown=0)
    calls = []
    unregister = monitor.register_shedder("cache", lambda: calls.append("cache") or 1)
    with pytest.raises(ValueError, match="cache"):
        monitor.register_shedder("cache", lambda: 0)
    await monitor.sample()
    unregister()
    unregister()  # idempotent
    await monitor.sample()
    assert calls == ["cache"]
    assert monitor.stats()["sheds"] == 2
    assert monitor.last_shed.freed == {}
    assert "shed nothing" in alerts.recent()[-1].message


async def test_a_bad_reading_is_rejected():
    for bad in (-1, 1.5, None):
        monitor, _ = make_monitor([bad])
        with pytest.raises(ValueError, match="read_rss"):
            await monitor.sample()
        assert monitor.stats()["samples"] == 0


# -- trend -----------------------------------------------------------------


async def sample_every_30_s(monitor, count):
    for _ in range(count):
        await monitor.sample()
        await trio.sleep(30)


async def test_trend_of_a_rising_series(autojump_clock):
    base = 200 * MiB
    monitor, _ = make_monitor([base + k * MiB for k in range(7)], window=5, critical_bytes=10**12)
    await sample_every_30_s(monitor, 7)
    trend = monitor.trend()
    assert trend["samples"] == 5  # the window keeps the last five
    assert (trend["current"], trend["min"], trend["max"]) == (base + 6 * MiB, base + 2 * MiB, base + 6 * MiB)
    assert trend["slope_bytes_per_min"] == pytest.approx(2 * MiB)  # 1 MiB every 30 s
    assert trend["label"] == "rising"


async def test_trend_of_a_falling_series(autojump_clock):
    monitor, _ = make_monitor([300 * MiB - k * 3 * MiB for k in range(4)])
    await sample_every_30_s(monitor, 4)
    trend = monitor.trend()
    assert trend["slope_bytes_per_min"] == pytest.approx(-6 * MiB)
    assert trend["label"] == "falling"


async def test_trend_below_the_flat_slope_is_flat(autojump_clock):
    wobble = [100 * MiB + d for d in (0, 400_000, -300_000, 200_000, 0, 300_000)]
    monitor, _ = make_monitor(wobble, flat_slope=1 * MiB)
    await sample_every_30_s(monitor, 6)
    trend = monitor.trend()
    assert abs(trend["slope_bytes_per_min"]) < 1 * MiB
    assert trend["slope_bytes_per_min"] != 0
    assert trend["label"] == "flat"
    # The same data with a stricter threshold is a rise.
    monitor.flat_slope = 1000
    assert monitor.trend()["label"] == "rising"


async def test_trend_before_two_samples():
    monitor, _ = make_monitor([123])
    assert monitor.trend() == {
        "samples": 0, "current": None, "min": None, "max": None, "slope_bytes_per_min": 0.0, "label": "flat"
    }
    await monitor.sample()
    assert monitor.trend()["current"] == 123
    assert monitor.trend()["slope_bytes_per_min"] == 0.0
    assert monitor.stats()["last_rss"] == 123


# -- inside a Runtime --------------------------------------------------------


async def test_monitor_in_a_runtime_samples_every_30_s(autojump_clock):
    wheel = TimerWheel()
    times = []

    def read():
        times.append(trio.current_time())
        return 100 * MiB

    monitor = MemoryMonitor(wheel, AlertLog(), read_rss=read)
    assert monitor.depends_on == ("timers",)
    runtime = Runtime([monitor, wheel], handle_signals=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await runtime.wait_state("memory-monitor", ServiceState.READY)
        start = trio.current_time()
        await trio.sleep(5 * 60 + 15)
        runtime.request_stop()
    assert runtime.order == ("timers", "memory-monitor")
    assert monitor.stats()["samples"] == 10
    assert [t - start for t in times] == [30.0 * k for k in range(1, 11)]
    assert wheel.stats.jobs == 0  # the job left with the monitor


async def test_a_shed_in_a_runtime_is_followed_by_a_prompt_sample(autojump_clock):
    wheel = TimerWheel()
    script = iter([2500, 1200, 1100])
    times = []

    def read():
        times.append(trio.current_time())
        return next(script)

    monitor = MemoryMonitor(wheel, AlertLog(), read_rss=read, alert_bytes=1000, critical_bytes=2000)
    runtime = Runtime([wheel, monitor], handle_signals=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await runtime.wait_state("memory-monitor", ServiceState.READY)
        start = trio.current_time()
        await trio.sleep(75)
        runtime.request_stop()
    assert [t - start for t in times] == [30.0, 31.0, 60.0]  # the shed at 30, its check 1 s later
    assert monitor.last_shed.rss_after == 1200


# -- settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"alert_bytes": 0}, "alert_bytes"),
        ({"alert_bytes": 1000, "critical_bytes": 999}, "critical_bytes"),
        ({"rearm_fraction": 0}, "rearm_fraction"),
        ({"rearm_fraction": 1.1}, "rearm_fraction"),
        ({"period": 0}, "period"),
        ({"resample_delay": float("inf")}, "resample_delay"),
        ({"cooldown": -1}, "cooldown"),
        ({"window": 1}, "window"),
        ({"flat_slope": -1}, "flat_slope"),
    ],
)
def test_bad_settings_are_rejected(settings, match):
    with pytest.raises(ValueError, match=match):
        MemoryMonitor(TimerWheel(), AlertLog(), **settings)


def test_depends_on_the_wheel_it_was_given():
    assert MemoryMonitor(TimerWheel(name="ticks"), AlertLog()).depends_on == ("ticks",)
    assert MemoryMonitor(TimerWheel(), AlertLog(), depends_on=()).depends_on == ()


# -- reading RSS ---------------------------------------------------------------


def test_parse_statm():
    assert rss.parse_statm("5000 1200 300 10 0 900 0\n", 4096) == 1200 * 4096
    with pytest.raises(ValueError):
        rss.parse_statm("5000", 4096)


def test_real_read_rss_is_plausible_and_follows_a_50_mib_allocation():
    size = 50 * MiB
    before = rss.read_rss()
    assert 1 * MiB < before < 1024 * 1024 * MiB
    block = bytearray(size)
    block[::4096] = b"\x01" * len(range(0, size, 4096))  # touch every page
    during = rss.read_rss()
    assert during - before >= 40 * MiB
    del block
    after = rss.read_rss()
    if not rss.RSS_IS_PEAK:
        assert during - after >= 40 * MiB  # a block this big goes back to the OS at once


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux readers")
def test_linux_readers_agree_on_scale():
    assert rss.RSS_SOURCE == "statm"
    current, peak = rss.read_statm_rss(), rss.read_maxrss()
    assert 1 * MiB < current <= peak * 1.01  # maxrss is the peak, in KiB converted to bytes


# -- WeakAux -----------------------------------------------------------------


class UserState:
    """Stands in for the conversation store's per-user state object."""


def test_weak_aux_entries_vanish_with_their_owner():
    aux = WeakAux()
    alice, bob = UserState(), UserState()
    scratch = aux.get(alice, dict)
    scratch["rendered"] = "prompt"
    assert aux.get(alice, dict) is scratch  # the factory runs once per owner
    aux.get(bob, list)
    assert len(aux) == 2
    assert alice in aux and aux.peek(alice) is scratch
    del alice
    gc.collect()
    assert len(aux) == 1
    bob.me = bob  # a reference cycle: only the collector frees bob
    del bob
    gc.collect()
    assert len(aux) == 0


def test_weak_aux_matches_owners_by_identity():
    @dataclass
    class Profile:  # eq=True makes it unhashable: a WeakKeyDictionary would refuse it
        user_id: int

    aux = WeakAux()
    first, twin = Profile(1), Profile(1)
    assert first == twin
    aux.get(first, lambda: "first")
    assert aux.get(twin, lambda: "twin") == "twin"
    assert aux.peek(first) == "first"
    aux.discard(first)
    assert first not in aux and aux.peek(first) is None and len(aux) == 1


def test_weak_aux_refuses_what_it_cannot_track():
    aux = WeakAux()
    with pytest.raises(TypeError):
        aux.get(42, dict)  # ints take no weak references

    def failing():
        raise RuntimeError("no")

    owner = UserState()
    with pytest.raises(RuntimeError):
        aux.get(owner, failing)
    assert len(aux) == 0 and owner not in aux
