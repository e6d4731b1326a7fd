"""Locks the bot shares between tasks: a readers-writer lock and a lock per key.

:class:`RWLock` lets any number of readers overlap and gives a writer the
lock alone; once a writer waits, new readers queue behind it.
:class:`KeyedLock` is a mutex per key (one in-flight reply per user) whose
entries disappear as soon as nobody holds or waits for the key.

Both are built on :class:`trio.lowlevel.ParkingLot` (directly, or through
:class:`trio.Lock`) and hand the lock straight to the waiter they wake, so a
task cancelled while waiting never owns anything and leaves the counts exact.
Neither lock is re-entrant: a task that asks again for what it already holds
gets :exc:`RuntimeError` rather than a deadlock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import trio
from trio.lowlevel import ParkingLot, Task, current_task, enable_ki_protection

__all__ = ["KeyedLock", "RWLock", "RWLockStatistics"]


@dataclass(frozen=True, slots=True)
class RWLockStatistics:
    """A snapshot of an :class:`RWLock` (see :meth:`RWLock.statistics`)."""

    readers: int
    writer_held: bool
    waiting_readers: int
    waiting_writers: int


class RWLock:
    """A readers-writer lock: many readers at once, or one writer alone.

    Use it as ``async with lock.read(): ...`` or ``async with lock.write(): ...``.

    Fairness: writers are preferred. While a writer holds or waits for the
    lock, newly arriving readers wait, so a steady stream of readers cannot
    starve writers. When a writer releases, every reader that was waiting at
    that moment is admitted together before the next writer, so a steady
    stream of writers cannot starve readers either.

    Ownership is per task: the task that acquired must release. Releasing
    from another task, or releasing what is not held, raises
    :exc:`RuntimeError`; so does acquiring again while already holding the
    lock in either mode (that would deadlock).

    Cancellation: :meth:`acquire_read` and :meth:`acquire_write` are
    checkpoints. The lock is handed to a waiter at the moment it is woken, so
    a waiter cancelled before that owns nothing and simply leaves the queue;
    if it was the last waiting writer, the readers queued behind it are
    admitted at once. Once woken, the waiter holds the lock and any pending
    cancellation arrives at its next checkpoint (``async with`` then
    releases it).
    """

    def __init__(self) -> None:
        self._readers: set[Task] = set()
        self._writer: Task | None = None
        self._waiting_readers = ParkingLot()
        self._waiting_writers = ParkingLot()

    def __repr__(self) -> str:
        s = self.statistics()
        state = "write-locked" if s.writer_held else f"{s.readers} readers"
        return (
            f"<RWLock {state}, {s.waiting_readers} readers and "
            f"{s.waiting_writers} writers waiting>"
        )

    @asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        """Hold the lock shared for the body of an ``async with`` block."""
        await self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        """Hold the lock exclusively for the body of an ``async with`` block."""
        await self.acquire_write()
        try:
            yield
        finally:
            self.release_write()

    @enable_ki_protection
    async def acquire_read(self) -> None:
        """Acquire the lock shared, waiting while a writer holds or waits for it.

        Raises:
          RuntimeError: if the calling task already holds the lock.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        task = current_task()
        self._check_not_holding(task)
        if self._writer is None and not self._waiting_writers:
            self._readers.add(task)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        # Whoever wakes us has already added us to self._readers.
        await self._waiting_readers.park()

    @enable_ki_protection
    async def acquire_write(self) -> None:
        """Acquire the lock exclusively, waiting until nobody else holds it.

        Raises:
          RuntimeError: if the calling task already holds the lock.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        task = current_task()
        self._check_not_holding(task)
        if self._writer is None and not self._readers and not self._waiting_writers:
            self._writer = task
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        try:
            # Whoever wakes us has already made us self._writer.
            await self._waiting_writers.park()
        except BaseException:
            # Not woken, so we own nothing; but readers may have queued only
            # because we were waiting.
            if self._writer is None and not self._waiting_writers:
                self._admit_waiting_readers()
            raise

    @enable_ki_protection
    def release_read(self) -> None:
        """Release a shared hold taken by the calling task.

        Raises:
          RuntimeError: if the calling task does not hold the lock for reading.
        """
        task = current_task()
        if task not in self._readers:
            raise RuntimeError("release_read() by a task that does not hold the lock for reading")
        self._readers.remove(task)
        if not self._readers and self._waiting_writers:
            (self._writer,) = self._waiting_writers.unpark(count=1)

    @enable_ki_protection
    def release_write(self) -> None:
        """Release the exclusive hold taken by the calling task.

        Readers waiting at this moment go first, all together; otherwise the
        next waiting writer gets the lock.

        Raises:
          RuntimeError: if the calling task does not hold the lock for writing.
        """
        if current_task() is not self._writer:
            raise RuntimeError("release_write() by a task that does not hold the lock for writing")
        self._writer = None
        if self._waiting_readers:
            self._admit_waiting_readers()
        elif self._waiting_writers:
            (self._writer,) = self._waiting_writers.unpark(count=1)

    def statistics(self) -> RWLockStatistics:
        """Return the current readers, writer and queue lengths."""
        return RWLockStatistics(
            readers=len(self._readers),
            writer_held=self._writer is not None,
            waiting_readers=len(self._waiting_readers),
            waiting_writers=len(self._waiting_writers),
        )

    def _check_not_holding(self, task: Task) -> None:
        if task is self._writer or task in self._readers:
            raise RuntimeError("RWLock is not re-entrant: this task already holds it")

    def _admit_waiting_readers(self) -> None:
        self._readers.update(self._waiting_readers.unpark_all())


class _KeyEntry:
    """One key's mutex, and how many tasks hold or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.users = 0


