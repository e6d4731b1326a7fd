"""Alerts: what a component raises when something needs a human's attention.

Producers (the memory monitor, the analytics anomaly detector, ...) call
``alerts.raise_alert(Alert(...))``; the monitor, dashboards and logs read the
recent ones back. An :class:`AlertLog` is an object owned by the runtime, not
a global: pass it to whoever raises or reads alerts.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


class Severity(enum.Enum):
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Alert:
    """One alert. ``source`` names the producer ("memory", "analytics");
    ``kind`` what happened ("rss-high", "spike", ...); ``at`` is trio time."""

    source: str
    kind: str
    severity: Severity
    message: str
    at: float
    details: dict = field(default_factory=dict)


class AlertLog:
    """The most recent alerts (bounded), with per-(source, kind) counts.

    ``raise_alert`` never raises and never awaits: it logs the alert at
    WARNING or CRITICAL level, keeps it, and calls the subscribers; a
    subscriber that raises is logged and skipped.
    """

    def __init__(self, maxlen: int = 1000):
        if maxlen < 1:
            raise ValueError("maxlen must be >= 1")
        self._recent: deque[Alert] = deque(maxlen=maxlen)
        self._counts: dict[tuple[str, str], int] = {}
        self._subscribers: list[Callable[[Alert], None]] = []

    def raise_alert(self, alert: Alert) -> None:
        level = logging.CRITICAL if alert.severity is Severity.CRITICAL else logging.WARNING
        logger.log(level, "alert %s/%s: %s", alert.source, alert.kind, alert.message)
        self._recent.append(alert)
        key = (alert.source, alert.kind)
        self._counts[key] = self._counts.get(key, 0) + 1
        for subscriber in list(self._subscribers):
            try:
                subscriber(alert)
            except Exception:
                logger.exception("alert subscriber %r failed", subscriber)

    def subscribe(self, callback: Callable[[Alert], None]) -> Callable[[], None]:
        """Call *callback(alert)* for every new alert; returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def recent(self, source: str | None = None) -> list[Alert]:
        return [a for a in self._recent if source is None or a.source == source]

    def counts(self) -> dict[tuple[str, str], int]:
        return dict(self._counts)
