"""ServerMemory: per-kind limits, value-based eviction, near-duplicates, the context block,
bad input, persistence and forgetting. Times come from trio's MockClock."""

from __future__ import annotations

import sqlite3

import pytest
import trio
import trio.testing

from shell.memory import MemoryStore, ServerLimits, ServerMemory
from shell.memory.server import jaccard, normalize_text, shingles

DAY = 86400.0
GUILD = 9
WORDS = (
    "apple banana cherry delta echo falcon garden harbor island jungle kettle lemon marble needle orbit"
    " pepper quartz river saddle tiger umbrella violet walnut yellow zebra anchor bridge candle dragon"
).split()


@pytest.fixture
def db_clock() -> trio.testing.MockClock:
    """A MockClock for tests that run SQLite in worker threads: it jumps after 1 ms of real idleness.

    With ``autojump_threshold=0`` trio polls without sleeping while a worker
    thread runs, and the poll starves the thread of the GIL (100 ms a call).
    """
    return trio.testing.MockClock(autojump_threshold=0.001)


def distinct_text(number: int) -> str:
    """Texts that share no word bigram with each other (so none is a near-duplicate of another)."""
    return " ".join(f"{WORDS[(number + step) % len(WORDS)]}{number}" for step in range(6))


def make(store: MemoryStore | None = None, **limits) -> ServerMemory:
    return ServerMemory(store, limits=ServerLimits(**limits), clock=trio.current_time)


async def texts_of(server: ServerMemory, kind: str | None = None, guild: int = GUILD) -> list[str]:
    return [item.text for item in await server.items(guild, kind)]


# --------------------------------------------------------------------------- normalising and similarity


def test_normalised_text_ignores_case_punctuation_and_spacing():
    assert normalize_text("  Bob   FELL off his chair!!  ") == "bob fell off his chair"
    assert normalize_text("Don't\tpanic — it's fine…") == "don t panic it s fine"
    assert normalize_text("ＦＵＬＬ width") == "full width"
    assert normalize_text("?!.") == ""


def test_shingles_are_word_bigrams():
    assert shingles("bob fell off") == frozenset({"bob fell", "fell off"})
    assert shingles("hello") == frozenset({"hello"})
    assert shingles("") == frozenset()


def test_jaccard_similarity():
    assert jaccard(frozenset("ab"), frozenset("ab")) == 1.0
    assert jaccard(frozenset("abcd"), frozenset("abce")) == 3 / 5
    assert jaccard(frozenset(), frozenset()) == 0.0


# --------------------------------------------------------------------------- limits and eviction


@pytest.mark.parametrize("kind, capacity", [("fact", 50), ("gag", 30), ("moment", 60)])
async def test_each_kind_keeps_at_most_its_limit(autojump_clock, kind, capacity):
    server = make()
    evicted = []
    for number in range(capacity + 5):
        result = await server.remember(GUILD, kind, distinct_text(number), user_id=number % 3)
        assert not result.duplicate
        if result.evicted is not None:
            evicted.append(result.evicted.text)
        await trio.sleep(60)
    assert await texts_of(server, kind) == [distinct_text(number) for number in range(5, capacity + 5)]
    assert evicted == [distinct_text(number) for number in range(5)]  # the oldest went first
    assert server.stats()["evictions"] == 5


async def test_snippets_are_limited_per_user(autojump_clock):
    server = make()
    for number in range(15):
        await server.remember(GUILD, "snippet", f"def f{number}():\n    return {number}", user_id=1)
        await trio.sleep(1)
    for number in range(3):
        await server.remember(GUILD, "snippet", f"print({number})", user_id=2)
    snippets = await server.items(GUILD, "snippet")
    assert sum(item.user_id == "1" for item in snippets) == 12
    assert sum(item.user_id == "2" for item in snippets) == 3
    assert [item.text for item in snippets if item.user_id == "1"][0] == "def f3():\n    return 3"


