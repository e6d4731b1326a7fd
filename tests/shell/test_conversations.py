"""Conversations, the memory store and the Memory facade: limits, sessions, history, digest,
persistence, forgetting, the hourly sweep, the context cache, shedding, compression, memory growth.

Time-dependent tests run on trio's MockClock (``clock=trio.current_time``
makes turn times exact). Store tests use real SQLite files in ``tmp_path``
and check the disk with a separate ``sqlite3`` connection. While a worker
thread runs SQLite, an autojump clock may jump to the next deadline; the
tests that run a writer or a wheel leave room for that.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import load_impl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.workloads import shell_turns
from shell.cache import EMPTY_HISTORY_DIGEST, digest_history
from shell.memory import (
    Context,
    ContextCache,
    ConversationKey,
    Conversations,
    Memory,
    MemoryStore,
    ServerMemory,
    StoreError,
    Turn,
    conversation_key,
    digest_turns,
)
from shell.memory.store import SCHEMA_VERSION, Batch
from shell.service import Runtime
from shell.timers import TimerWheel

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
CHILD = Path(__file__).with_name("memory_growth_child.py")
ALICE = conversation_key(1001, 555)
BOB = conversation_key(2002, 555)


@pytest.fixture
def db_clock() -> trio.testing.MockClock:
    """A MockClock for tests that run SQLite in worker threads: it jumps after 1 ms of real idleness.

    With ``autojump_threshold=0`` trio polls without sleeping while a worker
    thread runs, and the poll starves the thread of the GIL (100 ms a call).
    """
    return trio.testing.MockClock(autojump_threshold=0.001)


def texts(count: int, seed: int = 3) -> list[str]:
    return shell_turns.chat_turns(count, seed)


def make(store: MemoryStore | None = None, **settings) -> Conversations:
    return Conversations(store, clock=trio.current_time, **settings)


def rows(path: Path, sql: str, *args) -> list[tuple]:
    """Query the database file directly, as an outsider would."""
    with sqlite3.connect(path) as connection:
        return connection.execute(sql, args).fetchall()


async def settled(store: MemoryStore) -> None:
    """Wait for the store's SQLite call in progress, if any, without making a write.

    Needed after a sleep on an autojump clock: while a worker thread runs,
    trio is idle, so the clock may jump to the test's deadline first.
    """
    async with store._lock:
        pass


async def fill(conversations: Conversations, key: ConversationKey, count: int, *, start: int = 0) -> list[str]:
    """Append *count* alternating turns to *key*; return their texts."""
    added = texts(start + count)[start:]
    for index, text in enumerate(added, start):
        await conversations.append(key, ("user", "assistant")[index % 2], text)
    return added


# --------------------------------------------------------------------------- keys and turns


def test_conversation_keys_are_channel_or_dm_plus_user():
    assert conversation_key(42, 7) == ConversationKey("7", "42")
    assert conversation_key("42") == ConversationKey("dm", "42")
    assert conversation_key(42, 7) != conversation_key(42, 8) != conversation_key(42)


@pytest.mark.parametrize(
    "user, channel, error",
    [(None, 1, TypeError), (True, 1, TypeError), (1.5, 1, TypeError), (-1, 1, ValueError),
     ("", 1, ValueError), (" 1", 1, ValueError), (1, "", ValueError), (1, b"7", TypeError)],
)  # fmt: skip
def test_bad_ids_are_refused(user, channel, error):
    with pytest.raises(error):
        conversation_key(user, channel)


async def test_history_is_role_tagged_turns_in_order(autojump_clock):
    conversations = make()
    await conversations.append(ALICE, "user", "hello")
    await trio.sleep(5)
    await conversations.append(ALICE, "assistant", "hi there")
    history = await conversations.history(ALICE)
    assert history == [Turn("user", "hello", 0.0), Turn("assistant", "hi there", 5.0)]
    assert all(isinstance(turn, Turn) for turn in history)
    assert await conversations.history(BOB) == []


# --------------------------------------------------------------------------- limits


async def test_the_turn_limit_drops_the_oldest_turns(autojump_clock):
    conversations = make()
    added = await fill(conversations, ALICE, 130)
    history = await conversations.history(ALICE, 10**9)
    assert [turn.text for turn in history] == added[-100:]
    assert conversations.stats()["turns"] == 100


async def test_the_character_limit_drops_the_oldest_turns(autojump_clock):
    conversations = make(max_chars=1000)
    added = await fill(conversations, ALICE, 60)
    history = await conversations.history(ALICE, 10**9)
    kept = [turn.text for turn in history]
    assert kept == added[len(added) - len(kept) :]
    assert sum(map(len, kept)) <= 1000
    assert sum(map(len, added[len(added) - len(kept) - 1 :])) > 1000  # one more would not fit


async def test_a_turn_longer_than_the_character_limit_is_refused(autojump_clock):
    conversations = make(max_chars=100)
    await conversations.append(ALICE, "user", "x" * 100)
    with pytest.raises(ValueError, match="limit"):
        await conversations.append(ALICE, "user", "y" * 101)
    assert await conversations.history(ALICE) == [Turn("user", "x" * 100, 0.0)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=40),
    budgets=st.lists(st.integers(0, 120), min_size=1, max_size=4),
    plain_turns=st.integers(1, 5),
)
def test_history_matches_a_plain_model(impl_kind, lengths, budgets, plain_turns):
    """Random appends on small limits: history equals that of an uncompressed list, for any budget.

    On both framing implementations (the compiled one and its pure twin).
    """
    max_turns, max_chars = 9, 100
    framing = load_impl("framing", impl_kind)

    async def main():
        conversations = make(max_turns=max_turns, max_chars=max_chars, plain_turns=plain_turns, framing=framing)
        model: list[Turn] = []
        for index, length in enumerate(lengths):
            text = "é" * (index % 3) + f"{index}:" + "w" * length  # multi-byte text too
            model.append(await conversations.append(ALICE, ("user", "assistant")[index % 2], text[:max_chars]))
            while len(model) > max_turns or sum(len(turn.text) for turn in model) > max_chars:
                model.pop(0)
            for budget in budgets:
                expected: list[Turn] = []
                for turn in reversed(model):
                    if sum(len(t.text) for t in expected) + len(turn.text) > budget:
                        break
                    expected.insert(0, turn)
                assert await conversations.history(ALICE, budget) == expected
                assert await conversations.digest(ALICE, budget) == digest_turns(expected)
            await trio.sleep(1)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_the_history_budget_takes_the_newest_turns_that_fit(autojump_clock):
    conversations = make(history_budget=25)
    for text in ("a" * 10, "b" * 10, "c" * 10, "d" * 10):
        await conversations.append(ALICE, "user", text)
    assert [turn.text for turn in await conversations.history(ALICE)] == ["c" * 10, "d" * 10]
    assert [turn.text for turn in await conversations.history(ALICE, 10)] == ["d" * 10]
    assert await conversations.history(ALICE, 9) == []
    assert await conversations.history(ALICE, 0) == []


# --------------------------------------------------------------------------- sessions


async def test_an_idle_session_times_out_and_starts_fresh(autojump_clock):
    conversations = make()
    await conversations.append(ALICE, "user", "first session")
    await trio.sleep(30 * MINUTE)
    assert len(await conversations.history(ALICE)) == 1  # exactly the timeout: still on
    await trio.sleep(0.001)
    assert await conversations.history(ALICE) == []
    await conversations.append(ALICE, "user", "second session")
    assert [turn.text for turn in await conversations.history(ALICE)] == ["second session"]
    assert conversations.stats()["expired_sessions"] == 1


async def test_reading_does_not_extend_a_session(autojump_clock):
    conversations = make(session_timeout=100)
    await conversations.append(ALICE, "user", "hello")
    for _ in range(3):
        await trio.sleep(40)
        await conversations.history(ALICE)
    assert await conversations.history(ALICE) == []


async def test_no_session_timeout(autojump_clock):
    conversations = make(session_timeout=None)
    await conversations.append(ALICE, "user", "hello")
    await trio.sleep(10 * DAY)
    assert len(await conversations.history(ALICE)) == 1


async def test_reset_deletes_the_turns(autojump_clock):
    conversations = make()
    await fill(conversations, ALICE, 20)
    assert await conversations.reset(ALICE) == 20
    assert await conversations.history(ALICE) == []
    assert await conversations.reset(ALICE) == 0


# --------------------------------------------------------------------------- digest


async def test_the_digest_is_the_cache_digest_of_the_history_used(autojump_clock):
    conversations = make(history_budget=2000)
    assert await conversations.digest(ALICE) == EMPTY_HISTORY_DIGEST
    await fill(conversations, ALICE, 40)
    history = await conversations.history(ALICE)
    digest = await conversations.digest(ALICE)
    assert digest == digest_history((turn.role, turn.text) for turn in history) == digest_turns(history)
    assert await conversations.digest(ALICE) == digest  # reading changes nothing
    await conversations.append(ALICE, "user", "why?")
    assert await conversations.digest(ALICE) != digest


async def test_equal_histories_have_equal_digests(autojump_clock):
    conversations = make()
    for key in (ALICE, BOB):
        await conversations.append(key, "user", "what is trio?")
        await conversations.append(key, "assistant", "A structured concurrency library.")
    assert await conversations.digest(ALICE) == await conversations.digest(BOB)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "role, text, error",
    [("model", "hi", ValueError), ("system", "hi", ValueError), (None, "hi", TypeError),
     ("user", None, TypeError), ("user", b"hi", TypeError), ("user", "", ValueError),
     ("user", "  \n", ValueError), ("user", "x" * 50_001, ValueError), ("user", "bad \ud800", ValueError)],
)  # fmt: skip
async def test_bad_turns_are_refused_and_change_nothing(autojump_clock, role, text, error):
    conversations = make()
    await fill(conversations, ALICE, 12)
    before = (await conversations.history(ALICE), await conversations.version(ALICE), conversations.stats())
    with pytest.raises(error):
        await conversations.append(ALICE, role, text)
    assert (await conversations.history(ALICE), await conversations.version(ALICE), conversations.stats()) == before


@pytest.mark.parametrize("budget, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("9", TypeError)])
async def test_bad_budgets_are_refused(autojump_clock, budget, error):
    with pytest.raises(error):
        await make().history(ALICE, budget)


async def test_keys_must_be_conversation_keys(autojump_clock):
    conversations = make()
    for key in (("555", "1001"), "555:1001", ConversationKey(555, 1001)):
        with pytest.raises(TypeError):
            await conversations.append(key, "user", "hi")
    assert len(conversations) == 0


@pytest.mark.parametrize(
    "setting, value, error",
    [("max_turns", 0, ValueError), ("max_turns", 1.0, TypeError), ("max_chars", -5, ValueError),
     ("session_timeout", 0, ValueError), ("session_timeout", float("inf"), ValueError),
     ("plain_turns", 0, ValueError), ("history_budget", -1, ValueError), ("stale_after", "30d", TypeError),
     ("idle_after", float("nan"), ValueError), ("sweep_every", -1, ValueError)],
)  # fmt: skip
def test_bad_settings_are_refused(setting, value, error):
    with pytest.raises(error):
        Conversations(**{setting: value})


def test_a_store_must_be_a_memory_store(tmp_path):
    with pytest.raises(TypeError):
        Conversations(str(tmp_path / "memory.db"))


# --------------------------------------------------------------------------- compression


async def test_older_turns_are_held_packed(autojump_clock):
    conversations = make()
    added = await fill(conversations, ALICE, 100)
    stats = conversations.stats()
    assert stats["packed_turns"] + stats["plain_turns"] == 100
    assert stats["plain_turns"] < 8
    assert 0 < stats["packed_bytes"] < 0.6 * sum(len(text.encode()) for text in added)


def test_compressed_memory_per_turn_is_at_most_40_percent_of_plain_turns():
    """tracemalloc: bytes held per live turn in full conversations of chat-like text, compressed
    vs the same turns as plain Turn objects of str (see bench/workloads/shell_turns.py)."""
    figures = shell_turns.BYTES_PER_TURN(conversations=40)
    assert figures["ratio"] <= shell_turns.MAX_RATIO, figures
    assert figures["compressed"] <= 0.40 * figures["plain"], figures


# --------------------------------------------------------------------------- persistence


async def test_a_restart_keeps_the_history(db_clock, tmp_path):
    path = tmp_path / "memory.db"
    store = MemoryStore(path)
    conversations = make(store)
    await fill(conversations, ALICE, 30)
    await fill(conversations, BOB, 3)
    before = {key: await conversations.history(key, 10**9) for key in (ALICE, BOB)}
    await store.flush()
    await store.aclose()

    store = MemoryStore(path)
    restarted = make(store)
    assert len(restarted) == 0  # loaded lazily, on first use
    assert await restarted.history(ALICE, 10**9) == before[ALICE]
    assert restarted.stats()["loaded"] == 1
    assert await restarted.history(BOB, 10**9) == before[BOB]
    await restarted.append(ALICE, "user", "and after the restart?")
    history = await restarted.history(ALICE, 10**9)
    assert history[:-1] == before[ALICE] and history[-1].text == "and after the restart?"
    await store.flush()
    assert rows(path, "SELECT MAX(seq), COUNT(*) FROM turns WHERE user_id = ?", ALICE.user_id) == [(30, 31)]
    await store.aclose()


async def test_the_disk_holds_exactly_the_live_turns(db_clock, tmp_path):
    path = tmp_path / "memory.db"
    store = MemoryStore(path)
    conversations = make(store, max_turns=10)
    await fill(conversations, ALICE, 25)
    await store.flush()
    live = await conversations.history(ALICE, 10**9)
    on_disk = rows(path, "SELECT seq, role, text, at FROM turns WHERE user_id = ? ORDER BY seq", ALICE.user_id)
    assert [(role, text, at) for _, role, text, at in on_disk] == [tuple(turn) for turn in live]
    assert [seq for seq, *_ in on_disk] == list(range(15, 25))
    assert rows(path, "SELECT first_seq, next_seq FROM conversations") == [(15, 25)]

    await trio.sleep(31 * MINUTE)  # the session times out ...
    assert await conversations.history(ALICE) == []
    await store.flush()  # ... and its turns leave the disk
    assert rows(path, "SELECT COUNT(*) FROM turns") == [(0,)]
    await store.aclose()


async def test_write_behind_makes_one_batch_per_interval(db_clock, tmp_path):
    path = tmp_path / "memory.db"
    store = MemoryStore(path)
    conversations = make(store)
    keys = [conversation_key(user, 9) for user in range(50)]
    for key in keys:
        await conversations.history(key)  # loaded now, so the appends below never wait for a thread
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for round_ in range(10):
            for key in keys:
                await conversations.append(key, "user", f"message {round_}")
        assert rows(path, "SELECT COUNT(*) FROM turns") == [(0,)]  # nothing written yet
        await trio.sleep(2.5)
        await settled(store)
        assert rows(path, "SELECT COUNT(*) FROM turns") == [(500,)]
        assert store.stats()["batches"] == 1
        assert conversations.stats()["dirty"] == 0
        await trio.sleep(60)  # clean: no more writes
        assert store.stats()["batches"] == 1
        nursery.cancel_scope.cancel()


async def test_a_failed_write_is_retried(db_clock, tmp_path, caplog):
    path = tmp_path / "memory.db"
    store = MemoryStore(path)

    class BadOnce:
        """A source whose first batch holds a row SQLite refuses (wrong column count)."""

        failures = 1

        def collect_writes(self, batch: Batch) -> None:
            if self.failures:
                self.failures -= 1
                batch.turns.append(("only", "three", "columns"))

    store.add_source(BadOnce())
    conversations = make(store)
    await conversations.history(ALICE)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await conversations.append(ALICE, "user", "keep me")
        await trio.sleep(2.5)
        await settled(store)
        assert store.stats()["write_errors"] == 1
        assert rows(path, "SELECT text FROM turns") == []
        assert conversations.stats()["dirty"] == 1
        await trio.sleep(2.5)
        await settled(store)
        assert rows(path, "SELECT text FROM turns") == [("keep me",)]
        nursery.cancel_scope.cancel()
    assert "writing memory" in caplog.text


async def test_the_runtime_flushes_the_store_when_it_stops(db_clock, tmp_path):
    path = tmp_path / "memory.db"
    store = MemoryStore(path, write_interval=600)
    conversations = make(store)
    runtime = Runtime([store], handle_signals=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await trio.sleep(1)
        await conversations.append(ALICE, "user", "written at shutdown")
        runtime.request_stop()
    assert rows(path, "SELECT text FROM turns") == [("written at shutdown",)]


async def test_the_schema_is_versioned_and_migrated(db_clock, tmp_path):
    path = tmp_path / "memory.db"
    store = MemoryStore(path)
    await store.open()
    await store.open()  # idempotent
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    await store.aclose()
    reopened = MemoryStore(path)
    await reopened.open()  # nothing left to migrate
    await reopened.aclose()

    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        await MemoryStore(newer).open()


@pytest.mark.parametrize("interval, error", [(0, ValueError), (float("inf"), ValueError), ("2", TypeError)])
def test_bad_write_intervals_are_refused(tmp_path, interval, error):
    with pytest.raises(error):
        MemoryStore(tmp_path / "memory.db", write_interval=interval)


# --------------------------------------------------------------------------- forgetting


async def test_forget_removes_the_user_everywhere(db_clock, tmp_path):
    path = tmp_path / "memory.db"
    store = MemoryStore(path)
    conversations = make(store)
    server = ServerMemory(store, clock=trio.current_time)
    called = []

    async def analytics_hook(user_id):
        await trio.sleep(0)
        called.append(("analytics", user_id))

    def failing_hook(user_id):
        raise RuntimeError("analytics is down")

    memory = Memory(conversations, server, on_forget=[analytics_hook, failing_hook])
    memory.on_forget(lambda user_id: called.append(("sync", user_id)))
    alice_keys = [conversation_key(1001, 555), conversation_key(1001, 556), conversation_key(1001)]
    for key in alice_keys:
        await fill(conversations, key, 12)
    await fill(conversations, BOB, 4)
    await server.remember(9, "moment", "alice fell asleep in voice chat", user_id=1001)
    await server.remember(9, "snippet", "print('hello')", user_id=1001)
    await server.remember(9, "moment", "bob rebooted the server", user_id=2002)
    await server.remember(9, "fact", "the server runs on a raspberry pi")
    await memory.context(alice_keys[0], 9, 4000)
    await store.flush()
    await conversations.append(alice_keys[0], "user", "not written yet")

    counts = await memory.forget(1001)

    assert counts == {
        "conversations": 3, "turns": 37, "server_items": 2,
        "conversation_rows": 3, "turn_rows": 36, "server_item_rows": 2,
        "hooks": 2, "hook_errors": 1,
    }  # fmt: skip
    assert called == [("analytics", "1001"), ("sync", "1001")]
    for key in alice_keys:
        assert await conversations.history(key) == []
    assert [item.text for item in await server.items(9)] == ["bob rebooted the server", "the server runs on a raspberry pi"]
    assert memory.contexts.stats()["entries"] == 0
    await store.flush()
    assert rows(path, "SELECT COUNT(*) FROM turns WHERE user_id = '1001'") == [(0,)]
    assert rows(path, "SELECT COUNT(*) FROM conversations WHERE user_id = '1001'") == [(0,)]
    assert rows(path, "SELECT COUNT(*) FROM server_items WHERE user_id = '1001'") == [(0,)]
    assert rows(path, "SELECT COUNT(*) FROM turns WHERE user_id = '2002'") == [(4,)]
    assert len(await conversations.history(BOB)) == 4
    await store.aclose()


async def test_forget_catches_a_load_that_raced_it(db_clock, tmp_path):
    """A load of the user's conversation queued before the deletion must not bring it back."""
    path = tmp_path / "memory.db"
    store = MemoryStore(path)
    conversations = make(store)
    memory = Memory(conversations, ServerMemory(store, clock=trio.current_time))
    await fill(conversations, ALICE, 5)
    await store.flush()
    conversations.drop_user(ALICE.user_id)  # as after shedding: on disk only
    async with trio.open_nursery() as nursery:
        async with store._lock:  # hold the database so both calls queue, the load first
            nursery.start_soon(conversations.history, ALICE)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(memory.forget, ALICE.user_id)
            await trio.testing.wait_all_tasks_blocked()
    assert conversations.stats()["loaded"] == 1  # the load did bring the turns in ...
    assert await conversations.history(ALICE) == []  # ... and forget removed them again
    assert rows(path, "SELECT COUNT(*) FROM turns") == [(0,)]
    await store.aclose()


