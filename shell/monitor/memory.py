"""Memory monitor: sample the process RSS, alert once per crossing, shed load when critical.

:class:`MemoryMonitor` is a :class:`~shell.service.Service` that samples the
resident set size every 30 s through a job on the shared
:class:`~shell.timers.TimerWheel`. Two levels matter:

- ``alert_bytes`` (500 MiB): a WARNING alert, once per crossing. The alert
  re-arms only when RSS drops below ``rearm_fraction`` (90 %) of the level, so
  a process hovering around it does not raise an alert every 30 s.
- ``critical_bytes`` (1.5 x ``alert_bytes``): the monitor sheds load. It
  calls every registered shedder ("clear the response cache", "drop idle
  conversations from memory, they stay on disk"), raises a CRITICAL alert
  saying what was freed, and samples again shortly after to see the effect.
  It does not shed again within ``cooldown`` (5 minutes) unless RSS keeps
  rising past where it was at the last shed.

The recent samples give a trend (least-squares slope) for dashboards.
:class:`WeakAux` attaches per-user auxiliary data to the user's state object
so that the data goes away with the user.

Example::

    monitor = MemoryMonitor(wheel, alerts)
    monitor.register_shedder("response-cache", cache.clear)
    runtime = Runtime([wheel, monitor, ...])
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import trio

from shell.monitor import rss as rss_module
from shell.monitor.alerts import Alert, AlertLog, Severity
from shell.service import Service
from shell.timers import TimerWheel

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_ALERT_BYTES = 500 * MiB
CRITICAL_FACTOR = 1.5  # critical_bytes defaults to this times alert_bytes
REGROWTH_FRACTION = 0.05  # within the cool-down, shed again only past last shed's RSS + this x critical_bytes
ALERT_SOURCE = "memory"

Shedder = Callable[[], int | Awaitable[int]]


@dataclass
class ShedReport:
    """One shed: when (trio time), the RSS that triggered it, what each shedder freed.

    ``freed`` maps shedder name -> items freed; ``failed`` lists the shedders
    that raised (or returned something other than a count). ``rss_after`` is
    the next sample's RSS, ``None`` until it is taken.
    """

    at: float
    rss: int
    freed: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    rss_after: int | None = None


class MemoryMonitor(Service):
    """Samples RSS on the timer wheel; alerts and sheds load (see the module docs).

    Settings (keyword-only; sizes in bytes, times in seconds):

    - ``read_rss``: returns the RSS in bytes; default :func:`shell.monitor.rss.read_rss`.
    - ``period``: sampling period, 30 s (rounded like every wheel job, see
      :func:`shell.timers.wheel_period`).
    - ``alert_bytes`` (500 MiB), ``critical_bytes`` (1.5 x alert_bytes),
      ``rearm_fraction`` (0.9), ``cooldown`` (300 s).
    - ``resample_delay``: the extra sample after a shed comes this long after it (1 s).
    - ``window``: samples kept for :meth:`trend` (120 = one hour at 30 s).
    - ``flat_slope``: a trend slope below this many bytes per minute, either
      way, is "flat" (1 MiB/min).

    The service is named ``"memory-monitor"`` and depends on the wheel's
    service by default. Everything else (``name``, ``restart``, ...) goes to
    :class:`~shell.service.Service`.
    """

    name = "memory-monitor"

    def __init__(
        self,
        wheel: TimerWheel,
        alerts: AlertLog,
        *,
        read_rss: Callable[[], int] = rss_module.read_rss,
        period: float = 30.0,
        alert_bytes: int = DEFAULT_ALERT_BYTES,
        critical_bytes: int | None = None,
        rearm_fraction: float = 0.9,
        cooldown: float = 300.0,
        resample_delay: float = 1.0,
        window: int = 120,
        flat_slope: float = 1 * MiB,
        name: str | None = None,
        depends_on: tuple[str, ...] | None = None,
        **settings,
    ) -> None:
        super().__init__(name, depends_on=(wheel.name,) if depends_on is None else depends_on, **settings)
        if critical_bytes is None:
            critical_bytes = int(alert_bytes * CRITICAL_FACTOR)
        if not 0 < alert_bytes <= critical_bytes:
            raise ValueError(f"need 0 < alert_bytes <= critical_bytes, got {alert_bytes!r}, {critical_bytes!r}")
        if not 0 < rearm_fraction <= 1:
            raise ValueError(f"rearm_fraction must be in (0, 1], not {rearm_fraction!r}")
        for setting, value in (("period", period), ("resample_delay", resample_delay)):
            if not 0 < value < math.inf:
                raise ValueError(f"{setting} must be a finite number > 0, not {value!r}")
        if not 0 <= cooldown < math.inf:
            raise ValueError(f"cooldown must be a finite number >= 0, not {cooldown!r}")
        if window < 2:
            raise ValueError(f"window must be >= 2 samples, not {window!r}")
        if not 0 <= flat_slope < math.inf:
            raise ValueError(f"flat_slope must be a finite number >= 0, not {flat_slope!r}")
        self.alert_bytes = alert_bytes
        self.critical_bytes = critical_bytes
        self.rearm_fraction = rearm_fraction
        self.cooldown = cooldown
        self.resample_delay = resample_delay
        self.flat_slope = flat_slope
        self.period = period
        self._wheel = wheel
        self._alerts = alerts
        self._read_rss = read_rss
        self._samples: deque[tuple[float, int]] = deque(maxlen=window)
        self._shedders: dict[str, Shedder] = {}
        self._armed = True  # the WARNING alert fires at the next crossing
        self._last_shed: ShedReport | None = None
        self._resample_wanted = trio.Event()  # set by a shed, consumed by run()
        self._sampling = trio.Lock()  # the wheel's samples and the post-shed one never overlap
        self._sample_count = 0
        self._alert_count = 0
        self._shed_count = 0
        self._shed_errors = 0

    # -- shedders --------------------------------------------------------

    def register_shedder(self, name: str, fn: Shedder) -> Callable[[], None]:
        """Call *fn()* on every shed; returns a function that unregisters it.

        *fn* frees memory and returns how many items it freed (an ``int``). It
        may be a plain function (it then runs on the event loop: keep it quick,
        like clearing a dict) or an async one (await what you like; use
        ``trio.to_thread.run_sync`` for slow work). Shedders run one after the
        other in registration order. Raises :class:`ValueError` if *name* is
        taken.
        """
        if name in self._shedders:
            raise ValueError(f"a shedder named {name!r} is already registered")
        self._shedders[name] = fn

        def unregister() -> None:
            if self._shedders.get(name) is fn:
                del self._shedders[name]

        return unregister

    # -- running ---------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register the sampling job on the wheel, then take the post-shed samples until cancelled.

        Cancelling unregisters the job; a sample already running on the wheel
        belongs to the wheel's nursery and ends with it. A post-shed sample
        that raises is logged, not propagated.
        """
        handle = self._wheel.every(self.period, self.sample, name=f"{self.name}-sample")
        try:
            task_status.started()
            while True:
                await self._resample_wanted.wait()
                self._resample_wanted = trio.Event()
                await trio.sleep(self.resample_delay)
                try:
                    await self.sample()
                except Exception:
                    logger.exception("memory sample after a shed failed")
        finally:
            handle.cancel()

    async def sample(self) -> int:
        """Read RSS once, record it, alert and shed as needed; return the RSS in bytes.

        Exceptions from ``read_rss`` propagate (the wheel logs and counts
        them); a bad reading (not an int >= 0) raises :class:`ValueError`.
        Shedder errors never propagate. If cancelled while shedders run, the
        shed ends early; what ran so far is recorded, alerted and counted.
        Calls never overlap: a second caller waits for the first.
        """
        async with self._sampling:
            rss = self._read_rss()
            if not isinstance(rss, int) or rss < 0:
                raise ValueError(f"read_rss returned {rss!r}, not a byte count")
            now = trio.current_time()
            self._samples.append((now, rss))
            self._sample_count += 1
            self._note_shed_effect(rss)
            self._check_alert(rss, now)
            if self._should_shed(rss, now):
                await self._shed(rss, now)
            return rss

    def _note_shed_effect(self, rss: int) -> None:
        shed = self._last_shed
        if shed is not None and shed.rss_after is None:
            shed.rss_after = rss
            logger.info("after shedding: RSS %s, was %s", _mib(rss), _mib(shed.rss))

    def _check_alert(self, rss: int, now: float) -> None:
        if rss >= self.alert_bytes:
            if self._armed:
                self._armed = False
                message = f"RSS {_mib(rss)} reached the alert level {_mib(self.alert_bytes)}"
                self._raise(Severity.WARNING, "rss-high", message, now, {"rss": rss, "alert_bytes": self.alert_bytes})
        elif not self._armed and rss < self.rearm_fraction * self.alert_bytes:
            self._armed = True
            logger.info("RSS back to %s: memory alert re-armed", _mib(rss))

    def _should_shed(self, rss: int, now: float) -> bool:
        if rss < self.critical_bytes:
            return False
        last = self._last_shed
        if last is None or now - last.at >= self.cooldown:
            return True
        if rss > last.rss + REGROWTH_FRACTION * self.critical_bytes:
            return True  # shedding did not stop the growth: shed again despite the cool-down
        logger.debug("RSS %s above critical, but shed %.0f s ago: cooling down", _mib(rss), now - last.at)
        return False

    async def _shed(self, rss: int, now: float) -> None:
        report = ShedReport(at=now, rss=rss)
        self._last_shed = report
        self._shed_count += 1
        try:
            for name, fn in list(self._shedders.items()):
                try:
                    freed = fn()
                    if inspect.isawaitable(freed):
                        freed = await freed
                    if not isinstance(freed, int) or isinstance(freed, bool) or freed < 0:
                        raise TypeError(f"shedder returned {freed!r}, not a count of items freed")
                except Exception:
                    logger.exception("memory shedder %r failed", name)
                    report.failed.append(name)
                    self._shed_errors += 1
                else:
                    report.freed[name] = freed
        finally:
            shed = ", ".join(f"{name}: {count}" for name, count in report.freed.items()) or "nothing"
            message = f"RSS {_mib(rss)} reached the critical level {_mib(self.critical_bytes)}; shed {shed}"
            if report.failed:
                message += f"; failed: {', '.join(report.failed)}"
            details = {
                "rss": rss,
                "critical_bytes": self.critical_bytes,
                "freed": dict(report.freed),
                "failed": list(report.failed),
            }
            self._raise(Severity.CRITICAL, "rss-critical", message, now, details)
            self._resample_wanted.set()

    def _raise(self, severity: Severity, kind: str, message: str, now: float, details: dict) -> None:
        self._alert_count += 1
        self._alerts.raise_alert(Alert(ALERT_SOURCE, kind, severity, message, now, details))

    # -- observing -------------------------------------------------------

    @property
    def last_shed(self) -> ShedReport | None:
        """The most recent shed, or ``None`` if there was none."""
        return self._last_shed

    def trend(self) -> dict:
        """The RSS trend over the kept samples, for dashboards.

        Keys: ``samples`` (in the window), ``current``, ``min``, ``max`` (bytes;
        ``None`` before the first sample), ``slope_bytes_per_min`` (least
        squares over the window; 0.0 below two samples) and ``label``:
        ``"flat"`` when ``|slope| < flat_slope``, else ``"rising"`` or ``"falling"``.
        """
        if not self._samples:
            return {"samples": 0, "current": None, "min": None, "max": None, "slope_bytes_per_min": 0.0, "label": "flat"}
        values = [rss for _, rss in self._samples]
        slope = _slope_per_second([t for t, _ in self._samples], values) * 60.0
        if abs(slope) < self.flat_slope:
            label = "flat"
        else:
            label = "rising" if slope > 0 else "falling"
        return {
            "samples": len(values),
            "current": values[-1],
            "min": min(values),
            "max": max(values),
            "slope_bytes_per_min": slope,
            "label": label,
        }

    def stats(self) -> dict:
        """Counters since creation: ``samples``, ``alerts`` (raised by this
        monitor), ``sheds``, ``shed_errors``, ``last_rss`` (``None`` before the
        first sample), ``armed`` (whether the next crossing alerts) and
        ``last_shed`` (a :class:`ShedReport` as a dict, or ``None``)."""
        return {
            "samples": self._sample_count,
            "alerts": self._alert_count,
            "sheds": self._shed_count,
            "shed_errors": self._shed_errors,
            "last_rss": self._samples[-1][1] if self._samples else None,
            "armed": self._armed,
            "last_shed": dataclasses.asdict(self._last_shed) if self._last_shed is not None else None,
        }