async def test_the_least_valuable_item_is_evicted(autojump_clock):
    """value = count * 0.5 ** (age / half_life): reinforcement keeps an item, until it fades."""
    server = make(gags=3, half_life=7 * DAY)
    gags = {name: f"the {name} gag about {name} things" for name in ("a", "b", "c", "d", "e", "f")}
    await server.remember(GUILD, "gag", gags["a"])
    for _ in range(2):
        assert (await server.remember(GUILD, "gag", gags["a"].upper() + "!")).duplicate
    await trio.sleep(DAY)
    await server.remember(GUILD, "gag", gags["b"])
    await trio.sleep(DAY)
    await server.remember(GUILD, "gag", gags["c"])
    await trio.sleep(DAY)
    # a: 3 * 0.5 ** (3 / 7) = 2.23, b: 0.5 ** (2 / 7) = 0.82, c: 0.5 ** (1 / 7) = 0.91
    assert (await server.remember(GUILD, "gag", gags["d"])).evicted.text == gags["b"]
    await trio.sleep(27 * DAY)
    # a: 3 * 0.5 ** (30 / 7) = 0.15, c: 0.5 ** (28 / 7) = 0.06, d: 0.5 ** (27 / 7) = 0.07
    assert (await server.remember(GUILD, "gag", gags["e"])).evicted.text == gags["c"]
    # a: 0.15, d: 0.07, e: 1
    assert (await server.remember(GUILD, "gag", gags["f"])).evicted.text == gags["d"]
    assert await texts_of(server, "gag") == [gags["a"], gags["e"], gags["f"]]


# --------------------------------------------------------------------------- near-duplicates


async def test_near_duplicates_reinforce_the_existing_item(autojump_clock):
    server = make()
    first = await server.remember(GUILD, "fact", "Bob fell off his chair")
    await trio.sleep(10)
    again = await server.remember(GUILD, "fact", "  bob FELL off his chair!! ")
    assert again.duplicate and again.item.item_id == first.item.item_id
    assert (again.item.count, again.item.last_seen, again.item.text) == (2, 10.0, "Bob fell off his chair")
    # 4 of 5 bigrams shared: similarity 0.8, a duplicate
    assert (await server.remember(GUILD, "fact", "Bob fell off his chair again")).duplicate
    # 3 of 4 bigrams shared: 0.75, a new item
    assert not (await server.remember(GUILD, "fact", "Alice likes green tea")).duplicate
    assert not (await server.remember(GUILD, "fact", "Alice likes green tea daily")).duplicate
    assert await texts_of(server) == [
        "Bob fell off his chair", "Alice likes green tea", "Alice likes green tea daily",
    ]  # fmt: skip
    assert (await server.items(GUILD))[0].count == 3
    assert server.stats()["duplicates"] == 2


async def test_duplicates_are_per_kind_and_per_user(autojump_clock):
    server = make()
    text = "fell asleep in the voice channel"
    assert not (await server.remember(GUILD, "moment", text, user_id=1)).duplicate
    assert not (await server.remember(GUILD, "moment", text, user_id=2)).duplicate  # about someone else
    assert (await server.remember(GUILD, "moment", text, user_id=1)).duplicate
    assert not (await server.remember(GUILD, "gag", text)).duplicate  # another kind
    assert not (await server.remember(GUILD + 1, "gag", text)).duplicate  # another guild
    assert len(await server.items(GUILD)) == 3


# --------------------------------------------------------------------------- the context block


async def test_the_context_block_has_sections_in_order(autojump_clock):
    server = make()
    assert await server.context_block(GUILD, 10_000) == ""
    await server.remember(GUILD, "moment", "fell asleep\nin voice chat", user_id=42)
    await server.remember(GUILD, "gag", "the bot is always late")
    await server.remember(GUILD, "snippet", "print('hi')", user_id=42)
    await server.remember(GUILD, "fact", "the server runs on a raspberry pi")
    await server.remember(GUILD, "fact", "meetings are on fridays")
    await server.remember(GUILD, "fact", "Meetings are on Fridays!")  # reinforced: now the most valuable
    assert await server.context_block(GUILD, 10_000) == "\n".join(
        [
            "Facts about this server:",
            "- meetings are on fridays",
            "- the server runs on a raspberry pi",
            "Running gags:",
            "- the bot is always late",
            "Remembered moments:",
            "- (about user 42) fell asleep in voice chat",
        ]
    )
    assert await server.context_block(GUILD + 1, 10_000) == ""