async def test_forget_without_a_store(autojump_clock):
    conversations = make()
    memory = Memory(conversations, ServerMemory(clock=trio.current_time))
    await fill(conversations, ALICE, 3)
    counts = await memory.forget(ALICE.user_id)
    assert (counts["conversations"], counts["turns"], counts["turn_rows"]) == (1, 3, 0)
    with pytest.raises(TypeError):
        await memory.forget(None)


def test_memory_parts_must_share_one_store(tmp_path):
    with pytest.raises(ValueError, match="share"):
        Memory(Conversations(MemoryStore(tmp_path / "a.db")), ServerMemory(MemoryStore(tmp_path / "a.db")))


# --------------------------------------------------------------------------- the hourly sweep


async def advance(clock: trio.testing.MockClock, store: MemoryStore, seconds: float) -> None:
    """Move a manual MockClock on an hour at a time, letting due jobs run to the end each time."""
    while seconds > 0:
        clock.jump(min(HOUR, seconds))
        seconds -= HOUR
        await trio.testing.wait_all_tasks_blocked()  # due jobs start; they block on SQLite
        await settled(store)
        await trio.testing.wait_all_tasks_blocked()  # ... and finish


async def test_the_hourly_sweep_removes_conversations_idle_for_30_days(mock_clock, tmp_path):
    path = tmp_path / "memory.db"
    store = MemoryStore(path)
    wheel = TimerWheel()
    conversations = make(store, timers=wheel)
    assert conversations.sweep_job is not None and conversations.sweep_job.period == HOUR
    await conversations.append(ALICE, "user", "long ago")
    await conversations.append(BOB, "user", "long ago too")
    await store.flush()
    async with trio.open_nursery() as nursery:
        await nursery.start(wheel.run)
        await advance(mock_clock, store, HOUR)
        # The timed-out sessions were cleared by the first sweep, on disk too; the rows stay.
        assert rows(path, "SELECT COUNT(*) FROM turns") == [(0,)]
        assert rows(path, "SELECT COUNT(*) FROM conversations") == [(2,)]
        await advance(mock_clock, store, 29 * DAY)
        await conversations.append(BOB, "user", "back again")
        await advance(mock_clock, store, DAY - HOUR)
        assert len(conversations) == 2  # Alice idle for exactly 30 days: not more
        await advance(mock_clock, store, HOUR)
        nursery.cancel_scope.cancel()
    stats = conversations.stats()
    assert stats["stale_removed"] == 1
    assert stats["sweeps"] == wheel.stats.runs == 30 * 24 + 1
    assert wheel.stats.errors == wheel.stats.skips == wheel.stats.timeouts == 0
    assert len(conversations) == 1
    assert rows(path, "SELECT user_id FROM conversations") == [(BOB.user_id,)]
    await store.aclose()


