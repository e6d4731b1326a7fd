"""One timer wheel for every periodic job in the process.

Services register periodic jobs with :meth:`TimerWheel.every` instead of
running their own ``while True: await trio.sleep(...)`` loops. One ticker task
sleeps until the earliest due time and starts every job due then, so jobs from
different services that fall due together share one wake-up. To make that
happen often, periods of 5 s or more are rounded up to a multiple of 10 s and
due times sit on multiples of the period, counted from the moment the wheel
started; shorter periods are kept as given.

Example::

    wheel = TimerWheel()
    handle = wheel.every(30, cache.flush_dirty, name="cache-flush")
    ...
    handle.cancel()
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from shell.service import Service

logger = logging.getLogger(__name__)

ROUNDING_FROM = 5.0  # periods this long or longer are rounded ...
ROUNDING_GRAIN = 10.0  # ... up to a multiple of this


def wheel_period(period: float) -> float:
    """The period a job registered with *period* seconds actually gets.

    >>> wheel_period(7), wheel_period(12), wheel_period(20), wheel_period(3)
    (10.0, 20.0, 20.0, 3.0)

    Raises :class:`ValueError` unless *period* is a finite number > 0.
    """
    if not 0 < period < math.inf:
        raise ValueError(f"period must be a finite number > 0, not {period!r}")
    if period < ROUNDING_FROM:
        return float(period)
    return math.ceil(period / ROUNDING_GRAIN) * ROUNDING_GRAIN


@dataclass
class TimerStats:
    """Counters since the wheel was created.

    ``jobs``: jobs registered now (cancelled ones leave). ``wakeups``: ticker
    wake-ups at which at least one job was due. ``runs``: job runs started.
    ``errors``: runs that raised. ``timeouts``: runs cancelled at their timeout.
    ``skips``: times a job fell due while its previous run was still going.
    ``wakeups_saved``: runs that shared a wake-up with another run, i.e. the sum
    over wake-ups of (runs started then - 1).
    """

    jobs: int = 0
    wakeups: int = 0
    runs: int = 0
    errors: int = 0
    timeouts: int = 0
    skips: int = 0
    wakeups_saved: int = 0


class _Job:
    """One registered job; ``due_index`` k means due at origin + k * period."""

    def __init__(self, name: str, fn: Callable[[], Awaitable[object]], period: float, timeout: float) -> None:
        self.name = name
        self.fn = fn
        self.period = period
        self.timeout = timeout
        self.due_index = 0
        self.running = False


class TimerHandle:
    """What :meth:`TimerWheel.every` returns: the job's settings and :meth:`cancel`."""

    def __init__(self, wheel: TimerWheel, job: _Job) -> None:
        self._wheel = wheel
        self._job = job
        self.cancelled = False

    @property
    def name(self) -> str:
        return self._job.name

    @property
    def period(self) -> float:
        """The period after rounding (see :func:`wheel_period`)."""
        return self._job.period

    @property
    def timeout(self) -> float:
        return self._job.timeout

    def cancel(self) -> None:
        """Start no further runs of this job. Idempotent.

        A run already in progress is not cancelled: it finishes or hits its
        timeout as usual.
        """
        if not self.cancelled:
            self.cancelled = True
            self._wheel._remove(self._job)


