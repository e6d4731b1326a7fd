"""`/forget` end to end: conversation memory and analytics forget a user together.

Real SQLite files for both; the analytics identity is removed through the
forget hook the runtime registers (Memory.on_forget -> Analytics.forget_user).
"""

import sqlite3

import pytest
import trio
import trio.testing

from shell.analytics import Analytics, AnalyticsStore
from shell.memory import Conversations, Memory, MemoryStore, ServerMemory, conversation_key
from shell.ratelimit import WallClock

T0 = 1_767_225_600.0


@pytest.fixture
def db_clock() -> trio.testing.MockClock:
    # Jump only after 1 ms of real idleness: autojump at 0 starves SQLite threads.
    return trio.testing.MockClock(autojump_threshold=0.001)


def count(path, sql, *args):
    with sqlite3.connect(path) as connection:
        return connection.execute(sql, args).fetchone()[0]


async def test_forget_removes_turns_memories_and_analytics_identity_on_disk(db_clock, tmp_path):
    memory_db, analytics_db = tmp_path / "memory.db", tmp_path / "analytics.db"
    store = MemoryStore(memory_db)
    conversations = Conversations(store, clock=trio.current_time)
    server = ServerMemory(store, clock=trio.current_time)
    analytics_store = AnalyticsStore(analytics_db, salt="salt")
    analytics = Analytics(analytics_store, wall_clock=WallClock(T0), seed=1)
    memory = Memory(conversations, server)
    memory.on_forget(analytics.forget_user)

    for user in ("alice", "bob"):
        key = conversation_key(user, "chan-1")
        await conversations.append(key, "user", f"hello from {user}")
        await conversations.append(key, "assistant", f"hi {user}")
        await server.remember("guild-1", "moment", f"{user} fell asleep in voice chat", user_id=user)
        analytics.emit("message_processed", "high", user_id=user)
    await store.flush()
    await analytics.flush()
    alice_hash = analytics_store.user_hash("alice")
    assert count(memory_db, "SELECT count(*) FROM turns WHERE user_id = 'alice'") == 2
    assert count(analytics_db, "SELECT count(*) FROM events WHERE user_hash = ?", alice_hash) == 1

    result = await memory.forget("alice")

    assert result["hooks"] == 1 and result["hook_errors"] == 0
    assert count(memory_db, "SELECT count(*) FROM turns WHERE user_id = 'alice'") == 0
    assert count(memory_db, "SELECT count(*) FROM conversations WHERE user_id = 'alice'") == 0
    assert count(memory_db, "SELECT count(*) FROM server_items WHERE user_id = 'alice'") == 0
    assert count(analytics_db, "SELECT count(*) FROM events WHERE user_hash = ?", alice_hash) == 0
    # Bob is untouched, on disk and in memory.
    assert count(memory_db, "SELECT count(*) FROM turns WHERE user_id = 'bob'") == 2
    assert count(analytics_db, "SELECT count(*) FROM events WHERE user_hash = ?", analytics_store.user_hash("bob")) == 1
    assert [t.text for t in await conversations.history(conversation_key("alice", "chan-1"))] == []
    assert len(await conversations.history(conversation_key("bob", "chan-1"))) == 2
    await store.aclose()
