"""Service lifecycle: start in dependency order, stop in reverse, then flush.

A :class:`Service` is a long-running body (:meth:`Service.run`) plus a
:meth:`Service.flush` that persists whatever it holds in memory. A
:class:`Runtime` owns one nursery in which every service runs in its own cancel
scope. It starts them one after the other in dependency order, restarts the
ones whose policy says so when they crash, and on SIGINT, SIGTERM,
:meth:`Runtime.request_stop` or an unrecoverable crash it stops them in reverse
order and flushes every one of them, all within one deadline.

Example::

    runtime = Runtime([TimerWheel(), Cache(), Bot()])  # Bot.depends_on = ("cache",)
    await runtime.run()  # returns after a clean stop, raises ServiceFailed after a crash
"""

from __future__ import annotations

import enum
import logging
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import trio

logger = logging.getLogger(__name__)

RESTART_MODES = ("never", "always")
TRANSITIONS_KEPT = 1000  # newest state changes kept in Runtime.transitions
STOP_GRACE = 0.1  # seconds each service gets to end once cancelled, even after the stop half ran out

_UNSET = object()


class ServiceState(enum.Enum):
    """Where a service is in its lifecycle.

    CREATED -> STARTING -> READY -> STOPPING -> STOPPED is the normal path.
    FAILED means its last run crashed (it may be STARTING again after a
    backoff) or it did not stop before the deadline and was abandoned.
    """

    CREATED = "created"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class Transition(NamedTuple):
    """One state change: ``trio.current_time()`` when it happened, service, new state."""

    time: float
    name: str
    state: ServiceState


class ServiceFailed(RuntimeError):
    """Raised by :meth:`Runtime.run` when a service crashed for good.

    "For good" means its restart policy allowed no (further) restart, or it
    crashed while the runtime was stopping. The service's own exception is the
    ``__cause__``; the failing service's name is :attr:`service`.
    """

    def __init__(self, service: str, error: BaseException) -> None:
        super().__init__(f"service {service!r} failed: {error!r}")
        self.service = service


