"""The summary ``triobot report --since 24h`` prints from the analytics database.

Counts (messages, commands, errors, cache hits and misses, tokens,
rate-limit denials, sheds) come from the ``aggregates`` table, which counts
every event whether or not it was sampled for storage, so they are exact.
They cover the 1-minute windows that start at or after the cutoff, and only
closed windows: a running bot's current minute is not there yet (a stopped
bot wrote it at shutdown). LLM latency percentiles come from the stored
``llm_call`` rows (nearest rank, weighted by sample weight).

This runs outside Trio: it reads the wall clock (``time.time()``) and blocks.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shell.analytics.writer import SCHEMA_VERSION

__all__ = ["Report", "ReportError", "build_report", "parse_duration", "render"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", re.IGNORECASE)
PERCENTILES = (50, 90, 95, 99)


class ReportError(Exception):
    """The report cannot be made (missing or foreign database); the message says why."""


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``30m``, ``24h``, ``7d``, ``2w`` or ``1.5h``.

    Raises :class:`ValueError` for anything else, zero included.
    """
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use a number and a unit: 30m, 24h, 7d)")
    seconds = float(match[1]) * _UNITS[match[2].lower()]
    if seconds <= 0:
        raise ValueError(f"duration must be more than zero: {text!r}")
    return seconds


@dataclass
class Report:
    """What the report shows; counts are exact, latencies from stored rows."""

    path: str
    since: float  # POSIX seconds
    until: float
    messages: int = 0
    commands: list[tuple[str, int]] = field(default_factory=list)  # most used first
    errors: list[tuple[str, int]] = field(default_factory=list)  # most frequent first
    llm_calls: int = 0
    llm_status: list[tuple[str, int]] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)  # "p50" ... "p99", seconds; empty if no calls stored
    latency_rows: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    tokens: list[tuple[str, int]] = field(default_factory=list)  # per provider
    rate_limited: list[tuple[str, int]] = field(default_factory=list)  # per scope
    shed: int = 0

    @property
    def error_total(self) -> int:
        return sum(count for _, count in self.errors)

    @property
    def cache_hit_rate(self) -> float | None:
        lookups = self.cache_hits + self.cache_misses
        return self.cache_hits / lookups if lookups else None


def build_report(path: str | Path, since_seconds: float, *, now: float | None = None, top: int = 10) -> Report:
    """Read the report for the last *since_seconds* (until *now*, default ``time.time()``) from *path*.

    Opens the database read-only. Raises :class:`ReportError` if *path* does
    not exist or is not a triobot analytics database of this schema version.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"no analytics database at {path} (the bot creates it; pass --db PATH)")
    until = time.time() if now is None else now
    report = Report(str(path), until - since_seconds, until)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise ReportError(f"cannot open {path}: {error}") from None
    try:
        _check_schema(conn, path)
        counts = _counts(conn, report.since)
        report.messages = sum(counts.get("messages", {}).values())
        report.commands = _ranked(counts.get("commands", {}))[:top]
        report.errors = _ranked(counts.get("errors", {}))
        report.llm_status = _ranked(counts.get("llm_status", {}))
        report.llm_calls = sum(count for _, count in report.llm_status)
        report.cache_hits = sum(counts.get("cache_hits", {}).values())
        report.cache_misses = sum(counts.get("cache_misses", {}).values())
        report.rate_limited = _ranked(counts.get("rate_limited", {}))
        report.shed = sum(counts.get("shed", {}).values())
        report.tokens = _ranked(
            {label: int(total) for label, total in conn.execute(
                "SELECT label, SUM(total) FROM aggregates WHERE metric = 'llm_tokens' AND start >= ? GROUP BY label",
                (report.since,),
            )}
        )  # fmt: skip
        report.latency, report.latency_rows = _latency(conn, report.since)
    except sqlite3.Error as error:
        raise ReportError(f"cannot read {path}: {error}") from None
    finally:
        conn.close()
    return report


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        raise ReportError(
            f"{path} is not a triobot analytics database of schema version {SCHEMA_VERSION} "
            f"(it has version {version}; a running bot migrates it)"
        )


def _counts(conn: sqlite3.Connection, since: float) -> dict[str, dict[str, int]]:
    """{metric: {label: events}} over the windows starting at or after *since*."""
    counts: dict[str, dict[str, int]] = {}
    for metric, label, count in conn.execute(
        "SELECT metric, label, SUM(count) FROM aggregates WHERE start >= ? GROUP BY metric, label", (since,)
    ):
        counts.setdefault(metric, {})[label] = count
    return counts


def _ranked(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _latency(conn: sqlite3.Connection, since: float) -> tuple[dict[str, float], int]:
    """Weighted nearest-rank percentiles of stored LLM latencies since *since*, and the row count."""
    rows = conn.execute(
        "SELECT latency, weight FROM events WHERE type = 'llm_call' AND at >= ? AND latency IS NOT NULL", (since,)
    ).fetchall()
    if not rows:
        return {}, 0
    data = np.asarray(rows, dtype=np.float64)
    order = np.argsort(data[:, 0], kind="stable")
    values, weights = data[order, 0], data[order, 1]
    cumulative = np.cumsum(weights)
    ranks = np.searchsorted(cumulative, np.asarray(PERCENTILES) / 100 * cumulative[-1], side="left")
    return {f"p{q}": float(values[min(rank, len(values) - 1)]) for q, rank in zip(PERCENTILES, ranks)}, len(rows)


def _when(posix: float) -> str:
    return datetime.fromtimestamp(posix, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.2%}" if whole else "n/a"


def render(report: Report) -> str:
    """The report as plain text, one figure per line."""
    lines = [
        f"triobot analytics: {report.path}",
        f"period: {_when(report.since)} to {_when(report.until)}",
        "",
        f"messages: {report.messages:,}",
        "top commands:" + ("" if report.commands else " none"),
    ]
    lines += [f"  {name:<24} {count:>10,}" for name, count in report.commands]
    lines.append(f"errors: {report.error_total:,} ({_share(report.error_total, report.messages)} of messages)")
    lines += [f"  {name:<24} {count:>10,}  {_share(count, report.messages)}" for name, count in report.errors]
    lines.append(f"llm calls: {report.llm_calls:,}")
    lines += [f"  {status:<24} {count:>10,}" for status, count in report.llm_status]
    if report.latency:
        spread = "  ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in report.latency.items())
        lines.append(f"llm latency: {spread} (from {report.latency_rows:,} stored calls)")
    else:
        lines.append("llm latency: no calls stored")
    rate = report.cache_hit_rate
    lines.append(
        f"cache: {report.cache_hits:,} hits, {report.cache_misses:,} misses, hit rate "
        + ("n/a" if rate is None else f"{rate:.1%}")
    )
    total_tokens = sum(tokens for _, tokens in report.tokens)
    lines.append(f"tokens: {total_tokens:,}")
    lines += [f"  {provider:<24} {tokens:>10,}" for provider, tokens in report.tokens]
    denials = sum(count for _, count in report.rate_limited)
    lines.append(f"rate-limit denials: {denials:,}")
    lines += [f"  {scope:<24} {count:>10,}" for scope, count in report.rate_limited]
    lines.append(f"shed: {report.shed:,}")
    return "\n".join(lines)