class KeyedLock:
    """A mutex per key, created on first use and freed when no task needs it.

    ``async with locks.lock(user_id): ...`` serialises tasks per key while
    different keys proceed independently. An entry lives exactly as long as
    some task holds or waits for its key, so ``len(locks)`` is the number of
    live keys and memory does not grow with the number of keys ever seen.

    To refuse rather than wait (a second message while a reply is in flight)::

        with locks.try_lock(user_id) as acquired:
            if not acquired:
                return "still working on your last message"
            ...

    Each key behaves like a :class:`trio.Lock`: fair (first come, first
    served), not re-entrant (:exc:`RuntimeError`), released only by the task
    that acquired it (:exc:`RuntimeError`), and :meth:`acquire` is a
    checkpoint. A task cancelled while waiting owns nothing and its claim on
    the entry is dropped, so the entry is freed if it was the last.
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, _KeyEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<KeyedLock with {len(self._entries)} live keys>"

    def locked(self, key: Hashable) -> bool:
        """Return True if some task holds the lock for ``key``."""
        entry = self._entries.get(key)
        return entry is not None and entry.lock.locked()

    @asynccontextmanager
    async def lock(self, key: Hashable) -> AsyncIterator[None]:
        """Hold the lock for ``key`` for the body of an ``async with`` block."""
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)

    @contextmanager
    def try_lock(self, key: Hashable) -> Iterator[bool]:
        """Take the lock for ``key`` only if that needs no waiting.

        Yields True and holds the lock for the body if it was free; yields
        False and holds nothing if another task holds or waits for it.
        """
        try:
            self.acquire_nowait(key)
        except trio.WouldBlock:
            yield False
            return
        try:
            yield True
        finally:
            self.release(key)

    async def acquire(self, key: Hashable) -> None:
        """Acquire the lock for ``key``, waiting if another task holds it.

        Raises:
          RuntimeError: if the calling task already holds this key.
        """
        entry = self._claim(key)
        try:
            await entry.lock.acquire()
        except BaseException:
            self._unclaim(key, entry)
            raise

    @enable_ki_protection
    def acquire_nowait(self, key: Hashable) -> None:
        """Acquire the lock for ``key`` without waiting.

        Raises:
          trio.WouldBlock: if another task holds or waits for ``key``.
          RuntimeError: if the calling task already holds this key.
        """
        entry = self._claim(key)
        try:
            entry.lock.acquire_nowait()
        except BaseException:
            self._unclaim(key, entry)
            raise

    @enable_ki_protection
    def release(self, key: Hashable) -> None:
        """Release the lock for ``key``; the next waiter, if any, gets it.

        Raises:
          RuntimeError: if the calling task does not hold ``key``.
        """
        entry = self._entries.get(key)
        if entry is None:
            raise RuntimeError(f"release() of key {key!r}, which nobody holds")
        entry.lock.release()  # raises RuntimeError for a non-owner, changing nothing
        self._unclaim(key, entry)

    def _claim(self, key: Hashable) -> _KeyEntry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _KeyEntry()
        entry.users += 1
        return entry

    def _unclaim(self, key: Hashable, entry: _KeyEntry) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._entries[key]