class Service:
    """Base class of everything the :class:`Runtime` runs.

    Subclasses override :meth:`run` and, if they hold state, :meth:`flush`.
    Every setting is a class attribute that the constructor may override:

    - ``name``: unique within a runtime; required.
    - ``depends_on``: names of services that must be READY before this one starts
      (and that stop only after this one has stopped).
    - ``restart``: ``"never"`` (a crash ends the runtime) or ``"always"`` (a crash
      is logged and the service restarts after a backoff).
    - ``max_restarts``: consecutive restarts allowed with ``"always"``; ``None``
      means no limit. When exhausted, the crash ends the runtime.
    - ``backoff_base``, ``backoff_cap``: restart *n* (from 0) waits
      ``min(backoff_cap, backoff_base * 2**n)`` seconds: 1, 2, 4 ... capped.
      A run that stayed READY for ``backoff_cap`` seconds or more before
      crashing resets the count, so a rare crash never exhausts the budget.
    """

    name: str = ""
    depends_on: tuple[str, ...] = ()
    restart: str = "never"
    max_restarts: int | None = None
    backoff_base: float = 1.0
    backoff_cap: float = 60.0

    def __init__(
        self,
        name: str | None = None,
        *,
        depends_on: Iterable[str] | None = None,
        restart: str | None = None,
        max_restarts: int | None | object = _UNSET,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
    ) -> None:
        if name is not None:
            self.name = name
        if depends_on is not None:
            if isinstance(depends_on, str):
                raise TypeError(f"depends_on must be a collection of names, not the string {depends_on!r}")
            self.depends_on = tuple(depends_on)
        if restart is not None:
            self.restart = restart
        if max_restarts is not _UNSET:
            self.max_restarts = max_restarts  # type: ignore[assignment]
        if backoff_base is not None:
            self.backoff_base = backoff_base
        if backoff_cap is not None:
            self.backoff_cap = backoff_cap
        if self.restart not in RESTART_MODES:
            raise ValueError(f"restart must be one of {RESTART_MODES}, not {self.restart!r}")
        if self.max_restarts is not None and self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0 or None, not {self.max_restarts!r}")
        if not 0 < self.backoff_base <= self.backoff_cap:
            raise ValueError(f"need 0 < backoff_base <= backoff_cap, got {self.backoff_base!r}, {self.backoff_cap!r}")

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The service's body: set up, call ``task_status.started()``, then serve.

        The runtime marks the service READY when ``started()`` is called and
        only then starts the services that depend on it. Stopping cancels this
        call (a :class:`trio.Cancelled` arrives at the next checkpoint); let it
        propagate. Returning normally after ``started()`` marks the service
        STOPPED and is not an error; returning before it counts as a crash, and
        so does any exception.

        The default body reports ready at once and waits to be cancelled: right
        for a service that only holds state for others and flushes it.
        """
        task_status.started()
        await trio.sleep_forever()

    async def flush(self) -> None:
        """Persist whatever is pending. Called once when the runtime stops.

        Called for every service, after all of them have stopped (so nothing
        changes under it), even for a service that crashed or never started. It
        runs shielded from outside cancellation but is cancelled when the stop
        deadline passes. An exception is logged and does not stop the other
        flushes. The default does nothing.
        """


class _ReadySignal:
    """The ``task_status`` one attempt of :meth:`Service.run` receives."""

    def __init__(self, on_ready: Callable[[], None]) -> None:
        self._on_ready = on_ready
        self.ready_at: float | None = None

    def started(self, value: object = None) -> None:
        if self.ready_at is not None:
            raise RuntimeError("called 'started' twice on the same task status")
        self.ready_at = trio.current_time()
        self._on_ready()


def start_order(services: Mapping[str, Service]) -> tuple[str, ...]:
    """Names in an order where each service comes after all it depends on.

    Ties keep the given order. Raises :class:`ValueError` naming the service for
    an unknown dependency, and naming the loop for a cycle (``a -> b -> a``).
    """
    order: list[str] = []
    done: set[str] = set()
    path: list[str] = []  # the chain being visited, to report a cycle

    def visit(name: str) -> None:
        if name in done:
            return
        if name in path:
            loop = path[path.index(name):] + [name]
            raise ValueError("dependency cycle: " + " -> ".join(loop))
        path.append(name)
        for dependency in services[name].depends_on:
            if dependency not in services:
                raise ValueError(f"service {name!r} depends on unknown service {dependency!r}")
            visit(dependency)
        path.pop()
        done.add(name)
        order.append(name)

    for name in services:
        visit(name)
    return tuple(order)


class Runtime:
    """Runs services in one nursery: ordered start, restarts, ordered stop, flush.

    The constructor checks names and dependencies (unknown dependency or cycle:
    :class:`ValueError`) so nothing starts from a bad graph. ``stop_deadline``
    bounds the whole stop: services get the first half of it to end after
    being cancelled (a service that ignores cancellation is abandoned: logged,
    FAILED; the ones after it still get ``STOP_GRACE`` each) and the flushes
    share what is left, so a hung service can never starve the flushes. ``handle_signals`` turns SIGINT and SIGTERM into
    :meth:`request_stop` while :meth:`run` runs (main thread only).

    Attributes: ``services`` (read-only mapping name -> service), ``order``
    (start order; stop and flush go in reverse), ``transitions`` (the newest
    :class:`Transition` records, oldest first).
    """

    def __init__(
        self, services: Iterable[Service], *, stop_deadline: float = 10.0, handle_signals: bool = True
    ) -> None:
        by_name: dict[str, Service] = {}
        for service in services:
            if not service.name:
                raise ValueError(f"{type(service).__name__} has no name")
            if service.name in by_name:
                raise ValueError(f"two services are named {service.name!r}")
            by_name[service.name] = service
        if not stop_deadline > 0:
            raise ValueError(f"stop_deadline must be > 0, not {stop_deadline!r}")
        self.services: Mapping[str, Service] = MappingProxyType(by_name)
        self.order = start_order(by_name)
        self.transitions: deque[Transition] = deque(maxlen=TRANSITIONS_KEPT)
        self._stop_deadline = stop_deadline
        self._handle_signals = handle_signals
        self._states = dict.fromkeys(by_name, ServiceState.CREATED)
        self._waiters: dict[tuple[str, ServiceState], list[trio.Event]] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self._done: dict[str, trio.Event] = {}  # set when a service's task has ended
        self._stop_requested = trio.Event()
        self._failure: tuple[str, BaseException] | None = None
        self._ran = False

    # -- observing -------------------------------------------------------

    def state(self, name: str) -> ServiceState:
        """The current state of service *name* (KeyError if there is none)."""
        return self._states[name]

    def states(self) -> dict[str, ServiceState]:
        """A snapshot of every service's state, in start order."""
        return {name: self._states[name] for name in self.order}

    async def wait_state(self, name: str, state: ServiceState) -> None:
        """Return once service *name* is in *state*.

        Returns at once if it is in that state now, otherwise at its next
        transition into it (a passing state is not missed). Cancellable; waits
        forever if the state never comes, so bound it with a timeout if needed.
        """
        if self._states[name] is state:
            return
        arrived = trio.Event()
        waiters = self._waiters.setdefault((name, state), [])
        waiters.append(arrived)
        try:
            await arrived.wait()
        finally:
            if not arrived.is_set():
                waiters.remove(arrived)

    def _set_state(self, name: str, state: ServiceState) -> None:
        self._states[name] = state
        self.transitions.append(Transition(trio.current_time(), name, state))
        logger.info("service %r: %s", name, state.value)
        for arrived in self._waiters.pop((name, state), ()):
            arrived.set()

    # -- running ---------------------------------------------------------

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop everything; returns at once.

        Idempotent. Call it from a task of the same Trio run (from another
        thread, go through ``trio.from_thread.run_sync``).
        """
        self._stop_requested.set()

    async def run(self) -> None:
        """Start every service, wait for a stop, stop them and flush them all.

        Returns normally after a stop by signal or :meth:`request_stop`. Raises
        :class:`ServiceFailed` (chained to the service's exception) once the
        runtime has stopped and flushed, if a service crashed for good. If this
        call is cancelled from outside, it still stops and flushes everything
        (shielded, within the deadline) and then lets the cancellation through.
        A service abandoned at the deadline keeps this call from returning until
        its task ends: Trio cannot kill a task, only stop waiting for it.
        A Runtime runs once; a second call raises :class:`RuntimeError`.
        """
        if self._ran:
            raise RuntimeError("a Runtime runs only once")
        self._ran = True
        async with trio.open_nursery() as nursery:
            if self._handle_signals and threading.current_thread() is threading.main_thread():
                await nursery.start(self._watch_signals)
            nursery.start_soon(self._start_all, nursery)
            try:
                await self._stop_requested.wait()
            finally:
                with trio.CancelScope(shield=True):
                    await self._shutdown()
                nursery.cancel_scope.cancel()  # the signal watcher; services are done
        if self._failure is not None:
            name, error = self._failure
            raise ServiceFailed(name, error) from error

    async def _watch_signals(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Turn SIGINT/SIGTERM into a stop request until cancelled.

        Stays installed through the whole shutdown, so a second Ctrl-C cannot
        interrupt a flush with KeyboardInterrupt.
        """
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                signame = signal.Signals(signum).name
                if self._stop_requested.is_set():
                    logger.warning("%s received while stopping; still stopping", signame)
                else:
                    logger.info("%s received: stopping", signame)
                    self.request_stop()

    async def _start_all(self, nursery: trio.Nursery) -> None:
        """Start services one by one in dependency order until all are READY or a stop is requested."""
        for name in self.order:
            if self._stop_requested.is_set():
                return
            scope = trio.CancelScope()
            self._scopes[name] = scope
            self._done[name] = trio.Event()
            await nursery.start(self._supervise, self.services[name], scope)

    async def _supervise(
        self, service: Service, scope: trio.CancelScope, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run one service inside *scope* under its restart policy.

        Reports to :meth:`_start_all` (``task_status.started()``) when the
        service first becomes READY, or when it ends without ever doing so, so
        the start sequence never waits on a dead service. Never raises except
        for a cancellation from outside *scope*.
        """
        name = service.name
        reported = False

        def report_ready() -> None:
            nonlocal reported
            self._set_state(name, ServiceState.READY)
            if not reported:
                reported = True
                task_status.started()

        try:
            with scope:
                await self._run_with_restarts(service, report_ready)
        finally:
            if self._states[name] is not ServiceState.FAILED:
                self._set_state(name, ServiceState.STOPPED)
            self._done[name].set()
            if not reported:
                task_status.started()

    async def _run_with_restarts(self, service: Service, report_ready: Callable[[], None]) -> None:
        """Run *service* until it returns, is cancelled, or crashes for good.

        A crash is logged with its traceback and marks the service FAILED. It
        then either waits out the backoff and runs again, or (policy exhausted,
        or a stop already requested) records the failure and requests a stop.
        """
        name = service.name
        restarts = 0
        while True:
            self._set_state(name, ServiceState.STARTING)
            attempt = _ReadySignal(report_ready)
            try:
                await service.run(task_status=attempt)
                if attempt.ready_at is None:
                    raise RuntimeError(f"service {name!r} returned from run() without calling task_status.started()")
                return
            except Exception as error:
                logger.exception("service %r crashed", name)
                self._set_state(name, ServiceState.FAILED)
                if attempt.ready_at is not None and trio.current_time() - attempt.ready_at >= service.backoff_cap:
                    restarts = 0
                if self._stop_requested.is_set() or not _may_restart(service, restarts):
                    self._fail(name, error)
                    return
                delay = min(service.backoff_cap, service.backoff_base * 2**restarts)
                restarts += 1
                logger.warning("restarting service %r in %.3g s (restart %d)", name, delay, restarts)
            await trio.sleep(delay)

    def _fail(self, name: str, error: BaseException) -> None:
        """Record the first crash that ends the runtime and ask for a stop."""
        if self._failure is None:
            self._failure = (name, error)
            logger.error("service %r failed for good; stopping the runtime", name)
        self.request_stop()

    # -- stopping --------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop running services in reverse order, then flush every service.

        Call shielded: the deadlines here are the only bound.
        """
        begun = trio.current_time()
        stop_by = begun + self._stop_deadline / 2
        flush_by = begun + self._stop_deadline
        logger.info("stopping %d services (deadline %.3g s)", len(self.order), self._stop_deadline)
        for name in reversed(self.order):
            # Once an abandoned service has used up the stop half, the services
            # after it still get a short grace, never past the overall deadline.
            grace_until = min(trio.current_time() + STOP_GRACE, flush_by)
            await self._stop_one(name, max(stop_by, grace_until))
        for name in reversed(self.order):
            await self._flush_one(name, flush_by)

    async def _stop_one(self, name: str, wait_until: float) -> None:
        done = self._done.get(name)
        if done is None or done.is_set():
            return  # never started, or already ended
        self._set_state(name, ServiceState.STOPPING)
        self._scopes[name].cancel()
        with trio.move_on_at(wait_until):
            await done.wait()
        if not done.is_set():
            logger.error("service %r did not stop before the deadline; abandoned", name)
            self._set_state(name, ServiceState.FAILED)

    async def _flush_one(self, name: str, flush_by: float) -> None:
        with trio.move_on_at(flush_by) as deadline:
            try:
                await self.services[name].flush()
            except Exception:
                logger.exception("flush of service %r failed", name)
        if deadline.cancelled_caught:
            logger.error("flush of service %r did not finish before the stop deadline; cancelled", name)


def _may_restart(service: Service, restarts: int) -> bool:
    """Whether *service*'s policy allows another restart after *restarts* consecutive ones."""
    if service.restart != "always":
        return False
    return service.max_restarts is None or restarts < service.max_restarts
