"""SQLite persistence for the bot's memory: conversations and server memory, written behind.

One database file holds both. Its tables (schema version :data:`SCHEMA_VERSION`,
kept in ``PRAGMA user_version`` and brought up to date by :data:`MIGRATIONS`
when the file is opened):

- ``conversations(scope, user_id, last_at, first_seq, next_seq)``: one row per
  conversation; its live turns are the ones numbered ``first_seq`` up to
  ``next_seq - 1``.
- ``turns(scope, user_id, seq, role, text, at)``: one row per turn.
- ``server_items(guild_id, item_id, kind, user_id, text, count, created_at, last_seen)``:
  the per-guild memory of :mod:`shell.memory.server`.

The in-memory owners (:class:`~shell.memory.conversations.Conversations`,
:class:`~shell.memory.server.ServerMemory`) are *sources*: they register with
:meth:`MemoryStore.add_source`, call :meth:`MemoryStore.changed` when they hold
something not yet written, and fill a :class:`Batch` when asked. The store
writes every source's batch in one transaction (``executemany`` per
statement) at most every ``write_interval`` seconds (2 s) while anything
changed, and at once on :meth:`MemoryStore.flush`.

The database runs in WAL mode with ``synchronous=FULL``: a committed batch
survives a crash and a power loss; a crash loses at most the changes of the
last ``write_interval`` seconds, never half a batch. All SQLite work runs in a
worker thread (``trio.to_thread.run_sync``) on one connection, which a
:class:`trio.Lock` hands to one call at a time; such calls cannot be
cancelled midway (a cancellation takes effect once the thread returns).
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

import trio

from shell.service import Service
from shell.sqlitedb import apply_migrations

logger = logging.getLogger(__name__)

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Batch",
    "MemoryStore",
    "StoreError",
    "StoredConversation",
    "WriteSource",
]

DEFAULT_WRITE_INTERVAL = 2.0

# MIGRATIONS[n] takes a database from schema version n to n + 1; a new file is version 0.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE conversations (
            scope TEXT NOT NULL,
            user_id TEXT NOT NULL,
            last_at REAL NOT NULL,
            first_seq INTEGER NOT NULL,
            next_seq INTEGER NOT NULL,
            PRIMARY KEY (scope, user_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX conversations_by_user ON conversations (user_id)",
        "CREATE INDEX conversations_by_last_at ON conversations (last_at)",
        """CREATE TABLE turns (
            scope TEXT NOT NULL,
            user_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            text TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (scope, user_id, seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX turns_by_user ON turns (user_id)",
        """CREATE TABLE server_items (
            guild_id TEXT NOT NULL,
            item_id INTEGER NOT NULL,
            kind TEXT NOT NULL,
            user_id TEXT,
            text TEXT NOT NULL,
            count INTEGER NOT NULL,
            created_at REAL NOT NULL,
            last_seen REAL NOT NULL,
            PRIMARY KEY (guild_id, item_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX server_items_by_user ON server_items (user_id)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_UPSERT_CONVERSATION = """
    INSERT INTO conversations (scope, user_id, last_at, first_seq, next_seq) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (scope, user_id) DO UPDATE SET
        last_at = excluded.last_at, first_seq = excluded.first_seq, next_seq = excluded.next_seq"""
_CUT_TURNS = "DELETE FROM turns WHERE scope = ? AND user_id = ? AND seq < ?"
_INSERT_TURN = "INSERT OR REPLACE INTO turns (scope, user_id, seq, role, text, at) VALUES (?, ?, ?, ?, ?, ?)"
_UPSERT_ITEM = """
    INSERT OR REPLACE INTO server_items
        (guild_id, item_id, kind, user_id, text, count, created_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""
_DELETE_ITEM = "DELETE FROM server_items WHERE guild_id = ? AND item_id = ?"

T = TypeVar("T")


class StoreError(RuntimeError):
    """The database cannot be used: written by a newer triobot (schema version too high)."""


class StoredConversation(NamedTuple):
    """A conversation as the database holds it: ``turns`` are ``(seq, role, text, at)``, oldest first."""

    last_at: float
    first_seq: int
    next_seq: int
    turns: list[tuple[int, str, str, float]]


@dataclass
class Batch:
    """The rows of one write transaction, filled by the sources.

    Each list holds the parameter tuples of one statement: ``conversations``
    ``(scope, user_id, last_at, first_seq, next_seq)`` upserted;
    ``turn_cuts`` ``(scope, user_id, first_seq)``: turns numbered below
    ``first_seq`` deleted; ``turns`` ``(scope, user_id, seq, role, text, at)``
    inserted; ``items`` ``(guild_id, item_id, kind, user_id, text, count,
    created_at, last_seen)`` upserted; ``item_deletes`` ``(guild_id, item_id)``.
    The statements run in that order. ``on_commit`` callbacks run (in the
    Trio thread) once the transaction has committed, and only then.
    """

    conversations: list[tuple] = field(default_factory=list)
    turn_cuts: list[tuple] = field(default_factory=list)
    turns: list[tuple] = field(default_factory=list)
    items: list[tuple] = field(default_factory=list)
    item_deletes: list[tuple] = field(default_factory=list)
    on_commit: list[Callable[[], None]] = field(default_factory=list)

    def rows(self) -> int:
        return (
            len(self.conversations) + len(self.turn_cuts) + len(self.turns)
            + len(self.items) + len(self.item_deletes)
        )  # fmt: skip


class WriteSource(Protocol):
    """What :meth:`MemoryStore.add_source` accepts."""

    def collect_writes(self, batch: Batch) -> None:
        """Add every change not yet written to *batch*, and an ``on_commit`` callback
        that marks them written. Synchronous; must not raise."""


class MemoryStore(Service):
    """The memory database: lazy loads, write-behind batches, deletions. A Service named ``"memory-store"``.

    *path* is the database file (created if missing; ``":memory:"`` for a
    throwaway database). The connection opens on first use (or in
    :meth:`run`): WAL mode, ``synchronous=FULL``, migrations applied; a
    database with a newer schema raises :exc:`StoreError`.

    :meth:`run` opens the database, reports ready, then writes behind:
    ``write_interval`` seconds after a source reported a change, one
    transaction with every source's pending rows. A failed write
    (``sqlite3.Error`` or ``OSError``) is logged, counted and retried one
    interval later; the rows stay pending in their sources meanwhile.
    :meth:`flush` writes at once (the runtime calls it at shutdown) and
    raises on failure. The connection stays open after :meth:`flush` so
    later calls still work; :meth:`aclose` writes and closes it.
    """

    name = "memory-store"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        write_interval: float = DEFAULT_WRITE_INTERVAL,
        name: str | None = None,
        **settings,
    ) -> None:
        super().__init__(name, **settings)
        if isinstance(write_interval, bool) or not isinstance(write_interval, (int, float)):
            raise TypeError(f"write_interval must be a number, not {type(write_interval).__name__}")
        if not 0 < write_interval < math.inf:
            raise ValueError(f"write_interval must be a finite number > 0, not {write_interval!r}")
        self.path = os.fspath(path)
        self.write_interval = float(write_interval)
        self._sources: list[WriteSource] = []
        self._connection: sqlite3.Connection | None = None
        self._lock = trio.Lock()  # one SQLite call at a time, so one thread uses the connection at a time
        self._pending = False  # a source reported a change not yet collected
        self._wakeup = trio.Event()  # set by changed(); replaced by the writer before it waits
        self._batches = 0
        self._rows_written = 0
        self._write_errors = 0
        self._loads = 0

    def __repr__(self) -> str:
        return f"<MemoryStore {self.path!r}>"

    # -- sources -----------------------------------------------------------

    def add_source(self, source: WriteSource) -> None:
        """Collect *source*'s pending rows in every write from now on."""
        if not callable(getattr(source, "collect_writes", None)):
            raise TypeError(f"{type(source).__name__} has no collect_writes(batch) method")
        self._sources.append(source)

    def changed(self) -> None:
        """A source has rows to write: the writer writes within ``write_interval``. Cheap; never blocks."""
        if not self._pending:
            self._pending = True
            self._wakeup.set()

    # -- the service ---------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the database, report ready, then write behind until cancelled.

        A failure to open (``sqlite3.Error``, ``OSError``, :exc:`StoreError`)
        is raised before ready, so the runtime sees a crash. Cancellation
        waits for a write in progress to finish.
        """
        await self.open()
        task_status.started()
        while True:
            if not self._pending:
                # Only this loop replaces the event, right before waiting on it.
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            await trio.sleep(self.write_interval)
            try:
                await self.write()
            except (sqlite3.Error, OSError):
                logger.exception("writing memory to %s failed; retrying in %.3g s", self.path, self.write_interval)

    async def flush(self) -> None:
        """Write every source's pending rows now, in one transaction.

        Raises ``sqlite3.Error`` or ``OSError`` if the write fails (the rows
        stay pending).
        """
        await self.write()

    async def open(self) -> None:
        """Open the database and migrate it, if not done yet. Idempotent.

        Raises :exc:`StoreError` for a schema newer than this code knows,
        ``sqlite3.Error``/``OSError`` if the file cannot be opened.
        """
        async with self._lock:
            await trio.to_thread.run_sync(self._connect)

    async def aclose(self) -> None:
        """Write what is pending, then close the connection (a later call reopens it)."""
        await self.write()
        async with self._lock:
            if self._connection is not None:
                connection, self._connection = self._connection, None
                await trio.to_thread.run_sync(connection.close)

    # -- operations ------------------------------------------------------------

    async def write(self, then: Callable[[sqlite3.Connection], T] | None = None) -> T | None:
        """Write every source's pending rows in one transaction; return ``then(connection)``.

        *then*, if given, runs in the same transaction after the rows (the
        deletions of :meth:`forget_user` and :meth:`delete_idle` use it, so
        they see everything memory has written). The rows are collected once
        the lock is held, so a change made while an earlier write runs is in
        this one. On failure the transaction is rolled back, the rows stay
        pending (counted in ``write_errors``) and the error propagates.
        """
        async with self._lock:
            self._pending = False
            batch = Batch()
            for source in self._sources:
                source.collect_writes(batch)
            if not batch.rows() and then is None:
                return None
            try:
                result = await trio.to_thread.run_sync(self._apply, batch, then)
            except BaseException as error:
                self._pending = True  # nothing was marked written: the rows go in the next write
                if isinstance(error, Exception):
                    self._write_errors += 1
                raise
            self._batches += 1
            self._rows_written += batch.rows()
            for committed in batch.on_commit:
                committed()
            return result

    async def load_conversation(self, scope: str, user_id: str) -> StoredConversation | None:
        """The stored conversation ``(scope, user_id)`` with its live turns, or None if there is none."""
        async with self._lock:
            stored = await trio.to_thread.run_sync(self._load_conversation, scope, user_id)
        self._loads += 1
        return stored

    async def load_guild(self, guild_id: str) -> list[tuple]:
        """The server items of *guild_id*, as ``(item_id, kind, user_id, text, count, created_at, last_seen)``."""
        async with self._lock:
            rows = await trio.to_thread.run_sync(self._load_guild, guild_id)
        self._loads += 1
        return rows

    async def forget_user(self, user_id: str) -> dict[str, int]:
        """Delete every row about *user_id*; return how many of each kind.

        Writes the pending rows first, in the same transaction, so no earlier
        write can bring the user's rows back. Keys of the result:
        ``conversation_rows``, ``turn_rows``, ``server_item_rows``.
        """

        def delete(connection: sqlite3.Connection) -> dict[str, int]:
            return {
                "turn_rows": connection.execute("DELETE FROM turns WHERE user_id = ?", (user_id,)).rowcount,
                "conversation_rows": connection.execute(
                    "DELETE FROM conversations WHERE user_id = ?", (user_id,)
                ).rowcount,
                "server_item_rows": connection.execute(
                    "DELETE FROM server_items WHERE user_id = ?", (user_id,)
                ).rowcount,
            }

        result = await self.write(delete)
        assert result is not None
        return result

    async def delete_idle(self, stale_before: float, turns_before: float | None = None) -> dict[str, int]:
        """Delete conversations last active before *stale_before*, and the turns of those before *turns_before*.

        Runs after the pending rows, in the same transaction, so the
        ``last_at`` it compares is the one memory holds. A conversation whose
        turns are deleted keeps its row with ``first_seq = next_seq``.
        Returns ``conversation_rows`` and ``turn_rows`` deleted.
        """
        cut = stale_before if turns_before is None else max(stale_before, turns_before)

        def delete(connection: sqlite3.Connection) -> dict[str, int]:
            keys = connection.execute(
                "SELECT scope, user_id FROM conversations WHERE last_at < ? AND first_seq < next_seq", (cut,)
            ).fetchall()
            before = connection.total_changes
            connection.executemany("DELETE FROM turns WHERE scope = ? AND user_id = ?", keys)
            turn_rows = connection.total_changes - before
            connection.execute("UPDATE conversations SET first_seq = next_seq WHERE last_at < ?", (cut,))
            conversation_rows = connection.execute(
                "DELETE FROM conversations WHERE last_at < ?", (stale_before,)
            ).rowcount
            return {"conversation_rows": conversation_rows, "turn_rows": turn_rows}

        result = await self.write(delete)
        assert result is not None
        return result

    def stats(self) -> dict[str, int]:
        """``batches`` committed, ``rows_written``, ``write_errors``, ``loads``, ``pending`` (0/1)."""
        return {
            "batches": self._batches,
            "rows_written": self._rows_written,
            "write_errors": self._write_errors,
            "loads": self._loads,
            "pending": int(self._pending),
        }

    # -- in the worker thread ----------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = FULL")
                _migrate(connection)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _apply(self, batch: Batch, then: Callable[[sqlite3.Connection], T] | None) -> T | None:
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(_UPSERT_CONVERSATION, batch.conversations)
            connection.executemany(_CUT_TURNS, batch.turn_cuts)
            connection.executemany(_INSERT_TURN, batch.turns)
            connection.executemany(_UPSERT_ITEM, batch.items)
            connection.executemany(_DELETE_ITEM, batch.item_deletes)
            result = then(connection) if then is not None else None
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return result

    def _load_conversation(self, scope: str, user_id: str) -> StoredConversation | None:
        connection = self._connect()
        row = connection.execute(
            "SELECT last_at, first_seq, next_seq FROM conversations WHERE scope = ? AND user_id = ?",
            (scope, user_id),
        ).fetchone()
        if row is None:
            return None
        last_at, first_seq, next_seq = row
        turns = connection.execute(
            "SELECT seq, role, text, at FROM turns WHERE scope = ? AND user_id = ? AND seq >= ? AND seq < ?"
            " ORDER BY seq",
            (scope, user_id, first_seq, next_seq),
        ).fetchall()
        return StoredConversation(last_at, first_seq, next_seq, turns)

    def _load_guild(self, guild_id: str) -> list[tuple]:
        return self._connect().execute(
            "SELECT item_id, kind, user_id, text, count, created_at, last_seen FROM server_items"
            " WHERE guild_id = ? ORDER BY item_id",
            (guild_id,),
        ).fetchall()


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`, one transaction per migration."""
    apply_migrations(connection, MIGRATIONS, SCHEMA_VERSION, name="memory", newer_error=StoreError)