async def test_the_context_block_never_exceeds_its_budget(autojump_clock):
    server = make()
    for number in range(40):
        kind = ("fact", "gag", "moment")[number % 3]
        await server.remember(GUILD, kind, distinct_text(number) * (1 + number % 4), user_id=number)
        await trio.sleep(number)
    full = await server.context_block(GUILD, 100_000)
    for budget in range(0, len(full) + 50, 7):
        block = await server.context_block(GUILD, budget)
        assert len(block) <= budget
        if block:  # what is there is whole lines of the full block, titles with their items
            lines = block.split("\n")
            assert set(lines) <= set(full.split("\n"))
            assert lines[0].endswith(":") and not lines[-1].endswith(":")
    assert await server.context_block(GUILD, 0) == ""
    assert await server.context_block(GUILD, 20) == ""  # no title fits with an item


async def test_prompt_items_are_one_line_and_snippets_keep_their_layout(autojump_clock):
    server = make()
    fact = await server.remember(GUILD, "fact", "  the server\n\nruns   on a pi ")
    snippet = await server.remember(GUILD, "snippet", "\n def f():\n     return 1\n", user_id=1)
    assert fact.item.text == "the server runs on a pi"
    assert snippet.item.text == "def f():\n     return 1"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "guild, kind, text, user, error",
    [
        (GUILD, "fact", "", None, ValueError),
        (GUILD, "fact", "   \n ", None, ValueError),
        (GUILD, "fact", "x" * 501, None, ValueError),
        (GUILD, "snippet", "x" * 2001, 1, ValueError),
        (GUILD, "fact", "?!... ---", None, ValueError),
        (GUILD, "joke", "a joke", None, ValueError),
        (GUILD, 5, "a fact", None, TypeError),
        (GUILD, "fact", None, None, TypeError),
        (GUILD, "fact", b"bytes", None, TypeError),
        (None, "fact", "a fact", None, TypeError),
        (-1, "fact", "a fact", None, ValueError),
        (GUILD, "moment", "no subject", None, ValueError),
        (GUILD, "snippet", "print(1)", None, ValueError),
        (GUILD, "moment", "a moment", 1.5, TypeError),
        (GUILD, "moment", "a moment", "", ValueError),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(autojump_clock, guild, kind, text, user, error):
    server = make()
    await server.remember(GUILD, "fact", "the server runs on a raspberry pi")
    before = (await server.items(GUILD), await server.version(GUILD), server.stats())
    with pytest.raises(error):
        await server.remember(guild, kind, text, user_id=user)
    assert (await server.items(GUILD), await server.version(GUILD), server.stats()) == before


@pytest.mark.parametrize("budget, error", [(-1, ValueError), (2.5, TypeError), ("80", TypeError), (None, TypeError)])
async def test_bad_budgets_are_refused(autojump_clock, budget, error):
    with pytest.raises(error):
        await make().context_block(GUILD, budget)


@pytest.mark.parametrize(
    "limits, error",
    [({"facts": 0}, ValueError), ({"gags": 2.0}, TypeError), ({"similarity": 0}, ValueError),
     ({"similarity": 1.5}, ValueError), ({"half_life": float("inf")}, ValueError), ({"max_text": True}, TypeError)],
)  # fmt: skip
def test_bad_limits_are_refused(limits, error):
    with pytest.raises(error):
        ServerLimits(**limits)


def test_bad_constructor_arguments_are_refused(tmp_path):
    with pytest.raises(TypeError):
        ServerMemory(str(tmp_path / "memory.db"))
    with pytest.raises(TypeError):
        ServerMemory(limits={"facts": 5})


# --------------------------------------------------------------------------- versions, removal, forgetting


async def test_the_version_changes_with_every_change_and_only_then(autojump_clock):
    server = make()
    seen = {await server.version(GUILD)}
    first = await server.remember(GUILD, "fact", "first fact here")
    seen.add(await server.version(GUILD))
    await server.remember(GUILD, "fact", "First fact here!")  # reinforcement is a change
    seen.add(await server.version(GUILD))
    await server.context_block(GUILD, 1000)
    await server.items(GUILD)
    seen.add(await server.version(GUILD))  # reads are not
    assert await server.forget_item(GUILD, first.item.item_id)
    assert not await server.forget_item(GUILD, first.item.item_id)
    seen.add(await server.version(GUILD))
    assert len(seen) == 4
    assert await server.version(GUILD + 1) not in seen  # stamps are never shared


async def test_drop_user_removes_the_items_naming_them(autojump_clock):
    server = make()
    await server.remember(GUILD, "moment", "fell asleep in voice chat", user_id=1)
    await server.remember(GUILD + 1, "snippet", "print('hi')", user_id=1)
    await server.remember(GUILD, "fact", "user one runs the quiz", user_id=1)
    await server.remember(GUILD, "moment", "rebooted the server", user_id=2)
    await server.remember(GUILD, "gag", "the bot is always late")
    version = await server.version(GUILD)
    assert server.drop_user(1) == 3
    assert await texts_of(server) == ["rebooted the server", "the bot is always late"]
    assert await server.items(GUILD + 1) == []
    assert await server.version(GUILD) != version
    assert server.drop_user("1") == 0


# --------------------------------------------------------------------------- persistence


async def test_a_restart_keeps_the_items(db_clock, tmp_path):
    path = tmp_path / "memory.db"
    store = MemoryStore(path)
    server = make(store, gags=2)
    await server.remember(GUILD, "gag", "the bot is always late")
    await server.remember(GUILD, "gag", "The bot is ALWAYS late.")
    await trio.sleep(60)
    await server.remember(GUILD, "gag", "nobody reads the rules")
    await store.flush()
    evicted = (await server.remember(GUILD, "gag", "mondays are cursed")).evicted
    await server.remember(GUILD, "moment", "won the quiz", user_id=7)
    before = await server.items(GUILD)
    await store.aclose()
    assert evicted.text == "nobody reads the rules"

    store = MemoryStore(path)
    restarted = make(store, gags=2)
    assert await restarted.items(GUILD) == before
    assert restarted.stats()["loaded"] == 1
    assert (await restarted.remember(GUILD, "fact", "a new fact")).item.item_id == 5  # ids go on
    await store.aclose()
    with sqlite3.connect(path) as connection:
        stored = connection.execute("SELECT kind, text, count FROM server_items ORDER BY item_id").fetchall()
    assert stored == [
        ("gag", "the bot is always late", 2), ("gag", "mondays are cursed", 1),
        ("moment", "won the quiz", 1), ("fact", "a new fact", 1),
    ]  # fmt: skip


async def test_unusable_stored_items_are_skipped(db_clock, tmp_path, caplog):
    path = tmp_path / "memory.db"
    store = MemoryStore(path)
    await store.open()
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO server_items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [("9", 1, "fact", None, "a good fact", 1, 0.0, 0.0),
             ("9", 2, "joke", None, "an unknown kind", 1, 0.0, 0.0),
             ("9", 3, "moment", None, "a moment about nobody", 1, 0.0, 0.0)],
        )  # fmt: skip
    server = make(store)
    assert await texts_of(server) == ["a good fact"]
    assert "unusable" in caplog.text
    assert (await server.remember(GUILD, "fact", "another fact")).item.item_id == 4
    await store.aclose()
