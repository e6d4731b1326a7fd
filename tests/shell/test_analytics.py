"""Analytics: emit, sampling, priority queues, the SQLite writer, windows, anomalies, report.

Time is trio's MockClock (autojump) with the wall clock pinned to it
(``WallClock(T0)``: POSIX time T0 at virtual time 0), while the SQLite
writes are real, in real files and worker threads. The clock may jump while
a thread writes, so assertions about *when* a batch was taken use the
writer's own record of it (``max_high_wait``) or look only at moments when
no write can be due; counts are checked after the final flush. The crash
test SIGKILLs a real child process (tests/shell/analytics_child.py).
"""

from __future__ import annotations

import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing

from shell.analytics import Analytics, AnalyticsStore, AnomalyDetector, SchemaError
from shell.analytics.aggregate import MAX_LABELS, OTHER_LABEL, AggregateRow, Window, window_stats
from shell.analytics.report import build_report, parse_duration
from shell.analytics.writer import MIGRATIONS, SCHEMA_VERSION, migrate
from shell.cli import main


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """pytest-trio's autojump clock, but jumping after 1 ms of real idleness.

    With ``autojump_threshold=0`` trio polls without sleeping while a SQLite
    worker thread runs, and the poll starves the thread of the GIL (about
    100 ms per to_thread call), which made this file take ten minutes. Mock
    time stays exact either way: it only moves by jumps.
    """
    return trio.testing.MockClock(autojump_threshold=0.001)
from shell.monitor.alerts import AlertLog
from shell.ratelimit import WallClock
from shell.timers import TimerWheel

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("analytics_child.py")
T0 = 1_800_000_000  # POSIX time at virtual time 0; a whole minute
DAY = 86400


def make(tmp_path, **settings):
    """An Analytics on tmp_path/analytics.db whose wall clock is T0 + trio time."""
    settings.setdefault("wall_clock", WallClock(T0))
    settings.setdefault("seed", 1)
    return Analytics(AnalyticsStore(tmp_path / "analytics.db", salt="test-salt"), **settings)


@asynccontextmanager
async def running(analytics):
    """Run *analytics*'s writer for the block, then stop it and flush, as the runtime does."""
    async with trio.open_nursery() as nursery:
        await nursery.start(analytics.run)
        yield
        nursery.cancel_scope.cancel()
    await analytics.flush()


def query(tmp_path, sql, *args):
    with sqlite3.connect(tmp_path / "analytics.db") as conn:
        return conn.execute(sql, args).fetchall()


def totals(tmp_path):
    """{metric: events counted} from the aggregates table."""
    return dict(query(tmp_path, "SELECT metric, SUM(count) FROM aggregates GROUP BY metric"))


# -- schema ----------------------------------------------------------------------------------


def test_the_schema_is_valid_ddl_on_this_sqlite(tmp_path):
    assert sqlite3.sqlite_version_info >= (3, 40, 0)
    conn = sqlite3.connect(tmp_path / "fresh.db", isolation_level=None)
    assert migrate(conn) == 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"meta", "events", "aggregates"}
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert migrate(conn) == SCHEMA_VERSION  # already current: nothing to do
    # STRICT tables refuse a value of the wrong type instead of storing it.
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO events (at, type, tokens) VALUES (1.0, 'llm_call', 'many')")


def test_an_older_database_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "analytics.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=1)
    conn.execute("INSERT INTO events (at, type, label, user_hash) VALUES (?, 'command_used', 'help', 'abc')", (T0,))
    conn.close()

    store = AnalyticsStore(path)
    store.open()
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT type, label, user_hash FROM events").fetchall() == [("command_used", "help", "abc")]
    indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"events_by_time", "aggregates_by_time", "events_by_user"} <= indexes


def test_a_newer_database_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "analytics.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = AnalyticsStore(path)
    with pytest.raises(SchemaError, match="schema version"):
        store.open()
    assert not store.is_open
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


