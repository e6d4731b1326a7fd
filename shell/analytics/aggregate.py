"""Aggregation in 1-minute windows, and the anomaly detector that watches them.

:class:`Aggregator` keeps the open window. Every event adds to one or more
*series*, a ``(metric, label)`` pair such as ``("llm_latency", "gemini")``:
each keeps an exact count, and for series with values (latencies, tokens) an
exact sum plus a bounded reservoir of values (reservoir sampling, at most
``reservoir_size`` per window). When a window closes, :func:`window_stats`
turns it into :class:`AggregateRow` records with numpy: count, mean (exact),
p50/p90/p95/p99 and standard deviation (over the reservoir, exact while the
window holds no more values than the reservoir).

:class:`AnomalyDetector` follows a few watched figures per window (messages
and errors per minute, mean LLM latency, tokens per minute) with an EWMA of
their mean and variance, and reports a ``spike`` or ``drop`` when a window's
figure lies more than ``threshold`` standard deviations from the mean of the
windows before it (after a warm-up, and with floors under the deviation that
keep steady noise quiet).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "WINDOW",
    "WATCHES",
    "AggregateRow",
    "Aggregator",
    "Anomaly",
    "AnomalyDetector",
    "Watch",
    "Window",
    "window_stats",
]

WINDOW = 60  # seconds per aggregation window, aligned on POSIX minutes
MAX_LABELS = 200  # distinct labels per metric and window; later ones count as OTHER_LABEL
OTHER_LABEL = "(other)"
MAX_CLOSED = 1440  # closed windows kept for the writer; older ones are discarded (counted)
MAX_EMPTY_FILL = 60  # empty windows produced for a gap in time, newest first
PERCENTILES = (50, 90, 95, 99)


class _Series:
    """One ``(metric, label)`` within one window."""

    __slots__ = ("count", "n", "total", "values")

    def __init__(self) -> None:
        self.count = 0  # events
        self.n = 0  # values among them
        self.total = 0.0  # sum of the values
        self.values: list[float] = []  # the reservoir


class Window:
    """The series of one minute: ``start`` (POSIX seconds, a multiple of 60) to ``end``.

    ``partial`` is True for a window closed before its end (at shutdown).
    """

    __slots__ = ("end", "labels", "partial", "series", "start", "_random", "_reservoir_size")

    def __init__(self, start: int, reservoir_size: int = 10_000, random_source=random.random) -> None:
        self.start = start
        self.end = start + WINDOW
        self.partial = False
        self.series: dict[tuple[str, str], _Series] = {}
        self.labels: dict[str, int] = {}  # metric -> distinct labels so far
        self._reservoir_size = reservoir_size
        self._random = random_source

    def add(self, metric: str, label: str, value: float | None) -> None:
        """Count one event in ``(metric, label)``, with its value if it has one."""
        series = self.series.get((metric, label))
        if series is None:
            series = self._new_series(metric, label)
        series.count += 1
        if value is not None:
            series.n += 1
            series.total += value
            values = series.values
            if len(values) < self._reservoir_size:
                values.append(value)
            else:  # Algorithm R: keep each of the n values with probability size / n
                slot = int(self._random() * series.n)
                if slot < self._reservoir_size:
                    values[slot] = value

    def _new_series(self, metric: str, label: str) -> _Series:
        distinct = self.labels.get(metric, 0)
        if distinct >= MAX_LABELS:
            label = OTHER_LABEL
            series = self.series.get((metric, label))
            if series is not None:
                return series
        self.labels[metric] = distinct + 1
        series = self.series[(metric, label)] = _Series()
        return series


class AggregateRow(NamedTuple):
    """The statistics of one series in one window, as stored in the ``aggregates`` table.

    ``count`` events, ``n`` of them with a value; ``total`` and ``mean`` are
    exact; the percentiles and ``std`` (population) come from the
    ``reservoir`` values kept, and are None when there are no values.
    """

    start: int
    metric: str
    label: str
    count: int
    n: int
    total: float
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    std: float | None
    reservoir: int
    partial: bool


def window_stats(window: Window) -> list[AggregateRow]:
    """The rows of a closed *window*, one per series, computed with numpy. Pure."""
    rows = []
    for (metric, label), series in window.series.items():
        mean = p50 = p90 = p95 = p99 = std = None
        if series.values:
            values = np.asarray(series.values, dtype=np.float64)
            p50, p90, p95, p99 = (float(p) for p in np.percentile(values, PERCENTILES))
            std = float(values.std())
            mean = series.total / series.n
        rows.append(
            AggregateRow(
                window.start, metric, label, series.count, series.n, series.total,
                mean, p50, p90, p95, p99, std, len(series.values), window.partial,
            )
        )  # fmt: skip
    return rows


class Aggregator:
    """Holds the open window and the closed ones waiting for the writer.

    Windows close when time passes their end: in :meth:`add` (on the next
    event) or :meth:`close_due` (the writer's periodic look). Minutes in
    which nothing happened become empty windows (at most
    ``MAX_EMPTY_FILL`` for one gap), so a watched count can be seen to fall
    to zero. At most ``MAX_CLOSED`` closed windows wait; beyond that the
    oldest are discarded and counted in ``discarded``.
    """

    def __init__(self, *, reservoir_size: int = 10_000, random_source=random.random) -> None:
        if reservoir_size < 1:
            raise ValueError(f"reservoir_size must be >= 1, not {reservoir_size!r}")
        self.reservoir_size = reservoir_size
        self.discarded = 0
        self._random = random_source
        self._current: Window | None = None
        self._closed: list[Window] = []

    @property
    def current_end(self) -> float:
        """When the open window closes (POSIX seconds); infinity if none is open."""
        return math.inf if self._current is None else self._current.end

    def add(self, series: Iterable[tuple[str, str | None, str | None]], fields: Mapping, now: float) -> None:
        """Count one event at POSIX time *now* into each of its *series* ``(metric, label_field, value_field)``."""
        window = self._current
        if window is None or now >= window.end:
            window = self._open(now)
        add = window.add
        for metric, label_field, value_field in series:
            # A field name of None is never a key of *fields*: no label, no value.
            add(metric, fields.get(label_field, ""), fields.get(value_field))

    def close_due(self, now: float) -> list[Window]:
        """Close the open window if *now* is past its end; return (and forget) every closed window, oldest first.

        Also opens the window for *now* if none is open, so that the minutes
        from now on are watched even if no event comes.
        """
        if self._current is None or now >= self._current.end:
            self._open(now)
        closed, self._closed = self._closed, []
        return closed

    def close_all(self, now: float) -> list[Window]:
        """Close the open window early (marked ``partial``) and return every closed window; used at shutdown."""
        if self._current is not None:
            self._current.partial = now < self._current.end
            self._close(self._current, now)
            self._current = None
        closed, self._closed = self._closed, []
        return closed

    def _open(self, now: float) -> Window:
        start = int(now // WINDOW) * WINDOW
        if self._current is not None:
            self._close(self._current, now)
        self._current = Window(start, self.reservoir_size, self._random)
        return self._current

    def _close(self, window: Window, now: float) -> None:
        self._closed.append(window)
        start = int(now // WINDOW) * WINDOW
        first_empty = max(window.end, start - MAX_EMPTY_FILL * WINDOW)
        self._closed.extend(Window(empty, 1) for empty in range(first_empty, start, WINDOW))
        if len(self._closed) > MAX_CLOSED:
            excess = len(self._closed) - MAX_CLOSED
            del self._closed[:excess]
            self.discarded += excess
            logger.warning("analytics: %d closed windows discarded (the writer is not keeping up)", excess)


# --------------------------------------------------------------------------- anomaly detection


@dataclass(frozen=True)
class Watch:
    """One figure the detector follows per window.

    ``statistic`` is ``"count"`` (events per window), ``"total"`` (sum of the
    values) or ``"mean"`` (of the values; windows without values are
    skipped). ``kinds`` says which of ``"spike"``/``"drop"`` to report.
    ``min_std`` is the smallest standard deviation assumed, on the scale the
    figure is judged on (see :class:`AnomalyDetector`). The default, 1.25,
    suits counts: pure Poisson noise has 1 there, and real counts are
    burstier (one outage makes several errors).
    """

    metric: str
    statistic: str
    kinds: tuple[str, ...] = ("spike",)
    min_std: float = 1.25

    @property
    def name(self) -> str:
        return f"{self.metric}.{self.statistic}"

    def value(self, rows: Sequence[AggregateRow]) -> float | None:
        """This figure for one window from its rows (all labels together); None if it has none."""
        mine = [row for row in rows if row.metric == self.metric]
        if self.statistic == "count":
            return float(sum(row.count for row in mine))
        if self.statistic == "total":
            return float(sum(row.total for row in mine))
        n = sum(row.n for row in mine)
        return sum(row.total for row in mine) / n if n else None


WATCHES = (
    Watch("messages", "count", ("spike", "drop")),
    Watch("errors", "count"),
    Watch("llm_latency", "mean", min_std=0.001),
    Watch("llm_tokens", "total", min_std=1.0),
)


def anscombe(count: float) -> float:
    """``2 * sqrt(count + 3/8)``: Poisson counts on a scale where their noise has a deviation of about 1."""
    return 2.0 * math.sqrt(count + 0.375)


@dataclass(frozen=True)
class Anomaly:
    """A window whose figure (``value``) is ``z`` deviations from its recent ``mean``.

    ``mean`` is in the figure's unit; ``std`` and ``z`` on the scale it is judged on.
    """

    kind: str  # "spike" or "drop"
    watch: str
    window_start: int
    value: float
    mean: float
    std: float
    z: float


class _Ewma:
    __slots__ = ("mean", "seen", "var")

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 0.0
        self.seen = 0

    def update(self, value: float, alpha: float) -> None:
        if self.seen == 0:
            self.mean = value
        else:  # West's incremental EWMA of mean and variance
            diff = value - self.mean
            increment = alpha * diff
            self.mean += increment
            self.var = (1 - alpha) * (self.var + diff * increment)
        self.seen += 1


class AnomalyDetector:
    """Spike and drop detection on :data:`WATCHES`, one window at a time.

    Each watched figure is judged on its own scale: counts on the Anscombe
    scale (:func:`anscombe`), where Poisson noise has a deviation of about 1
    whatever the level, so 3 errors after a quiet hour and 30 more messages
    on a busy minute are judged alike; totals and means as they are.

    After ``warmup`` windows, a window is anomalous when
    ``|x - mean| / std > threshold``, mean and variance being EWMAs (weight
    ``alpha``) of the earlier windows. ``std`` is the EWMA deviation but
    never less than the watch's ``min_std`` nor ``min_relative_std`` of the
    level (10 %: on the Anscombe scale, half of that of the mean, which is
    the same relative change of the count). The floors keep steady noise
    quiet: Gaussian noise up to about 5 % of a figure stays below 3 floors,
    and Poisson counts in the hundreds never reach them. Counts of a few
    dozen a minute are judged nearer their true noise: expect about one
    false alarm (spike or drop) in 3,000 windows there. Every
    window, anomalous or not, then updates the EWMAs, so a lasting change of
    level is reported once and then learnt.
    """

    def __init__(
        self,
        *,
        watches: Sequence[Watch] = WATCHES,
        alpha: float = 0.1,
        threshold: float = 3.0,
        warmup: int = 5,
        min_relative_std: float = 0.1,
    ) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), not {alpha!r}")
        if not threshold > 0 or warmup < 1 or min_relative_std < 0:
            raise ValueError("need threshold > 0, warmup >= 1, min_relative_std >= 0")
        self.watches = tuple(watches)
        self.alpha = alpha
        self.threshold = threshold
        self.warmup = warmup
        self.min_relative_std = min_relative_std
        self._state = {watch.name: _Ewma() for watch in self.watches}

    def check(self, window_start: int, rows: Sequence[AggregateRow]) -> list[Anomaly]:
        """Judge one closed window (its rows; none for an empty window) and learn from it.

        Windows must come in time order. Returns the anomalies found, possibly none.
        """
        found = []
        for watch in self.watches:
            value = watch.value(rows)
            if value is None:
                continue
            counted = watch.statistic == "count"
            x = anscombe(value) if counted else value
            state = self._state[watch.name]
            if state.seen >= self.warmup:
                relative = self.min_relative_std * abs(state.mean) * (0.5 if counted else 1.0)
                std = max(math.sqrt(state.var), relative, watch.min_std)
                z = (x - state.mean) / std
                kind = "spike" if z > 0 else "drop"
                if abs(z) > self.threshold and kind in watch.kinds:
                    mean = (state.mean / 2) ** 2 - 0.375 if counted else state.mean
                    found.append(Anomaly(kind, watch.name, window_start, value, mean, std, z))
            state.update(x, self.alpha)
        return found
