"""RWLock and KeyedLock: overlap, exclusion, fairness, cancellation, cleanup."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shell.sync import KeyedLock, RWLock, RWLockStatistics

IDLE = RWLockStatistics(readers=0, writer_held=False, waiting_readers=0, waiting_writers=0)


@asynccontextmanager
async def guarded_nursery(seconds: float = 1000):
    """A nursery that fails (TooSlowError) instead of hanging if its tasks deadlock.

    On the autojump clock a deadlock jumps straight to this deadline.
    """
    with trio.fail_after(seconds):
        async with trio.open_nursery() as nursery:
            yield nursery


async def _assert_usable(lock: RWLock) -> None:
    """A writer, then two overlapping readers, can still get the lock promptly."""
    with trio.fail_after(1):
        async with lock.write():
            assert lock.statistics().writer_held
        async with guarded_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(_read_for, lock, 0.5)
    assert lock.statistics() == IDLE


async def _read_for(lock: RWLock, seconds: float) -> None:
    async with lock.read():
        await trio.sleep(seconds)


# --------------------------------------------------------------------------- RWLock


async def test_fifty_readers_overlap(autojump_clock):
    lock = RWLock()
    start = trio.current_time()
    most = 0

    async def reader():
        nonlocal most
        async with lock.read():
            most = max(most, lock.statistics().readers)
            await trio.sleep(1)

    async with guarded_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(reader)
    assert trio.current_time() - start == 1
    assert most == 50
    assert lock.statistics() == IDLE


async def test_writer_is_exclusive(autojump_clock):
    lock = RWLock()
    inside = []  # ("r" | "w") for everyone currently holding the lock
    overlaps = []

    async def hold(kind, delay):
        await trio.sleep(delay)
        async with lock.write() if kind == "w" else lock.read():
            if "w" in inside or (kind == "w" and inside):
                overlaps.append((kind, list(inside)))
            inside.append(kind)
            await trio.sleep(1)
            inside.remove(kind)

    async with guarded_nursery() as nursery:
        for i, kind in enumerate("wrwrrwwr"):
            nursery.start_soon(hold, kind, i * 0.25)
    assert overlaps == []
    assert lock.statistics() == IDLE


async def test_waiting_writer_blocks_new_readers(autojump_clock):
    lock = RWLock()
    acquired = {}

    async def reader(name, delay, hold):
        await trio.sleep(delay)
        async with lock.read():
            acquired[name] = trio.current_time()
            await trio.sleep(hold)

    async def writer(name, delay, hold):
        await trio.sleep(delay)
        async with lock.write():
            acquired[name] = trio.current_time()
            await trio.sleep(hold)

    async with guarded_nursery() as nursery:
        nursery.start_soon(reader, "r1", 0, 2)  # holds 0..2
        nursery.start_soon(writer, "w", 0.5, 1)  # waits from 0.5, holds 2..3
        nursery.start_soon(reader, "r2", 1, 1)  # arrives at 1: must queue behind w
        await trio.sleep(1.5)
        assert lock.statistics() == RWLockStatistics(
            readers=1, writer_held=False, waiting_readers=1, waiting_writers=1
        )
    assert acquired == {"r1": 0, "w": 2, "r2": 3}


async def test_write_release_admits_waiting_readers_before_next_writer(autojump_clock):
    lock = RWLock()
    order = []

    async def reader(name):
        async with lock.read():
            order.append((name, trio.current_time()))
            await trio.sleep(1)

    async def writer(name):
        async with lock.write():
            order.append((name, trio.current_time()))
            await trio.sleep(1)

    async with guarded_nursery() as nursery:
        nursery.start_soon(writer, "w1")  # holds 0..1
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(reader, "r1")
        nursery.start_soon(reader, "r2")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(writer, "w2")
        await trio.testing.wait_all_tasks_blocked()
        assert lock.statistics().waiting_readers == 2
        assert lock.statistics().waiting_writers == 1
    # Readers that waited through w1 go together, then w2: neither side starves.
    assert sorted(order) == sorted([("w1", 0), ("r1", 1), ("r2", 1), ("w2", 2)])


async def test_cancelled_waiting_writer_admits_the_readers_behind_it(autojump_clock):
    lock = RWLock()
    r2_acquired_at = None

    async def late_reader():
        nonlocal r2_acquired_at
        async with lock.read():
            r2_acquired_at = trio.current_time()

    async def impatient_writer():
        with trio.move_on_after(1) as scope:
            async with lock.write():
                pytest.fail("the writer must not get the lock while r1 reads")
        assert scope.cancelled_caught

    async with guarded_nursery() as nursery:
        nursery.start_soon(_read_for, lock, 10)  # r1 holds 0..10
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(impatient_writer)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(late_reader)  # queues behind the waiting writer
        await trio.testing.wait_all_tasks_blocked()
        assert lock.statistics().waiting_readers == 1
    # Admitted when the writer gave up at t=1, not when r1 left at t=10.
    assert r2_acquired_at == 1
    assert lock.statistics() == IDLE


async def test_cancelled_waiters_leave_the_lock_consistent(autojump_clock):
    lock = RWLock()
    got_in = []

    async def wait_for(kind):
        async with lock.write() if kind == "w" else lock.read():
            got_in.append(kind)

    await lock.acquire_write()
    async with guarded_nursery() as waiters:
        for kind in "rwrwwr":
            waiters.start_soon(wait_for, kind)
        await trio.testing.wait_all_tasks_blocked()
        assert lock.statistics() == RWLockStatistics(
            readers=0, writer_held=True, waiting_readers=3, waiting_writers=3
        )
        waiters.cancel_scope.cancel()
    assert lock.statistics() == RWLockStatistics(
        readers=0, writer_held=True, waiting_readers=0, waiting_writers=0
    )
    lock.release_write()
    assert got_in == []
    assert lock.statistics() == IDLE
    await _assert_usable(lock)


async def test_cancelled_waiting_reader_leaves_writer_queue_intact(autojump_clock):
    lock = RWLock()
    events = []

    async def writer():
        async with lock.write():
            events.append(("w", trio.current_time()))

    async with guarded_nursery() as nursery:
        nursery.start_soon(_read_for, lock, 2)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1):
            await lock.acquire_read()
            pytest.fail("a reader must queue behind a waiting writer")
        assert lock.statistics() == RWLockStatistics(
            readers=1, writer_held=False, waiting_readers=0, waiting_writers=1
        )
    assert events == [("w", 2)]
    assert lock.statistics() == IDLE


async def test_acquire_in_a_cancelled_scope_takes_nothing():
    lock = RWLock()
    with trio.CancelScope() as scope:
        scope.cancel()
        await lock.acquire_read()
    with trio.CancelScope() as scope:
        scope.cancel()
        await lock.acquire_write()
    assert lock.statistics() == IDLE


async def test_wrong_releases_and_reentry_raise():
    lock = RWLock()
    with pytest.raises(RuntimeError):
        lock.release_read()
    with pytest.raises(RuntimeError):
        lock.release_write()

    async with lock.read():
        with pytest.raises(RuntimeError):
            await lock.acquire_read()
        with pytest.raises(RuntimeError):
            await lock.acquire_write()
        with pytest.raises(RuntimeError):
            lock.release_write()

    await lock.acquire_write()
    async with guarded_nursery() as nursery:

        async def release_from_another_task():
            with pytest.raises(RuntimeError):
                lock.release_write()

        nursery.start_soon(release_from_another_task)
    assert lock.statistics().writer_held
    lock.release_write()
    assert lock.statistics() == IDLE


_op = st.tuples(
    st.sampled_from("rw"),
    st.integers(0, 6),  # arrival time
    st.integers(0, 3),  # hold time
    st.one_of(st.none(), st.integers(0, 8)),  # give up waiting after this long
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, min_size=1, max_size=14))
def test_random_schedules_never_overlap_a_writer(ops):
    """No writer overlaps anyone, every patient task gets in, nothing is left behind."""

    async def main():
        lock = RWLock()
        readers = writers = 0
        entered = []

        async def actor(index, kind, arrival, hold, patience):
            nonlocal readers, writers
            await trio.sleep(arrival)
            with trio.move_on_after(patience if patience is not None else float("inf")):
                async with lock.write() if kind == "w" else lock.read():
                    assert writers == 0
                    assert kind == "r" or readers == 0
                    if kind == "w":
                        writers += 1
                    else:
                        readers += 1
                    entered.append(index)
                    stats = lock.statistics()
                    if kind == "w":
                        assert stats.writer_held and stats.readers == 0
                    else:
                        assert not stats.writer_held and stats.readers >= 1
                    with trio.CancelScope(shield=True):
                        await trio.sleep(hold)
                    if kind == "w":
                        writers -= 1
                    else:
                        readers -= 1

        async with guarded_nursery() as nursery:
            for index, (kind, arrival, hold, patience) in enumerate(ops):
                nursery.start_soon(actor, index, kind, arrival, hold, patience)
        patient = {i for i, (_, _, _, patience) in enumerate(ops) if patience is None}
        assert patient <= set(entered)
        assert lock.statistics() == IDLE
        await _assert_usable(lock)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --------------------------------------------------------------------------- KeyedLock


async def test_keyed_lock_serialises_per_key_only(autojump_clock):
    locks = KeyedLock()
    finished = {}

    async def work(name, key):
        async with locks.lock(key):
            await trio.sleep(1)
        finished[name] = trio.current_time()

    async with guarded_nursery() as nursery:
        nursery.start_soon(work, "a1", "alice")
        nursery.start_soon(work, "a2", "alice")
        nursery.start_soon(work, "b1", "bob")
        await trio.testing.wait_all_tasks_blocked()
        assert len(locks) == 2
        assert locks.locked("alice") and locks.locked("bob")
        assert not locks.locked("carol")
    assert sorted(finished.values()) == [1, 1, 2]
    assert finished["b1"] == 1
    assert len(locks) == 0
    assert not locks.locked("alice")


async def test_keyed_lock_frees_entries_even_when_waiters_are_cancelled(autojump_clock):
    locks = KeyedLock()

    async def wait_for(key):
        async with locks.lock(key):
            pytest.fail("must not get a held key")

    await locks.acquire("k")
    async with guarded_nursery() as waiters:
        for _ in range(3):
            waiters.start_soon(wait_for, "k")
        await trio.testing.wait_all_tasks_blocked()
        assert len(locks) == 1
        waiters.cancel_scope.cancel()
    assert len(locks) == 1  # still held by us
    locks.release("k")
    assert len(locks) == 0
    assert not locks.locked("k")
    async with locks.lock("k"):  # still usable
        assert len(locks) == 1
    assert len(locks) == 0


async def test_keyed_lock_many_keys_leave_nothing_behind(autojump_clock):
    locks = KeyedLock()

    async def work(key):
        async with locks.lock(key):
            await trio.sleep(key % 3)

    async with guarded_nursery() as nursery:
        for i in range(300):
            nursery.start_soon(work, i % 40)
    assert len(locks) == 0


async def test_try_lock_tells_a_second_message_apart(autojump_clock):
    locks = KeyedLock()
    replies = []

    async def on_message(user, text):
        with locks.try_lock(user) as acquired:
            if not acquired:
                replies.append((text, "busy"))
                return
            await trio.sleep(1)
            replies.append((text, "answered"))

    async with guarded_nursery() as nursery:
        nursery.start_soon(on_message, "u1", "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(on_message, "u1", "second")
        nursery.start_soon(on_message, "u2", "other user")
    assert sorted(replies) == [("first", "answered"), ("other user", "answered"), ("second", "busy")]
    assert len(locks) == 0
    await on_message("u1", "third")
    assert replies[-1] == ("third", "answered")


async def test_try_lock_refuses_while_someone_waits(autojump_clock):
    locks = KeyedLock()

    async def holder():
        async with locks.lock("k"):
            await trio.sleep_forever()

    async with guarded_nursery() as nursery:
        await locks.acquire("k")
        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        locks.release("k")  # handed straight to the waiting holder
        assert locks.locked("k")
        with locks.try_lock("k") as acquired:
            assert not acquired
        with pytest.raises(trio.WouldBlock):
            locks.acquire_nowait("k")
        assert len(locks) == 1
        nursery.cancel_scope.cancel()
    assert len(locks) == 0


async def test_keyed_lock_wrong_releases_and_reentry_raise():
    locks = KeyedLock()
    with pytest.raises(RuntimeError):
        locks.release("nobody")
    assert len(locks) == 0

    locks.acquire_nowait("k")
    with pytest.raises(RuntimeError):
        locks.acquire_nowait("k")
    with pytest.raises(RuntimeError):
        await locks.acquire("k")

    async def release_from_another_task():
        with pytest.raises(RuntimeError):
            locks.release("k")

    async with guarded_nursery() as nursery:
        nursery.start_soon(release_from_another_task)
    assert locks.locked("k")
    assert len(locks) == 1
    locks.release("k")
    assert len(locks) == 0


@settings(max_examples=100, deadline=None)
@given(
    jobs=st.lists(
        st.tuples(
            st.integers(0, 3),  # key
            st.integers(0, 4),  # arrival
            st.integers(0, 2),  # hold
            st.one_of(st.none(), st.integers(0, 5)),  # patience
            st.booleans(),  # try_lock instead of waiting
        ),
        min_size=1,
        max_size=20,
    )
)
def test_keyed_lock_random_schedules(jobs):
    """One holder per key at any time, and no entry outlives its users."""

    async def main():
        locks = KeyedLock()
        holders: dict[int, int] = {}

        async def job(index, key, arrival, hold, patience, non_blocking):
            await trio.sleep(arrival)
            if non_blocking:
                with locks.try_lock(key) as acquired:
                    if acquired:
                        assert key not in holders
                        holders[key] = index
                        await trio.sleep(hold)
                        del holders[key]
                return
            with trio.move_on_after(patience if patience is not None else float("inf")):
                async with locks.lock(key):
                    assert key not in holders
                    holders[key] = index
                    with trio.CancelScope(shield=True):
                        await trio.sleep(hold)
                    del holders[key]

        async with guarded_nursery() as nursery:
            for index, spec in enumerate(jobs):
                nursery.start_soon(job, index, *spec)
        assert len(locks) == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