# -- emit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fields", "error"),
    [
        (("no_such_event",), {}, "unknown analytics event type"),
        (("command_used",), {}, "needs field"),
        (("command_used",), {"command": "help", "colour": "red"}, "no field"),
        (("command_used", "urgent"), {"command": "help"}, "unknown analytics priority"),
        (("llm_call",), {"provider": "p", "latency": -1.0, "tokens": 1, "status": "ok"}, "latency must be"),
        (("llm_call",), {"provider": "p", "latency": math.nan, "tokens": 1, "status": "ok"}, "latency must be"),
        (("llm_call",), {"provider": "p", "latency": "1s", "tokens": 1, "status": "ok"}, "latency must be"),
        (("llm_call",), {"provider": "p", "latency": True, "tokens": 1, "status": "ok"}, "latency must be"),
        (("llm_call",), {"provider": "p", "latency": 0.5, "tokens": 1.5, "status": "ok"}, "tokens must be"),
        (("llm_call",), {"provider": "p", "latency": 0.5, "tokens": 1, "status": 200}, "status must be a str"),
        (("command_used",), {"command": 7}, "command must be a str"),
    ],
)
async def test_a_bad_event_is_refused_and_records_nothing(autojump_clock, tmp_path, args, fields, error):
    analytics = make(tmp_path)
    with pytest.raises(ValueError, match=error):
        analytics.emit(*args, **fields)
    stats = analytics.stats()
    assert (stats["emitted"], stats["queued"]) == (0, 0)
    await analytics.flush()
    assert not (tmp_path / "analytics.db").exists()  # nothing to write: not even a database


def mixed_event(i):
    """The i-th event of a bot-like mix: (type, priority, fields). 1 % errors (high), some cache lookups."""
    user = f"user{i % 300}"
    kind = i % 10
    if kind in (0, 5):
        return "message_processed", "normal", {"user_id": user, "latency": 0.5 + (i % 13) / 10}
    if kind == 1:
        return "command_used", "normal", {"command": ("help", "ask", "persona")[i % 3], "user_id": user}
    if kind in (2, 3, 4):
        return "cache_hit", "low", {"cache": "response"}
    if kind == 6:
        return "cache_miss", "low", {"cache": "response"}
    if kind == 7:
        return "llm_call", "normal", {"provider": "gemini", "latency": 0.8, "tokens": 400 + i % 50, "status": "ok"}
    if kind == 8:
        return "rate_limited", "low", {"scope": "user-minute", "user_id": user}
    if i % 100 == 9:
        return "error", "high", {"type": "TimeoutError", "hash": "e1"}
    return "shed", "low", {"reason": "busy"}


async def test_ten_thousand_events_a_second_lose_nothing(autojump_clock, tmp_path):
    analytics = make(tmp_path)
    seconds, per_ms = 3, 10
    async with running(analytics):
        for ms in range(seconds * 1000):
            for j in range(per_ms):
                event_type, priority, fields = mixed_event(ms * per_ms + j)
                analytics.emit(event_type, priority, **fields)
            await trio.sleep(0.001)
    stats = analytics.stats()
    emitted = stats["emitted_by_type"]
    assert stats["emitted"] == seconds * 1000 * per_ms
    assert stats["dropped"] == {"high": 0, "normal": 0, "low": 0}
    assert stats["queued"] == 0 and stats["write_errors"] == 0
    # Every event that was not sampled out is a row; every event is counted in the aggregates.
    [(rows,)] = query(tmp_path, "SELECT count(*) FROM events")
    assert rows == stats["rows_written"] == stats["emitted"] - stats["sampled_out"]
    assert stats["sampled_out"] == stats["sampled_out_by_type"]["cache_hit"] + stats["sampled_out_by_type"]["cache_miss"]
    assert 0 < stats["sampled_out"] < emitted["cache_hit"] + emitted["cache_miss"]
    assert totals(tmp_path) == {
        "messages": emitted["message_processed"],
        "commands": emitted["command_used"],
        "cache_hits": emitted["cache_hit"],
        "cache_misses": emitted["cache_miss"],
        "llm_latency": emitted["llm_call"],
        "llm_tokens": emitted["llm_call"],
        "llm_status": emitted["llm_call"],
        "rate_limited": emitted["rate_limited"],
        "errors": emitted["error"],
        "shed": emitted["shed"],
    }
    # Batching: well over 99 % fewer transactions than one per stored event.
    assert stats["commits"] <= rows / 100
    print(f"\n{stats['emitted']} events, {rows} rows in {stats['commits']} transactions")