def _slope_per_second(times: list[float], values: list[int]) -> float:
    """Least-squares slope of *values* over *times*; 0.0 when the times do not vary."""
    t = np.asarray(times, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    t -= t.mean()
    spread = float(np.dot(t, t))
    if spread == 0.0:
        return 0.0
    return float(np.dot(t, y - y.mean()) / spread)


def _mib(size: float) -> str:
    return f"{size / MiB:.1f} MiB"


Value = TypeVar("Value")


class WeakAux(Generic[Value]):
    """Auxiliary data attached to owner objects, dropped when the owner is.

    Use it for per-user scratch data (caches of rendered prompts, counters)
    keyed by the user's state object that the conversation store owns: when
    the store drops that object, the entry goes too, with no cleanup code.

    Owners are matched by identity, not equality, and need not be hashable
    (a ``weakref.WeakKeyDictionary`` would need both, so equal-but-distinct
    users would share data and dataclass owners would be refused). An owner
    must support weak references (:class:`TypeError` otherwise). The value
    must not refer to its owner, or the owner never dies.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, Value]] = {}

    def get(self, owner: object, factory: Callable[[], Value]) -> Value:
        """The value attached to *owner*, created with *factory()* on first use.

        If *factory* raises, nothing is attached and the error propagates.
        """
        entry = self._entries.get(id(owner))
        if entry is not None and entry[0]() is owner:
            return entry[1]
        value = factory()
        self._entries[id(owner)] = (weakref.ref(owner, self._forgetter(id(owner))), value)
        return value

    def peek(self, owner: object) -> Value | None:
        """The value attached to *owner*, or ``None``; never creates one."""
        entry = self._entries.get(id(owner))
        return entry[1] if entry is not None and entry[0]() is owner else None

    def discard(self, owner: object) -> None:
        """Detach *owner*'s value now, if any."""
        entry = self._entries.get(id(owner))
        if entry is not None and entry[0]() is owner:
            del self._entries[id(owner)]

    def __contains__(self, owner: object) -> bool:
        entry = self._entries.get(id(owner))
        return entry is not None and entry[0]() is owner

    def __len__(self) -> int:
        return len(self._entries)

    def _forgetter(self, key: int) -> Callable[[weakref.ref], None]:
        """The weakref callback that removes entry *key* when its owner dies.

        It holds the registry weakly, so entries never keep it alive, and it
        removes only its own entry, never a later one reusing the same id.
        """
        registry = weakref.ref(self)

        def forget(dead: weakref.ref) -> None:
            aux = registry()
            if aux is not None:
                entry = aux._entries.get(key)
                if entry is not None and entry[0] is dead:
                    del aux._entries[key]

        return forget
