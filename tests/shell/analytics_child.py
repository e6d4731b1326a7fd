"""Child process for test_analytics's crash test: ``python analytics_child.py DB_PATH``.

Runs a Runtime (real clock, signals handled) with an Analytics service
writing to DB_PATH and an emitter that sends about 5000 events a second
(``command_used``, normal priority, every one stored), in bursts of BURST.

Prints, flushed, one line per event:

- ``ready N``: the database is open and holds N event rows; emitting starts.
- ``committed N``: a transaction has committed; the database now holds N
  event rows (printed from the writer's worker thread right after COMMIT).
"""

from __future__ import annotations

import logging
import sys
import threading

import trio

from shell.analytics import Analytics, AnalyticsStore
from shell.service import Runtime, Service

BURST = 50
PAUSE = 0.01  # seconds between bursts

_output = threading.Lock()  # lines come from the Trio thread and the writer's worker threads


def report(line: str) -> None:
    """Print one whole line, flushed, never interleaved with another."""
    with _output:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class ReportingStore(AnalyticsStore):
    """An AnalyticsStore that announces each committed transaction with the row count it reached."""

    rows_before = 0

    def open(self) -> None:
        was_open = self.is_open
        super().open()
        if not was_open:
            self.rows_before = self._conn.execute("SELECT count(*) FROM events").fetchone()[0] - self.rows_written

    def write(self, events, windows):
        result = super().write(events, windows)
        report(f"committed {self.rows_before + self.rows_written}")
        return result


class Emitter(Service):
    name = "emitter"
    depends_on = ("analytics",)

    def __init__(self, analytics: Analytics, store: ReportingStore) -> None:
        super().__init__()
        self.analytics = analytics
        self.store = store

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        report(f"ready {self.store.rows_before}")
        task_status.started()
        sent = 0
        while True:
            for _ in range(BURST):
                self.analytics.emit("command_used", "normal", command=f"c{sent % 7}", user_id=sent % 100)
                sent += 1
            await trio.sleep(PAUSE)


async def main(path: str) -> None:
    store = ReportingStore(path, salt="crash-test")
    analytics = Analytics(store)
    await Runtime([analytics, Emitter(analytics, store)], stop_deadline=20).run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    trio.run(main, sys.argv[1])