async def test_sampling_stores_a_fraction_with_its_weight_and_keeps_totals_exact(autojump_clock, tmp_path):
    analytics = make(tmp_path, sample_rates={"cache_hit": 0.05})
    async with running(analytics):
        for i in range(10_000):
            analytics.emit("cache_hit", "low", cache="response")
            if i % 100 == 99:
                await trio.sleep(1)  # 100 seconds: the events span three windows
    [(rows, weights)] = query(tmp_path, "SELECT count(*), SUM(weight) FROM events")
    assert 400 < rows < 600  # about 5 %
    assert query(tmp_path, "SELECT DISTINCT weight FROM events") == [(20.0,)]
    assert rows == 10_000 - analytics.stats()["sampled_out"]
    assert totals(tmp_path) == {"cache_hits": 10_000}
    assert query(tmp_path, "SELECT start - ?, count FROM aggregates ORDER BY start", T0) == [(0, 6000), (60, 4000)]
    assert build_report(tmp_path / "analytics.db", DAY, now=T0 + 3600).cache_hits == 10_000


async def test_full_queues_drop_the_lowest_priority_first_and_count_every_drop(autojump_clock, tmp_path):
    analytics = make(tmp_path, max_queued=4)  # not running: nothing leaves the queues until the flush

    def emit(priority, name):
        analytics.emit("command_used", priority, command=name)

    for name in ("L1", "L2", "L3"):
        emit("low", name)
    emit("normal", "N1")  # full now
    emit("high", "H1")  # evicts the newest low, L3
    emit("normal", "N2")  # evicts L2
    emit("normal", "N3")  # evicts L1
    emit("normal", "N4")  # nothing below normal is queued: N4 itself is dropped
    emit("low", "L4")  # dropped
    emit("high", "H2")  # evicts the newest normal, N3
    stats = analytics.stats()
    assert stats["dropped"] == {"high": 0, "normal": 2, "low": 4}
    assert stats["queued"] == 4
    await analytics.flush()
    assert query(tmp_path, "SELECT label FROM events ORDER BY id") == [("H1",), ("H2",), ("N1",), ("N2",)]
    assert totals(tmp_path) == {"commands": 10}  # dropped or not, every event is counted


async def test_a_high_priority_event_is_written_within_100_ms(autojump_clock, tmp_path):
    analytics = make(tmp_path)
    store = analytics.store
    async with running(analytics):
        await trio.sleep(10.0)
        analytics.emit("message_processed", "normal", latency=1.0)
        await trio.sleep(0.3)
        assert store.rows_written == 0  # a normal event may wait up to a second
        analytics.emit("error", "high", type="Boom")
        await trio.sleep(0.099)  # no write can be due before 10.4, so no thread ran: the clock is exact
        assert store.rows_written == 0
        await trio.sleep(0.002)
        await trio.testing.wait_all_threads_completed()
        assert (store.rows_written, store.commits) == (2, 1)  # the waiting normal event went along
        assert analytics.max_high_wait == pytest.approx(0.1, abs=1e-6)

        # Alone, a normal event waits exactly max_delay.
        await trio.sleep(20.0 - trio.current_time())
        analytics.emit("message_processed", "normal")
        await trio.sleep(0.999)
        assert store.rows_written == 2
        await trio.sleep(0.002)
        await trio.testing.wait_all_threads_completed()
        assert store.rows_written == 3

        # A full batch goes at once.
        await trio.sleep(30.0 - trio.current_time())
        for _ in range(analytics.batch_size):
            analytics.emit("message_processed", "low")
        await trio.sleep(0.001)
        await trio.testing.wait_all_threads_completed()
        assert store.rows_written == 3 + analytics.batch_size