async def test_sweep_reports_what_it_removed(autojump_clock):
    conversations = make()
    await conversations.append(ALICE, "user", "old")
    await trio.sleep(HOUR)
    await conversations.append(BOB, "user", "recent")
    assert await conversations.sweep() == {"removed": 0, "expired": 1, "conversation_rows": 0, "turn_rows": 0}
    await trio.sleep(30 * DAY + 1)
    assert await conversations.sweep() == {"removed": 2, "expired": 0, "conversation_rows": 0, "turn_rows": 0}


# --------------------------------------------------------------------------- the context cache


async def test_the_context_cache_is_invalidated_exactly_on_change(autojump_clock):
    conversations = make()
    server = ServerMemory(clock=trio.current_time)
    memory = Memory(conversations, server)
    await fill(conversations, ALICE, 6)
    await fill(conversations, BOB, 6)

    def counts():
        stats = memory.contexts.stats()
        return stats["hits"], stats["misses"], stats["invalidated"]

    first = await memory.context(ALICE, 9, 4000)
    assert counts() == (0, 1, 0)
    assert await memory.context(ALICE, 9, 4000) is first
    assert counts() == (1, 1, 0)
    await conversations.append(BOB, "user", "another conversation changed")
    await server.remember(10, "fact", "another guild learnt something")
    assert await memory.context(ALICE, 9, 4000) is first
    assert counts() == (2, 1, 0)
    await conversations.append(ALICE, "user", "this one changed")
    second = await memory.context(ALICE, 9, 4000)
    assert second.history[-1].text == "this one changed"
    assert counts() == (2, 2, 1)
    await server.remember(9, "gag", "the bot is always late")
    third = await memory.context(ALICE, 9, 4000)
    assert "always late" in third.server_block
    assert counts() == (2, 3, 2)
    assert await memory.context(ALICE, 9, 3000) is not third  # another budget, another entry
    assert counts() == (2, 4, 2)
    await trio.sleep(5 * MINUTE + 1)  # the TTL
    assert await memory.context(ALICE, 9, 4000) == third
    stats = memory.contexts.stats()
    assert (stats["hits"], stats["misses"], stats["expired"]) == (2, 5, 1)
    assert stats["hit_rate"] == 2 / 7


