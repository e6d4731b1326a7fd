"""Analytics: events emitted on the reply path, stored in batches, aggregated per minute.

- :mod:`shell.analytics.events`: the event types, sampling, the bounded priority queues,
  and :class:`~shell.analytics.events.Emitter` (``emit``, the synchronous hot path).
- :mod:`shell.analytics.aggregate`: 1-minute windows with numpy statistics, and the
  EWMA anomaly detector (spikes and drops, raised as alerts).
- :mod:`shell.analytics.writer`: the SQLite store (schema, migrations, retention,
  salted user hashes) and :class:`Analytics`, the service the runtime owns.
- :mod:`shell.analytics.report`: the summary ``triobot report`` prints.

Example::

    analytics = Analytics(AnalyticsStore("data/analytics.db"), alerts=alert_log, timers=wheel)
    runtime = Runtime([wheel, analytics, ...])
    ...
    analytics.emit("llm_call", "normal", provider="gemini", latency=0.82, tokens=412, status="ok")
"""

from shell.analytics.aggregate import AnomalyDetector, Watch
from shell.analytics.events import EVENTS, Priority
from shell.analytics.writer import DEFAULT_PATH, Analytics, AnalyticsStore, SchemaError

__all__ = ["DEFAULT_PATH", "EVENTS", "Analytics", "AnalyticsStore", "AnomalyDetector", "Priority", "SchemaError", "Watch"]