async def test_flush_writes_what_was_queued_even_if_the_writer_never_ran(autojump_clock, tmp_path):
    analytics = make(tmp_path)
    for i in range(1234):
        analytics.emit("command_used", "normal", command="help", user_id=i)
    await analytics.flush()
    assert query(tmp_path, "SELECT count(*) FROM events") == [(1234,)]
    assert analytics.store.commits == 3  # batches of 500, 500, 234
    assert query(tmp_path, "SELECT partial, SUM(count) FROM aggregates GROUP BY partial") == [(1, 1234)]


class FailingOnceStore(AnalyticsStore):
    """An AnalyticsStore whose first write fails (as with a full disk)."""

    failed = False

    def write(self, events, windows):
        if not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("database or disk is full")
        return super().write(events, windows)


async def test_a_failed_write_is_logged_kept_and_retried(autojump_clock, tmp_path, caplog):
    analytics = Analytics(FailingOnceStore(tmp_path / "analytics.db"), wall_clock=WallClock(T0))
    async with running(analytics):
        for i in range(10):
            analytics.emit("command_used", "high", command=f"c{i}")
        await trio.sleep(0.2)
        await trio.testing.wait_all_threads_completed()
        assert analytics.write_errors == 1 and analytics.stats()["queued"] == 10
        assert "writing 10 events failed" in caplog.text
        await trio.sleep(2.0)  # the retry comes after a backoff of one second
        await trio.testing.wait_all_threads_completed()
        assert analytics.stats()["queued"] == 0
    assert query(tmp_path, "SELECT count(*) FROM events") == [(10,)]
    assert totals(tmp_path) == {"commands": 10}


# -- windows and anomalies --------------------------------------------------------------------


def test_window_statistics_match_numpy_and_the_reservoir_is_bounded():
    rng = random.Random(7)
    window = Window(T0, reservoir_size=1000, random_source=rng.random)
    values = [rng.lognormvariate(0, 0.5) for _ in range(5000)]
    for value in values:
        window.add("llm_latency", "gemini", value)
    for _ in range(3):
        window.add("errors", "Boom", None)
    rows = {row.metric: row for row in window_stats(window)}
    latency = rows["llm_latency"]
    assert (latency.count, latency.n, latency.reservoir) == (5000, 5000, 1000)
    assert latency.total == pytest.approx(sum(values)) and latency.mean == pytest.approx(np.mean(values))
    # Percentiles come from a uniform sample of 1000 of the 5000 values.
    assert latency.p50 == pytest.approx(np.percentile(values, 50), rel=0.1)
    assert latency.p99 == pytest.approx(np.percentile(values, 99), rel=0.25)
    assert latency.std == pytest.approx(np.std(values), rel=0.15)
    assert rows["errors"][3:8] == (3, 0, 0.0, None, None)

    exact = Window(T0, reservoir_size=1000)
    for value in values[:1000]:
        exact.add("llm_latency", "", value)
    [row] = window_stats(exact)
    assert (row.p50, row.p90, row.p95, row.p99) == tuple(np.percentile(values[:1000], (50, 90, 95, 99)))
    assert row.std == pytest.approx(np.std(values[:1000]))


def test_labels_beyond_the_cap_are_counted_together():
    window = Window(T0)
    for i in range(MAX_LABELS + 50):
        window.add("commands", f"c{i}", None)
    counts = {row.label: row.count for row in window_stats(window)}
    assert len(counts) == MAX_LABELS + 1 and counts[OTHER_LABEL] == 50


def window_rows(start, messages, errors, latency, tokens):
    """The aggregate rows of one window with these figures (one label each)."""

    def row(metric, label, count, n=0, total=0.0):
        return AggregateRow(start, metric, label, count, n, total, None, None, None, None, None, None, n, False)

    return [
        row("messages", "", messages),
        row("errors", "TimeoutError", errors),
        row("llm_latency", "gemini", 100, 100, latency * 100),
        row("llm_tokens", "gemini", 100, 100, tokens),
    ]