async def test_a_session_timeout_invalidates_the_cached_context(autojump_clock):
    conversations = make()
    memory = Memory(conversations, ServerMemory(clock=trio.current_time), context_ttl=3 * HOUR)
    await conversations.append(ALICE, "user", "hello")
    assert len((await memory.context(ALICE, None, 4000)).history) == 1
    await trio.sleep(31 * MINUTE)
    assert (await memory.context(ALICE, None, 4000)).history == ()


async def test_a_context_fits_its_budget(autojump_clock):
    conversations = make()
    server = ServerMemory(clock=trio.current_time)
    memory = Memory(conversations, server)
    await fill(conversations, ALICE, 40)
    for number in range(20):
        await server.remember(9, "fact", f"fact {number}: " + texts(1, seed=number)[0][:200])
    for budget in (0, 50, 500, 2000, 10_000):
        context = await memory.context(ALICE, 9, budget)
        assert isinstance(context, Context)
        assert len(context.server_block) <= budget // 4
        assert len(context.server_block) + sum(len(turn.text) for turn in context.history) <= budget
        assert context.history_digest == digest_turns(context.history)
    dm = await memory.context(conversation_key(1001), None, 2000)
    assert dm == Context((), EMPTY_HISTORY_DIGEST, "")


async def test_context_cache_counts_lookups(autojump_clock):
    cache = ContextCache(maxsize=2, ttl=10)
    assert cache.stats()["hit_rate"] == 0.0
    context = Context((), EMPTY_HISTORY_DIGEST, "")
    cache.put("a", (1, 1), context)
    assert cache.get("a", (1, 1)) is context
    assert cache.get("a", (1, 2)) is None  # stale: dropped
    assert cache.get("a", (1, 1)) is None
    assert cache.stats() == {
        "hits": 1, "misses": 2, "hit_rate": 1 / 3, "invalidated": 1, "expired": 0, "evicted": 0, "entries": 0,
    }  # fmt: skip


