"""Schema migrations for triobot's SQLite databases (analytics, memory)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence

logger = logging.getLogger(__name__)


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's schema version (``PRAGMA user_version``; 0 when new)."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def apply_migrations(
    conn: sqlite3.Connection,
    migrations: Sequence[Sequence[str]],
    target: int,
    *,
    name: str,
    newer_error: type[Exception],
) -> int:
    """Run ``migrations[v - 1]`` for each version v above the current one up to *target*; return the version found.

    Each migration runs in its own transaction together with its
    ``user_version`` bump, so a crash leaves the database at one version or
    the next. *conn* must be in autocommit mode (``isolation_level=None``).
    Raises *newer_error* (and changes nothing) if the database is newer than
    *target*; a failing statement rolls its migration back and propagates.
    """
    found = schema_version(conn)
    if found > target:
        raise newer_error(f"{name} database has schema version {found}, newer than this triobot knows ({target})")
    for version in range(found + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in migrations[version - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version:d}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        logger.info("%s database migrated to schema version %d", name, version)
    return found