def steady_window(rng, start):
    """A minute of a busy bot: Poisson counts, latency and tokens with 5 % Gaussian noise."""
    return window_rows(start, int(rng.poisson(600)), int(rng.poisson(2)), rng.normal(0.8, 0.04), rng.normal(60_000, 3000))


def test_the_detector_stays_quiet_on_steady_noise():
    rng = np.random.default_rng(20261130)
    detector = AnomalyDetector()
    anomalies = [a for minute in range(5000) for a in detector.check(minute * 60, steady_window(rng, minute * 60))]
    assert anomalies == []


@pytest.mark.parametrize(
    ("figures", "watch", "kind"),
    [
        ({"messages": 1500}, "messages.count", "spike"),
        ({"messages": 100}, "messages.count", "drop"),
        ({"messages": 0}, "messages.count", "drop"),
        ({"errors": 20}, "errors.count", "spike"),
        ({"latency": 2.0}, "llm_latency.mean", "spike"),
        ({"tokens": 200_000}, "llm_tokens.total", "spike"),
    ],
)
def test_the_detector_fires_on_an_injected_spike_or_drop(figures, watch, kind):
    rng = np.random.default_rng(5)
    detector = AnomalyDetector()
    for minute in range(30):
        assert detector.check(minute * 60, steady_window(rng, minute * 60)) == []
    usual = {"messages": 600, "errors": 2, "latency": 0.8, "tokens": 60_000}
    [anomaly] = detector.check(30 * 60, window_rows(30 * 60, **{**usual, **figures}))
    assert (anomaly.watch, anomaly.kind, anomaly.window_start) == (watch, kind, 30 * 60)
    assert abs(anomaly.z) > 3
    # A drop in errors or latency is good news, not an alert.
    assert detector.check(31 * 60, window_rows(31 * 60, 600, 0, 0.2, 60_000)) == []


@pytest.mark.parametrize(("warmup", "reported"), [(5, False), (4, True)])
def test_the_detector_reports_nothing_during_its_warmup(warmup, reported):
    detector = AnomalyDetector(warmup=warmup)
    for minute in range(4):
        assert detector.check(minute * 60, window_rows(minute * 60, 600, 0, 0.8, 100)) == []
    assert bool(detector.check(240, window_rows(240, 6000, 0, 0.8, 100))) is reported  # the fifth window