# --------------------------------------------------------------------------- shedding


async def test_shed_idle_drops_the_least_recently_used_idle_conversations(autojump_clock):
    conversations = make(idle_after=300)
    keys = [conversation_key(user, 1) for user in range(10)]
    for key in keys:  # key i last used at t = 100 * i
        await conversations.append(key, "user", "hello")
        await trio.sleep(100)
    await conversations.history(keys[2])  # used again at t = 1000
    # Now t = 1000: idle (unused for 300 s) are keys 0, 1, 3 .. 7 in that LRU order.
    assert await conversations.shed_idle(0.5) == 5
    remaining = set(conversations._conversations)
    assert remaining == {keys[2], keys[6], keys[7], keys[8], keys[9]}
    assert await conversations.shed_idle(1.0) == 2  # only 6 and 7 are idle still
    assert set(conversations._conversations) == {keys[2], keys[8], keys[9]}
    assert await conversations.shed_idle(0) == 0
    assert conversations.stats()["shed"] == 7
    assert await conversations.history(keys[0]) == []  # without a store, shed means gone


async def test_shed_conversations_stay_on_disk(db_clock, tmp_path):
    store = MemoryStore(tmp_path / "memory.db")
    conversations = make(store, idle_after=60)
    for user in range(4):
        await fill(conversations, conversation_key(user, 1), 20)
    before = [await conversations.history(conversation_key(user, 1)) for user in range(4)]
    assert conversations.stats()["dirty"] == 4
    await trio.sleep(61)
    assert await conversations.shed_idle(1.0) == 4  # written first, then dropped
    assert len(conversations) == 0 and store.stats()["batches"] == 1
    assert [await conversations.history(conversation_key(user, 1)) for user in range(4)] == before
    assert conversations.stats()["loaded"] == 4
    await store.aclose()