class TimerWheel(Service):
    """A :class:`Service` (name ``"timers"``) that runs periodic jobs from one ticker task.

    Each run of a job is a child of the wheel's own nursery, bounded by the
    job's timeout with :func:`trio.move_on_after`: a run that overruns is
    cancelled and counted. A run that raises is logged with its traceback and
    counted; it never stops the wheel or the job's later runs. A job whose
    previous run is still going when it falls due again is skipped that time
    (counted), never run twice at once. Missed due times (a late wake-up) are
    not caught up: the job's next run is its first due time after now.

    Stopping the wheel (cancelling :meth:`run`) cancels every run in progress.
    Registered jobs survive a restart of the wheel and are rescheduled from
    the new start.
    """

    name = "timers"

    def __init__(self, name: str | None = None, **settings) -> None:
        super().__init__(name, **settings)
        self.stats = TimerStats()
        self._jobs: list[_Job] = []
        self._origin: float | None = None  # trio.current_time() at start; None while not running
        self._sleep: trio.CancelScope | None = None  # the ticker's sleep, while it sleeps

    def every(
        self,
        period: float,
        async_fn: Callable[[], Awaitable[object]],
        *,
        name: str,
        timeout: float | None = None,
    ) -> TimerHandle:
        """Run ``await async_fn()`` every *period* seconds (rounded, see :func:`wheel_period`).

        The first run is at the first due time after now (or after the wheel
        starts, for a job registered earlier). *timeout* bounds each run and
        defaults to the rounded period. Callable from any task, before or while
        the wheel runs. Raises :class:`ValueError` for a bad period or timeout.
        """
        period = wheel_period(period)
        timeout = period if timeout is None else timeout
        if not 0 < timeout < math.inf:
            raise ValueError(f"timeout must be a finite number > 0, not {timeout!r}")
        job = _Job(name, async_fn, period, timeout)
        self._jobs.append(job)
        self.stats.jobs += 1
        if self._origin is not None:
            self._schedule_after(job, trio.current_time())
            if self._sleep is not None:
                self._sleep.deadline = min(self._sleep.deadline, self._due(job))
        return TimerHandle(self, job)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick until cancelled: sleep until the earliest due time, start every due job, repeat."""
        async with trio.open_nursery() as runs:
            self._origin = trio.current_time()
            try:
                for job in self._jobs:
                    job.due_index = 0
                    job.running = False
                    self._schedule_after(job, self._origin)
                task_status.started()
                while True:
                    await self._sleep_until_due()
                    self._start_due(runs)
            finally:
                self._origin = None

    def _due(self, job: _Job) -> float:
        assert self._origin is not None
        return self._origin + job.due_index * job.period

    def _schedule_after(self, job: _Job, now: float) -> None:
        """Move *job* to its first due time strictly after *now* (and after its current one)."""
        assert self._origin is not None
        index = math.floor((now - self._origin) / job.period) + 1
        job.due_index = max(index, job.due_index + 1)

    async def _sleep_until_due(self) -> None:
        """Sleep until the earliest due time; :meth:`every` may pull the deadline in."""
        earliest = min((self._due(job) for job in self._jobs), default=math.inf)
        with trio.CancelScope(deadline=earliest) as self._sleep:
            try:
                await trio.sleep_forever()
            finally:
                self._sleep = None

    def _start_due(self, runs: trio.Nursery) -> None:
        now = trio.current_time()
        due = [job for job in self._jobs if self._due(job) <= now]
        if not due:
            return  # woke for a job cancelled while the ticker slept
        self.stats.wakeups += 1
        started = 0
        for job in due:
            self._schedule_after(job, now)
            if job.running:
                self.stats.skips += 1
                logger.warning("timer job %r still running when due again; skipped", job.name)
                continue
            job.running = True
            started += 1
            runs.start_soon(self._run_job, job, name=f"timer:{job.name}")
        self.stats.runs += started
        self.stats.wakeups_saved += max(0, started - 1)

    async def _run_job(self, job: _Job) -> None:
        try:
            with trio.move_on_after(job.timeout) as limit:
                try:
                    await job.fn()
                except Exception:
                    self.stats.errors += 1
                    logger.exception("timer job %r failed", job.name)
            if limit.cancelled_caught:
                self.stats.timeouts += 1
                logger.warning("timer job %r overran its %.3g s timeout; cancelled", job.name, job.timeout)
        finally:
            job.running = False

    def _remove(self, job: _Job) -> None:
        self._jobs.remove(job)
        self.stats.jobs -= 1
