"""Concurrency patterns on the request path: share, bound, supervise, fan out.

* :class:`Coalescer` -- identical requests in flight at once share one call.
* :class:`TaskPool` -- bounded (optionally adaptive, AIMD) concurrency per upstream.
* :class:`Background` -- supervised fire-and-forget work after the reply is sent.
* :func:`run_parallel` -- run independent steps at once, results in order.

:class:`Coalescer` and :class:`Background` own a nursery, so they are used as
``async with Coalescer() as coalescer:`` / ``async with Background("bot") as bg:``
in the service that owns them; their tasks live exactly as long as that block.
Their tasks catch and report their own exceptions, so an exception raised in
the block comes out of it as itself, not wrapped in an :exc:`ExceptionGroup`.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import trio

logger = logging.getLogger(__name__)

__all__ = [
    "Background",
    "BackgroundStatistics",
    "Coalescer",
    "CoalescerStatistics",
    "Overloaded",
    "TaskPool",
    "TaskPoolStatistics",
    "run_parallel",
]


class Overloaded(Exception):
    """The upstream said it is overloaded (HTTP 429 or 503): back off.

    Providers raise it; an adaptive :class:`TaskPool` halves its limit when
    a run raises it. ``retry_after`` is the upstream's hint in seconds, if
    it gave one.
    """

    def __init__(self, message: str = "upstream overloaded", *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


@asynccontextmanager
async def _open_nursery_unwrapping_lone() -> AsyncIterator[trio.Nursery]:
    """Open a nursery that raises a lone exception as itself, not in a group of one.

    Trio's strict semantics wrap even a single exception, from the body or a
    task, in a :exc:`BaseExceptionGroup`. Where at most one exception is
    expected (the owner's own, or the one step that failed), that group only
    hides it. Groups of two or more propagate as they are.
    """
    lone: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        lone = group.exceptions[0]
    if lone is not None:
        raise lone  # outside the except block, so its __context__ stays its own


class _Lifetime:
    """``async with`` support for an object whose ``_lifetime()`` owns a nursery."""

    _lifetime: Callable[[], AbstractAsyncContextManager[Any]]
    _lifetime_cm: AbstractAsyncContextManager[Any] | None = None

    async def __aenter__(self) -> Self:
        if self._lifetime_cm is not None:
            raise RuntimeError(f"{type(self).__name__} can be entered only once")
        self._lifetime_cm = self._lifetime()
        return await self._lifetime_cm.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._lifetime_cm is not None
        return await self._lifetime_cm.__aexit__(exc_type, exc, tb)


# --------------------------------------------------------------------------- Coalescer


@dataclass(frozen=True, slots=True)
class CoalescerStatistics:
    """A snapshot of a :class:`Coalescer`.

    ``calls``: real executions started; ``shared_waits``: callers that joined
    a call already in flight; ``in_flight``: keys with a call callers can join.
    """

    calls: int
    shared_waits: int
    in_flight: int


class _SharedCall:
    """One in-flight execution and the callers waiting for it."""

    __slots__ = ("done", "error", "error_tb", "returned", "scope", "value", "waiters")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self.waiters = 0
        self.returned = False
        self.value: Any = None
        self.error: Exception | None = None
        self.error_tb: TracebackType | None = None


def _copy_for_caller(error: Exception, tb: TracebackType | None) -> Exception:
    """Return an exception equal to ``error`` for one more caller to raise.

    Raising one exception object in many tasks would append every task's
    frames to its single ``__traceback__`` (and let the tasks overwrite each
    other's). Each caller raises its own shallow copy, starting from the
    call's traceback; a type that cannot be copied is raised as the shared
    object with its traceback reset, so it still cannot grow without bound.
    """
    try:
        clone = copy.copy(error)
    except Exception:
        clone = None
    if type(clone) is not type(error):
        return error.with_traceback(tb)
    clone.__cause__ = error.__cause__
    clone.__context__ = error.__context__
    clone.__suppress_context__ = error.__suppress_context__
    if hasattr(error, "__notes__"):
        clone.__notes__ = list(error.__notes__)
    return clone.with_traceback(tb)


class Coalescer(_Lifetime):
    """Singleflight: concurrent callers with the same key share one call.

    ``await coalescer.run(key, async_fn, *args)`` starts ``async_fn(*args)``
    if no call for ``key`` is in flight, or else joins the one that is, and
    returns its result. Sharing lasts only while the call is in flight: the
    moment it finishes the key is forgotten, and the next caller starts a new
    call (this is not a cache). Callers sharing a key must mean the same
    call; the first caller's ``async_fn`` and ``args`` are the ones used.

    Use it as ``async with Coalescer() as coalescer:``; the calls run in a
    nursery it owns for the duration of that block.

    Errors: if the call raises an :exc:`Exception`, every caller waiting for
    it raises that exception (each its own copy, see below).

    Cancellation: a caller cancelled while waiting leaves alone; the call
    goes on for the others. When the last caller leaves, the call is
    cancelled and its key forgotten at once, so a newcomer starts afresh
    instead of joining a call that is being torn down. Leaving the
    ``async with`` block cancels calls still in flight; a caller still
    waiting for one (from a task outside the block) gets
    :exc:`trio.ClosedResourceError`. No caller waits for a call that can no
    longer deliver.
    """

    def __init__(self, name: str = "coalescer") -> None:
        self.name = name
        self._calls: dict[Hashable, _SharedCall] = {}
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._started = 0
        self._shared_waits = 0

    def __repr__(self) -> str:
        return f"<Coalescer {self.name!r} with {len(self._calls)} calls in flight>"

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[Coalescer]:
        async with _open_nursery_unwrapping_lone() as nursery:
            self._nursery = nursery
            try:
                yield self
            finally:
                self._closed = True
                for call in self._calls.values():
                    call.scope.cancel()

    async def run(self, key: Hashable, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Return the result of the one in-flight ``async_fn(*args)`` for ``key``.

        Raises:
          RuntimeError: if the coalescer is not open (outside its ``async with``).
          trio.ClosedResourceError: if the coalescer closed while the call was in flight.
          Exception: whatever the call raised (a per-caller copy).
        """
        if self._nursery is None or self._closed:
            raise RuntimeError(f"Coalescer {self.name!r} is not open")
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _SharedCall()
            self._started += 1
            self._nursery.start_soon(self._execute, key, call, async_fn, args, name=async_fn)
        else:
            self._shared_waits += 1
        call.waiters += 1
        try:
            await call.done.wait()
        except BaseException:
            call.waiters -= 1
            if call.waiters == 0 and not call.done.is_set():
                self._forget(key, call)
                call.scope.cancel()
            raise
        if call.error is not None:
            raise _copy_for_caller(call.error, call.error_tb)
        if not call.returned:
            raise trio.ClosedResourceError(f"Coalescer {self.name!r} closed while the call was in flight")
        return call.value

    def statistics(self) -> CoalescerStatistics:
        """Return the counts of calls, shared waits and calls in flight."""
        return CoalescerStatistics(
            calls=self._started, shared_waits=self._shared_waits, in_flight=len(self._calls)
        )

    async def _execute(
        self, key: Hashable, call: _SharedCall, async_fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        try:
            with call.scope:  # cancelled when the last caller leaves, or on close
                call.value = await async_fn(*args)
                call.returned = True
        except Exception as exc:
            call.error = exc
            call.error_tb = exc.__traceback__
        finally:
            # Cancelled by an enclosing scope, this task still wakes its callers.
            self._forget(key, call)
            call.done.set()

    def _forget(self, key: Hashable, call: _SharedCall) -> None:
        if self._calls.get(key) is call:
            del self._calls[key]


# --------------------------------------------------------------------------- TaskPool


def _default_is_overload(exc: BaseException) -> bool:
    return isinstance(exc, (Overloaded, trio.TooSlowError))


@dataclass(frozen=True, slots=True)
class TaskPoolStatistics:
    """A snapshot of a :class:`TaskPool`.

    ``active``: runs holding a slot; ``queued``: runs waiting for one;
    ``runs``: runs finished whatever the outcome; ``failures``: runs that
    raised an :exc:`Exception`, of which ``overloads`` were overload signals.
    Wait times are in seconds from :meth:`TaskPool.run` to getting a slot:
    ``wait_count``/``wait_sum``/``wait_max`` over the pool's life,
    ``wait_p50``/``wait_p99`` over the most recent waits.
    """

    name: str
    limit: int
    active: int
    queued: int
    runs: int
    failures: int
    overloads: int
    wait_count: int
    wait_sum: float
    wait_max: float
    wait_p50: float
    wait_p99: float


class TaskPool:
    """At most ``limit`` concurrent runs against one upstream.

    ``await pool.run(async_fn, *args)`` waits for a slot (first come, first
    served, via :class:`trio.CapacityLimiter`), runs ``async_fn(*args)`` and
    returns its result or raises its exception. A task may not nest runs in
    the same pool (:exc:`RuntimeError`, as for a CapacityLimiter).

    Adaptive mode (``adaptive=True``) is AIMD: when a run raises an overload
    signal (``is_overload(exc)``, by default :exc:`Overloaded` or
    :exc:`trio.TooSlowError`) the limit halves, but not below ``min_limit``;
    after every ``limit`` successes it grows by one, up to ``max_limit``
    (default: the initial limit). Overloads from runs that were already in
    flight when the limit last dropped do not halve it again: one burst of
    429s is one signal, as TCP reacts once per window. Runs holding a slot
    are never disturbed by a change; a smaller limit only holds new runs back.

    Cancellation: a run cancelled while waiting for a slot never takes one; a
    cancelled run releases its slot and counts neither as success nor failure.
    """

    _RECENT_WAITS = 512

    def __init__(
        self,
        name: str,
        limit: int,
        *,
        adaptive: bool = False,
        min_limit: int = 1,
        max_limit: int | None = None,
        is_overload: Callable[[BaseException], bool] | None = None,
    ) -> None:
        max_limit = limit if max_limit is None else max_limit
        if not 1 <= min_limit <= limit <= max_limit:
            raise ValueError(
                f"TaskPool {name!r} needs 1 <= min_limit <= limit <= max_limit, "
                f"got {min_limit}, {limit}, {max_limit}"
            )
        self.name = name
        self.adaptive = adaptive
        self.min_limit = min_limit
        self.max_limit = max_limit
        self._is_overload = is_overload or _default_is_overload
        self._limiter = trio.CapacityLimiter(limit)
        self._limit = limit
        self._epoch = 0  # bumped at every decrease
        self._successes = 0  # since the last change of limit
        self._runs = 0
        self._failures = 0
        self._overloads = 0
        self._wait_count = 0
        self._wait_sum = 0.0
        self._wait_max = 0.0
        self._recent_waits: deque[float] = deque(maxlen=self._RECENT_WAITS)

    def __repr__(self) -> str:
        return f"<TaskPool {self.name!r} limit={self._limit} active={self._limiter.borrowed_tokens}>"

    @property
    def limit(self) -> int:
        """The current number of slots."""
        return self._limit

    async def run(self, async_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``async_fn(*args)`` in a slot of this pool and return its result.

        Raises:
          Exception: whatever ``async_fn`` raised, unchanged.
        """
        queued_at = trio.current_time()
        async with self._limiter:
            self._record_wait(trio.current_time() - queued_at)
            epoch = self._epoch
            try:
                result = await async_fn(*args)
            except Exception as exc:
                self._failures += 1
                if self._is_overload(exc):
                    self._overloads += 1
                    if self.adaptive:
                        self._decrease(epoch)
                raise
            else:
                if self.adaptive:
                    self._increase()
                return result
            finally:
                self._runs += 1

    def statistics(self) -> TaskPoolStatistics:
        """Return the limit, occupancy, run counts and wait-time figures."""
        recent = sorted(self._recent_waits)
        return TaskPoolStatistics(
            name=self.name,
            limit=self._limit,
            active=self._limiter.borrowed_tokens,
            queued=self._limiter.statistics().tasks_waiting,
            runs=self._runs,
            failures=self._failures,
            overloads=self._overloads,
            wait_count=self._wait_count,
            wait_sum=self._wait_sum,
            wait_max=self._wait_max,
            wait_p50=_percentile(recent, 0.50),
            wait_p99=_percentile(recent, 0.99),
        )

    def _record_wait(self, waited: float) -> None:
        self._wait_count += 1
        self._wait_sum += waited
        self._wait_max = max(self._wait_max, waited)
        self._recent_waits.append(waited)

    def _decrease(self, started_in_epoch: int) -> None:
        if started_in_epoch != self._epoch:
            return  # this run was in flight before the last decrease
        self._epoch += 1
        self._set_limit(max(self.min_limit, self._limit // 2), "overload")

    def _increase(self) -> None:
        if self._limit >= self.max_limit:
            return
        self._successes += 1
        if self._successes >= self._limit:
            self._set_limit(self._limit + 1, "recovery")

    def _set_limit(self, new_limit: int, why: str) -> None:
        self._successes = 0
        if new_limit == self._limit:
            return
        log = logger.info if new_limit < self._limit else logger.debug
        log("pool %s: limit %d -> %d (%s)", self.name, self._limit, new_limit, why)
        self._limit = new_limit
        self._limiter.total_tokens = new_limit


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list; 0.0 when it is empty."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------- Background


@dataclass(frozen=True, slots=True)
class BackgroundStatistics:
    """A snapshot of a :class:`Background`: tasks spawned, running, and how they ended."""

    spawned: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class Background(_Lifetime):
    """Supervised fire-and-forget tasks (history, cache store, analytics, metrics).

    Use it as ``async with Background("bot") as bg:`` and call
    ``bg.spawn(async_fn, *args)`` from anywhere. A task's exception never
    reaches the caller of :meth:`spawn` nor the owner's block: it is logged
    with its traceback (``logger.exception``) and counted as ``failed``.

    Shutdown: :meth:`drain` closes the pool to new tasks, waits for the
    running ones up to a deadline, then cancels the rest. Leaving the block
    normally drains with ``exit_deadline`` seconds; leaving it with an
    exception (or cancelled) cancels every task at once. Either way the block
    ends only when every task has finished.
    """

    def __init__(self, name: str, *, exit_deadline: float = 5.0) -> None:
        self.name = name
        self.exit_deadline = exit_deadline
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._scopes: set[trio.CancelScope] = set()
        self._idle = trio.Event()
        self._idle.set()
        self._spawned = 0
        self._succeeded = 0
        self._failed = 0
        self._cancelled = 0

    def __repr__(self) -> str:
        return f"<Background {self.name!r} running={len(self._scopes)} closed={self._closed}>"

    @asynccontextmanager
    async def _lifetime(self) -> AsyncIterator[Background]:
        async with _open_nursery_unwrapping_lone() as nursery:
            self._nursery = nursery
            try:
                yield self
                await self.drain(self.exit_deadline)
            finally:
                self._closed = True
                for scope in list(self._scopes):
                    scope.cancel()

    def spawn(self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        """Start ``async_fn(*args)`` in the background and return at once.

        ``name`` labels the task in logs and in trio (default: the function's name).

        Raises:
          RuntimeError: if the pool is not open, or is draining or closed.
        """
        if self._nursery is None or self._closed:
            raise RuntimeError(f"Background {self.name!r} is not accepting tasks")
        label = name or getattr(async_fn, "__qualname__", repr(async_fn))
        scope = trio.CancelScope()
        if not self._scopes:
            self._idle = trio.Event()
        self._scopes.add(scope)
        self._spawned += 1
        self._nursery.start_soon(self._supervise, scope, label, async_fn, args, name=label)

    async def drain(self, deadline_seconds: float) -> int:
        """Stop accepting tasks, wait up to ``deadline_seconds``, cancel the rest.

        Returns once every task has finished (the cancelled ones included) and
        returns how many were cancelled at the deadline. Later calls to
        :meth:`spawn` raise :exc:`RuntimeError`; calling drain again is harmless.
        """
        self._closed = True
        with trio.move_on_after(deadline_seconds):
            await self._idle.wait()
        stragglers = list(self._scopes)
        if stragglers:
            logger.warning(
                "background %s: cancelling %d task(s) still running after %gs",
                self.name,
                len(stragglers),
                deadline_seconds,
            )
            for scope in stragglers:
                scope.cancel()
            await self._idle.wait()
        return len(stragglers)

    def statistics(self) -> BackgroundStatistics:
        """Return the counts of tasks spawned, running, succeeded, failed and cancelled."""
        return BackgroundStatistics(
            spawned=self._spawned,
            running=len(self._scopes),
            succeeded=self._succeeded,
            failed=self._failed,
            cancelled=self._cancelled,
        )

    async def _supervise(
        self, scope: trio.CancelScope, label: str, async_fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        try:
            with scope:
                await async_fn(*args)
        except Exception:
            self._failed += 1
            logger.exception("background %s: task %s failed", self.name, label)
        except BaseException:
            # Cancelled from an enclosing scope (possibly inside a group), or
            # KeyboardInterrupt: count it and let it propagate.
            self._cancelled += 1
            raise
        else:
            if scope.cancelled_caught:
                self._cancelled += 1
            else:
                self._succeeded += 1
        finally:
            self._scopes.discard(scope)
            if not self._scopes:
                self._idle.set()


# --------------------------------------------------------------------------- run_parallel


async def run_parallel(*async_fns: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run independent steps concurrently and return their results in order.

    Each argument is a zero-argument async callable (use
    :func:`functools.partial` for arguments). When a step raises, the others
    are cancelled and that exception propagates as itself, not wrapped in an
    :exc:`ExceptionGroup`. If two or more steps fail before the cancellation
    reaches them (in the same scheduling tick, or a step raising while being
    cancelled), trio's strict semantics apply: you get a
    :exc:`BaseExceptionGroup` of all of them. If the caller is cancelled, so
    are all steps, and the cancellation propagates as usual.
    """
    results: list[Any] = [None] * len(async_fns)

    async def step(index: int, async_fn: Callable[[], Awaitable[Any]]) -> None:
        results[index] = await async_fn()

    async with _open_nursery_unwrapping_lone() as nursery:
        for index, async_fn in enumerate(async_fns):
            nursery.start_soon(step, index, async_fn, name=async_fn)
    return results