async def test_a_silent_minute_and_a_traffic_spike_raise_analytics_alerts(autojump_clock, tmp_path):
    alerts = AlertLog()
    analytics = make(tmp_path, alerts=alerts)
    per_minute = [300] * 10 + [0, 300, 3000]
    async with running(analytics):
        for messages in per_minute:
            for _ in range(60):
                for _ in range(messages // 60):
                    analytics.emit("message_processed", "normal", latency=0.3)
                await trio.sleep(1)
        await trio.sleep(1)
    [drop, spike] = alerts.recent("analytics")
    assert (drop.source, drop.kind, drop.details["watch"]) == ("analytics", "drop", "messages.count")
    assert (drop.details["window_start"], drop.details["value"]) == (T0 + 600, 0)
    assert (spike.kind, spike.details["watch"]) == ("spike", "messages.count")
    assert (spike.details["window_start"], spike.details["value"]) == (T0 + 720, 3000)
    assert analytics.stats()["anomalies"] == 2
    assert "3000" in spike.message


# -- privacy and retention ---------------------------------------------------------------------


async def test_forget_user_deletes_stored_and_queued_events_of_that_user_only(autojump_clock, tmp_path):
    analytics = make(tmp_path)
    async with running(analytics):
        for user in ("alice", "bob", 12345):
            analytics.emit("command_used", "normal", command="help", user_id=user)
        await trio.sleep(2)  # written
        analytics.emit("command_used", "normal", command="ask", user_id="alice")  # still queued
        analytics.emit("command_used", "normal", command="ask", user_id="12345")  # the same user as 12345
        assert await analytics.forget_user("alice") == 1
        assert await analytics.forget_user(12345) == 1
        assert analytics.stats()["queued"] == 0
        analytics.emit("command_used", "normal", command="ask", user_id="carol")  # after: kept
    hashes = query(tmp_path, "SELECT user_hash FROM events ORDER BY id")
    assert hashes == [(analytics.store.user_hash("bob"),), (analytics.store.user_hash("carol"),)]
    assert all("bob" not in h for (h,) in hashes)  # salted hashes, never the id


def test_the_salt_is_created_once_and_kept_when_none_is_configured(tmp_path):
    def digest(path, salt=None):
        store = AnalyticsStore(path, salt=salt)
        try:
            return store.user_hash("alice")
        finally:
            store.close()

    first = digest(tmp_path / "a.db")
    assert digest(tmp_path / "a.db") == first  # the stored salt again
    assert digest(tmp_path / "b.db") != first  # another database, another salt
    assert digest(tmp_path / "a.db", salt="configured") != first
    assert digest(tmp_path / "c.db", salt="configured") == digest(tmp_path / "a.db", salt="configured")
    [(salt,)] = sqlite3.connect(tmp_path / "a.db").execute("SELECT value FROM meta WHERE key = 'user_salt'")
    assert len(bytes.fromhex(salt)) == 32
    assert sqlite3.connect(tmp_path / "c.db").execute("SELECT count(*) FROM meta").fetchone() == (0,)  # never stored


async def test_retention_runs_at_start_and_daily_on_the_timer_wheel(autojump_clock, tmp_path):
    wheel = TimerWheel()
    analytics = make(tmp_path, timers=wheel, retention_days=90)
    assert analytics.depends_on == ("timers",)
    # An old run: events and windows 100 and 89.5 days before T0.
    for days in (100, 89.5):
        old = make(tmp_path, wall_clock=WallClock(T0 - days * DAY))
        old.emit("command_used", "normal", command=f"{days} days ago")
        await old.flush()
    async with trio.open_nursery() as nursery:
        await nursery.start(wheel.run)
        async with running(analytics):
            labels = query(tmp_path, "SELECT label FROM events")
            assert labels == [("89.5 days ago",)]  # the 100-day-old row went at start
            assert query(tmp_path, "SELECT count(*) FROM aggregates") == [(1,)]
            await trio.sleep(DAY + 1)  # the daily run: now the other is 90.5 days old
            await trio.testing.wait_all_threads_completed()
            assert query(tmp_path, "SELECT count(*) FROM events") == [(0,)]
            assert query(tmp_path, "SELECT count(*) FROM aggregates") == [(0,)]
        nursery.cancel_scope.cancel()
    assert wheel.stats.jobs == 0  # the job was cancelled when the service stopped


# -- report ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("24h", 86400), ("7d", 604800), ("90s", 90), ("1.5h", 5400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "0m", "1y", "1h30m"])
def test_parse_duration_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_duration(text)


async def seed_database(tmp_path, now):
    """A database with a known day of traffic ending one hour before *now*, and an older day."""
    for start, scale in ((now - 2 * DAY, 1), (now - 3 * 3600, 2)):
        analytics = make(tmp_path, wall_clock=WallClock(start), sample_rates={"cache_hit": 0.1})
        for i in range(100 * scale):
            analytics.emit("message_processed", "normal", user_id=i % 7, latency=0.5)
        for command, uses in (("help", 30), ("ask", 50), ("persona", 5)):
            for _ in range(uses * scale):
                analytics.emit("command_used", "normal", command=command)
        for i in range(100):  # latencies 10 ms .. 1000 ms
            analytics.emit("llm_call", "normal", provider="gemini", latency=(i + 1) / 100, tokens=200, status="ok")
        analytics.emit("llm_call", "normal", provider="local", latency=2.0, tokens=50, status="timeout")
        for error, count in (("TimeoutError", 3), ("HTTPError", 1)):
            for _ in range(count * scale):
                analytics.emit("error", "high", type=error)
        for _ in range(300):
            analytics.emit("cache_hit", "low", cache="response")
        for _ in range(100):
            analytics.emit("cache_miss", "low", cache="response")
        for _ in range(7):
            analytics.emit("rate_limited", "low", scope="user-minute")
        await analytics.flush()


async def test_report_prints_the_last_24_hours(tmp_path, capsys):
    now = time.time()
    await seed_database(tmp_path, now)
    assert main(["report", "--since", "24h", "--db", str(tmp_path / "analytics.db")]) == 0
    out = capsys.readouterr().out
    expected = [
        "messages: 200",
        "top commands:",
        "  ask                             100",
        "  help                             60",
        "  persona                          10",
        "errors: 8 (4.00% of messages)",
        "  TimeoutError                      6  3.00%",
        "  HTTPError                         2  1.00%",
        "llm calls: 101",
        "  ok                              100",
        "  timeout                           1",
        "llm latency: p50 510 ms  p90 910 ms  p95 960 ms  p99 1000 ms (from 101 stored calls)",
        "cache: 300 hits, 100 misses, hit rate 75.0%",
        "tokens: 20,050",
        "  gemini                       20,000",
        "  local                            50",
        "rate-limit denials: 7",
        "  user-minute                       7",
        "shed: 0",
    ]
    lines = out.splitlines()
    assert lines[3:] == expected, out
    # The same database over a week counts both days.
    assert main(["report", "--since", "7d", "--db", str(tmp_path / "analytics.db")]) == 0
    assert "messages: 300" in capsys.readouterr().out


def test_report_on_a_missing_database_is_a_clear_error(tmp_path, capsys):
    assert main(["report", "--db", str(tmp_path / "nothing.db")]) == 1
    assert not (tmp_path / "nothing.db").exists()
    assert "no analytics database at" in capsys.readouterr().err


def test_report_on_a_foreign_database_is_a_clear_error(tmp_path, capsys):
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    assert main(["report", "--db", str(tmp_path / "other.db")]) == 1
    assert "not a triobot analytics database" in capsys.readouterr().err


def test_report_refuses_a_bad_duration(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--since", "soon"])
    assert exit_info.value.code == 2
    assert "not a duration" in capsys.readouterr().err


# -- a real crash --------------------------------------------------------------------------------

KILLS = 5
CRASH_TEST_BUDGET = 20.0  # seconds of real time for the whole test


def test_sigkill_loses_at_most_the_batch_in_flight_and_leaves_a_sound_database(tmp_path):
    rng = random.Random(20261201)
    path = tmp_path / "analytics.db"
    give_up = time.monotonic() + CRASH_TEST_BUDGET
    rows = 0
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for kill in range(KILLS):
        out = tmp_path / f"child{kill}.out"
        with open(out, "wb") as stdout, open(f"{out}.err", "wb") as stderr:
            proc = subprocess.Popen([sys.executable, str(CHILD), str(path)], stdout=stdout, stderr=stderr, env=env)
        try:
            while not out.read_text().startswith("ready"):
                assert proc.poll() is None, Path(f"{out}.err").read_text()
                assert time.monotonic() < give_up, "child never got ready"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.2, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lines = out.read_text().split("\n")[:-1]  # complete lines only
        assert lines[0] == f"ready {rows}"  # resumed from exactly what the last check found
        committed = [int(line.split()[1]) for line in lines[1:]]
        assert committed, "no commit before the kill"
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            [(rows,)] = conn.execute("SELECT count(*) FROM events")
        finally:
            conn.close()
        assert rows >= committed[-1]  # nothing committed was lost
        assert rows <= committed[-1] + 500  # at most the batch that was committing when killed
    assert time.monotonic() < give_up, f"{KILLS} kills took longer than {CRASH_TEST_BUDGET} s"
