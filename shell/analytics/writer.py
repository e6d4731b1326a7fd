"""The analytics database: schema and migrations, the SQLite store, and the writer service.

:class:`AnalyticsStore` is the blocking side: one SQLite connection in WAL
mode, opened (and migrated) on first use. Every method blocks; the service
calls them through ``trio.to_thread.run_sync``, one at a time.

:class:`Analytics` is the service the runtime owns. Its ``emit`` is
:meth:`shell.analytics.events.Emitter.emit` (synchronous, never awaits). Its
writer task takes a batch from the queues when one is due and writes it, with
the aggregate rows of the windows closed since, in one transaction. A batch
is due when ``batch_size`` events wait, when the oldest event has waited
``max_delay`` (1 s), or when the oldest high-priority event has waited
``high_delay`` (100 ms). Retention runs once at start and then daily on the
TimerWheel; :meth:`Analytics.flush` drains every queued event at shutdown.

Schema (``PRAGMA user_version`` = number of :data:`MIGRATIONS` applied):

- ``events``: one row per stored event: ``at`` (POSIX seconds), ``type``,
  ``weight`` (1 / sample rate), ``user_hash`` (keyed BLAKE2b of the user id
  with the salt), ``label`` (the type's label field: command, provider,
  error type, ...), ``latency``, ``tokens``, ``status``, ``detail`` (JSON of
  the other fields).
- ``aggregates``: one row per series and closed 1-minute window
  (:class:`shell.analytics.aggregate.AggregateRow`). Totals come from here:
  they count every event, sampled out or not.
- ``meta``: ``key``/``value`` settings; ``user_salt`` when none is configured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import secrets
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import trio

from shell.analytics.aggregate import WINDOW, AggregateRow, Aggregator, AnomalyDetector, Window, window_stats
from shell.analytics.events import EVENTS, Emitter, Priority, QueuedEvent
from shell.monitor.alerts import Alert, AlertLog, Severity
from shell.ratelimit import WallClock
from shell.service import Service
from shell.sqlitedb import apply_migrations
from shell.timers import TimerHandle, TimerWheel

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PATH", "MIGRATIONS", "SCHEMA_VERSION", "Analytics", "AnalyticsStore", "SchemaError", "migrate"]

DEFAULT_PATH = Path("data/analytics.db")
DAY = 86400.0
MAX_RETRY_DELAY = 30.0  # seconds between attempts to write a batch that failed

#: Migration *n* (1-based) takes the schema from version n-1 to n. Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: events and settings
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            type TEXT NOT NULL,
            weight REAL NOT NULL DEFAULT 1.0,
            user_hash TEXT,
            label TEXT,
            latency REAL,
            tokens INTEGER,
            status TEXT,
            detail TEXT
        ) STRICT""",
        "CREATE INDEX events_by_time ON events (at)",
    ),
    (  # 2: per-minute aggregates
        """CREATE TABLE aggregates (
            id INTEGER PRIMARY KEY,
            start INTEGER NOT NULL,
            metric TEXT NOT NULL,
            label TEXT NOT NULL,
            count INTEGER NOT NULL,
            n INTEGER NOT NULL,
            total REAL NOT NULL,
            mean REAL,
            p50 REAL,
            p90 REAL,
            p95 REAL,
            p99 REAL,
            std REAL,
            reservoir INTEGER NOT NULL,
            partial INTEGER NOT NULL
        ) STRICT""",
        "CREATE INDEX aggregates_by_time ON aggregates (start, metric)",
    ),
    (  # 3: forget_user finds a user's rows by index
        "CREATE INDEX events_by_user ON events (user_hash)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_INSERT_EVENT = (
    "INSERT INTO events (at, type, weight, user_hash, label, latency, tokens, status, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_AGGREGATE = (
    "INSERT INTO aggregates (start, metric, label, count, n, total, mean, p50, p90, p95, p99, std, reservoir, partial)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COLUMN_FIELDS = frozenset({"user_id", "latency", "tokens", "status"})  # fields with a column of their own


class SchemaError(RuntimeError):
    """The database's schema is newer than this program knows; nothing was changed."""


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring *conn*'s database to schema version *target*; return the version found.

    One transaction per migration (see :func:`shell.sqlitedb.apply_migrations`).
    Raises :class:`SchemaError` if the database is newer than *target*.
    """
    return apply_migrations(conn, MIGRATIONS, target, name="analytics", newer_error=SchemaError)


class AnalyticsStore:
    """The SQLite database behind analytics. Blocking: call from a worker thread, one call at a time.

    Opens lazily (:meth:`open`): creates the parent directory, sets WAL mode
    and ``synchronous`` (``NORMAL`` by default: a committed batch survives a
    crash of the process, the last ones may be lost with the machine),
    migrates the schema, and loads or creates the user salt. *salt* (str or
    bytes) is used as given and never stored; without it, a random salt is
    created on first use and kept in ``meta``.

    ``commits`` counts the transactions committed by :meth:`write`;
    ``rows_written`` the event rows they held.
    """

    def __init__(self, path: str | Path = DEFAULT_PATH, *, salt: str | bytes | None = None, synchronous: str = "NORMAL"):
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        if salt is not None and not salt:
            raise ValueError("salt must not be empty")
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        self.commits = 0
        self.rows_written = 0
        self._salt = salt.encode() if isinstance(salt, str) else salt
        self._key: bytes | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def open(self) -> None:
        """Connect, migrate and load the salt; does nothing if already open.

        Raises :class:`SchemaError` for a newer schema and :class:`sqlite3.Error` for
        a file that is not a usable database; the store then stays closed.
        """
        if self._conn is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            migrate(conn)
            self._key = hashlib.blake2b(self._salt or self._stored_salt(conn), digest_size=32).digest()
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def close(self) -> None:
        """Close the connection (idempotent); the next call that needs it reopens it."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _stored_salt(self, conn: sqlite3.Connection) -> bytes:
        row = conn.execute("SELECT value FROM meta WHERE key = 'user_salt'").fetchone()
        if row is not None:
            return bytes.fromhex(row[0])
        salt = secrets.token_bytes(32)
        conn.execute("INSERT INTO meta (key, value) VALUES ('user_salt', ?)", (salt.hex(),))
        return salt

    def user_hash(self, user_id: object) -> str:
        """The stored form of a user id: keyed BLAKE2b of ``str(user_id)``, 32 hex digits."""
        self.open()
        return hashlib.blake2b(str(user_id).encode("utf-8", "surrogatepass"), key=self._key, digest_size=16).hexdigest()

    def _connection(self) -> sqlite3.Connection:
        self.open()
        assert self._conn is not None
        return self._conn

    def write(self, events: Sequence[QueuedEvent], windows: Sequence[Window]) -> list[list[AggregateRow]]:
        """Store *events* and the aggregate rows of *windows* in one transaction.

        Returns the rows of each window (computed with numpy before the
        transaction begins). On any error the transaction is rolled back,
        nothing is stored, and the error propagates.
        """
        conn = self._connection()
        stats = [window_stats(window) for window in windows]
        rows = [self._event_row(event) for event in events]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT_EVENT, rows)
            conn.executemany(_INSERT_AGGREGATE, [row for window_rows in stats for row in window_rows])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.commits += 1
        self.rows_written += len(rows)
        return stats

    def _event_row(self, event: QueuedEvent) -> tuple:
        at, event_type, weight, fields = event
        label_field = EVENTS[event_type].label
        user_id = fields.get("user_id")
        detail = {name: value for name, value in fields.items() if name not in _COLUMN_FIELDS and name != label_field}
        return (
            at,
            event_type,
            weight,
            None if user_id is None else self.user_hash(user_id),
            fields.get(label_field) if label_field else None,
            fields.get("latency"),
            fields.get("tokens"),
            fields.get("status"),
            json.dumps(detail, default=str, sort_keys=True) if detail else None,
        )

    def delete_user(self, user_id: object) -> int:
        """Delete every event row of *user_id*; return how many."""
        conn = self._connection()
        return conn.execute("DELETE FROM events WHERE user_hash = ?", (self.user_hash(user_id),)).rowcount

    def delete_before(self, cutoff: float) -> tuple[int, int]:
        """Delete events and aggregate windows older than POSIX time *cutoff*; return (events, aggregate rows)."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            events = conn.execute("DELETE FROM events WHERE at < ?", (cutoff,)).rowcount
            # A window goes once it has ended before the cutoff.
            aggregates = conn.execute("DELETE FROM aggregates WHERE start <= ?", (cutoff - WINDOW,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return events, aggregates


class Analytics(Service):
    """The analytics service (name ``"analytics"``): emit, write behind, aggregate, detect, retain.

    ``emit(event_type, priority="normal", **fields)`` is
    :meth:`shell.analytics.events.Emitter.emit`: call it from the Trio thread;
    it never awaits. Settings: ``sample_rates`` (see
    :data:`shell.analytics.events.DEFAULT_SAMPLE_RATES`), ``max_queued``
    (shared queue capacity), ``batch_size`` (events per transaction at
    most), ``max_delay``/``high_delay`` (seconds the oldest event / high
    event may wait), ``retention_days``, ``reservoir_size`` (values kept per
    window and series), ``detector`` (an :class:`AnomalyDetector`; anomalies
    go to ``alerts`` as source ``"analytics"``), ``wall_clock`` (POSIX time,
    default :class:`shell.ratelimit.WallClock`), ``seed`` (for sampling
    and reservoirs). With ``timers`` the service depends on that wheel and
    registers the daily retention job on it.

    Errors: a failed write is logged, counted (``write_errors``) and retried
    with backoff (up to 30 s apart); the batch is kept meanwhile and events
    keep queueing (and, at capacity, being dropped by priority). Opening the
    database may fail in :meth:`run` (a crash, restarted under the service's
    policy, ``"always"`` by default).

    Cancellation: a write in progress always completes (SQLite work in a
    thread is not abandoned), so a batch is either committed or still held.
    """

    name = "analytics"
    restart = "always"

    def __init__(
        self,
        store: AnalyticsStore,
        *,
        alerts: AlertLog | None = None,
        timers: TimerWheel | None = None,
        sample_rates: Mapping[str, float] | None = None,
        max_queued: int = 50_000,
        batch_size: int = 500,
        max_delay: float = 1.0,
        high_delay: float = 0.1,
        retention_days: float = 90.0,
        reservoir_size: int = 10_000,
        detector: AnomalyDetector | None = None,
        wall_clock: Callable[[], float] | None = None,
        seed: int | None = None,
        name: str | None = None,
        **settings,
    ) -> None:
        if timers is not None and "depends_on" not in settings:
            settings["depends_on"] = (timers.name,)
        super().__init__(name, **settings)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size!r}")
        if not 0 < high_delay <= max_delay:
            raise ValueError(f"need 0 < high_delay <= max_delay, got {high_delay!r}, {max_delay!r}")
        if not retention_days > 0:
            raise ValueError(f"retention_days must be > 0, not {retention_days!r}")
        rng = random.Random(seed)
        self.store = store
        self.alerts = alerts
        self.timers = timers
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.high_delay = high_delay
        self.retention_days = retention_days
        self.detector = detector or AnomalyDetector()
        self.aggregator = Aggregator(reservoir_size=reservoir_size, random_source=rng.random)
        self._wall = wall_clock or WallClock()
        self.emitter = Emitter(
            self.aggregator,
            self._wall,
            sample_rates=sample_rates,
            capacity=max_queued,
            batch_size=batch_size,
            random_source=rng.random,
        )
        self.emitter.wake = self._wake
        self.emit = self.emitter.emit
        self.write_errors = 0
        self.max_high_wait = 0.0  # longest a high event waited before its batch was taken (seconds)
        self.anomalies = 0
        self._wakeup = trio.Event()
        self._lock = trio.Lock()  # one database call at a time, and batches taken under it
        self._unwritten: list[QueuedEvent] = []  # a batch whose write failed, retried first
        self._pending_windows: list[Window] = []
        self._failures = 0
        self._retry_at = 0.0
        self._retention: TimerHandle | None = None

    # -- the writer task -------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the database, apply retention, then write batches as they fall due, until cancelled."""
        async with self._lock:
            await trio.to_thread.run_sync(self.store.open)
        await self.apply_retention()
        if self.timers is not None:
            self._retention = self.timers.every(DAY, self.apply_retention, name="analytics-retention")
        self._pending_windows.extend(self.aggregator.close_due(self._wall()))  # opens the current window
        task_status.started()
        try:
            while True:
                await self._wait_until_due()
                await self._write_due()
        finally:
            if self._retention is not None:
                self._retention.cancel()
                self._retention = None

    def _wake(self) -> None:
        self._wakeup.set()

    def _next_due(self, now: float) -> float:
        """POSIX time at which the writer should next write (<= now: at once)."""
        if self._unwritten:
            return self._retry_at
        queues = self.emitter.queues
        if queues.size >= self.batch_size:
            return now
        due = self.aggregator.current_end
        oldest = queues.oldest()
        if oldest is not None:
            due = min(due, oldest + self.max_delay)
        oldest_high = queues.oldest((Priority.HIGH,))
        if oldest_high is not None:
            due = min(due, oldest_high + self.high_delay)
        return due

    async def _wait_until_due(self) -> None:
        while True:
            now = self._wall()
            due = self._next_due(now)
            if due <= now:
                return
            self._wakeup = trio.Event()
            with trio.move_on_after(due - now):
                await self._wakeup.wait()

    async def _write_due(self) -> None:
        """Write one due batch with the windows closed since; on failure keep both for a retry."""
        self._pending_windows.extend(self.aggregator.close_due(self._wall()))
        async with self._lock:
            try:
                windows, stats = await self._write_pending()
            except Exception:
                self._failures += 1
                self.write_errors += 1
                self._retry_at = self._wall() + min(MAX_RETRY_DELAY, 0.5 * 2**self._failures)
                logger.exception("analytics: writing %d events failed; will retry", len(self._unwritten))
                return
            self._failures = 0
        self._detect(windows, stats)

    async def _write_pending(self) -> tuple[list[Window], list[list[AggregateRow]]]:
        """Write the next batch (the failed one first) and the pending windows in one transaction.

        Call holding the lock. Returns the windows written and their rows. On
        any error (or cancellation before the thread starts) the batch and the
        windows are kept for the next attempt, and the error propagates.
        """
        now = self._wall()
        if self._unwritten:
            batch, self._unwritten = self._unwritten, []
        else:
            oldest_high = self.emitter.queues.oldest((Priority.HIGH,))
            if oldest_high is not None:
                self.max_high_wait = max(self.max_high_wait, now - oldest_high)
            batch = self.emitter.queues.take(self.batch_size)
        windows, self._pending_windows = self._pending_windows, []
        try:
            if batch or any(window.series for window in windows):
                stats = await trio.to_thread.run_sync(self.store.write, batch, windows)
            else:
                stats = [[] for _ in windows]  # only empty windows: nothing to store
        except BaseException:
            self._unwritten = batch
            self._pending_windows[:0] = windows
            raise
        return windows, stats

    def _detect(self, windows: Sequence[Window], stats: Sequence[list[AggregateRow]]) -> None:
        for window, rows in zip(windows, stats, strict=True):
            if window.partial:
                continue  # cut short at shutdown: its counts are not comparable
            for anomaly in self.detector.check(window.start, rows):
                self.anomalies += 1
                if self.alerts is None:
                    logger.warning("analytics anomaly: %s", anomaly)
                    continue
                direction = "above" if anomaly.kind == "spike" else "below"
                self.alerts.raise_alert(
                    Alert(
                        source="analytics",
                        kind=anomaly.kind,
                        severity=Severity.WARNING,
                        message=(
                            f"{anomaly.watch} was {anomaly.value:.4g} in the minute from {window.start}, "
                            f"{abs(anomaly.z):.1f} sd {direction} its recent mean {anomaly.mean:.4g}"
                        ),
                        at=trio.current_time(),
                        details={
                            "watch": anomaly.watch,
                            "window_start": anomaly.window_start,
                            "value": anomaly.value,
                            "mean": anomaly.mean,
                            "std": anomaly.std,
                            "z": anomaly.z,
                        },
                    )
                )

    # -- shutdown, privacy, retention, statistics -------------------------

    async def flush(self) -> None:
        """Close the open window (as ``partial``) and write every queued event and window.

        Runs after the writer task has stopped. Writes in batches of
        ``batch_size`` until the queues are empty, then closes the database
        (a later write reopens it). Raises the database's error if a write
        fails; what was not written is kept in memory.
        """
        self._pending_windows.extend(self.aggregator.close_all(self._wall()))
        async with self._lock:
            while self._unwritten or self.emitter.queues.size or self._pending_windows:
                windows, stats = await self._write_pending()
                self._detect(windows, stats)
            await trio.to_thread.run_sync(self.store.close)
        logger.info("analytics flushed: %d event rows written in %d transactions", self.store.rows_written, self.store.commits)

    async def forget_user(self, user_id: str | int) -> int:
        """Delete everything stored about *user_id*, queued events included; return the rows deleted.

        Queued events of the user are dropped at once (no await before it),
        so nothing of theirs emitted before this call is written later.
        Raises the database's error if the delete fails.
        """
        key = str(user_id)

        def keep(event: QueuedEvent) -> bool:
            user = event[3].get("user_id")
            return user is None or str(user) != key

        self.emitter.queues.purge(keep)
        self._unwritten = [event for event in self._unwritten if keep(event)]
        async with self._lock:
            self._unwritten = [event for event in self._unwritten if keep(event)]
            deleted = await trio.to_thread.run_sync(self.store.delete_user, user_id)
        logger.info("analytics: forgot a user (%d stored events deleted)", deleted)
        return deleted

    async def apply_retention(self) -> tuple[int, int]:
        """Delete events and aggregates older than ``retention_days``; return (events, aggregate rows) deleted."""
        cutoff = self._wall() - self.retention_days * DAY
        async with self._lock:
            events, aggregates = await trio.to_thread.run_sync(self.store.delete_before, cutoff)
        if events or aggregates:
            logger.info("analytics retention: deleted %d events and %d aggregate rows", events, aggregates)
        return events, aggregates

    def stats(self) -> dict[str, object]:
        """Counters since creation: events emitted, sampled out, dropped, queued, written; writes; anomalies."""
        emitter = self.emitter
        return {
            "emitted": sum(emitter.emitted.values()),
            "emitted_by_type": dict(emitter.emitted),
            "sampled_out": sum(emitter.sampled_out.values()),
            "sampled_out_by_type": dict(emitter.sampled_out),
            "dropped": {priority.value: count for priority, count in emitter.queues.dropped.items()},
            "queued": emitter.queues.size + len(self._unwritten),
            "rows_written": self.store.rows_written,
            "commits": self.store.commits,
            "write_errors": self.write_errors,
            "max_high_wait": self.max_high_wait,
            "windows_discarded": self.aggregator.discarded,
            "anomalies": self.anomalies,
        }