@pytest.mark.parametrize("fraction, error", [(-0.1, ValueError), (1.5, ValueError), ("half", TypeError)])
async def test_shed_idle_refuses_bad_fractions(autojump_clock, fraction, error):
    with pytest.raises(error):
        await make().shed_idle(fraction)


# --------------------------------------------------------------------------- memory growth


def run_growth_child(messages: int, users: int, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(CHILD.parents[2])}
    done = subprocess.run(
        [sys.executable, str(CHILD), str(messages), str(users)],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "messages",
    [
        100_000,
        pytest.param(
            1_000_000,
            marks=pytest.mark.skipif(os.environ.get("TRIOBOT_SOAK") != "1", reason="soak test: set TRIOBOT_SOAK=1"),
        ),
    ],
)
def test_memory_stays_flat_under_a_long_stream_of_messages(messages):
    """RSS after the warm-up (the first 20 % of the messages) grows by at most 5 %.

    10,000 users on a MockClock, in a fresh child process so the RSS is the
    memory's own (see memory_growth_child.py for how the messages are made).
    The short form (100,000 messages, about 20 s) always runs; the issue's
    full form, 1,000,000 messages (about 4 minutes), runs with
    ``TRIOBOT_SOAK=1``.
    """
    result = run_growth_child(messages, 10_000, timeout=60 + messages / 1000)
    assert result["conversations"] == 10_000
    assert result["expired_sessions"] > messages // 2  # sessions really did time out
    assert result["sweeps"] >= messages // 3600 - 1  # one an hour of mock time
    assert max(result["samples"]) <= 1.05 * result["warm"], result
