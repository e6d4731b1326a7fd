"""Child process of test_conversations' memory-growth test: ``python memory_growth_child.py MESSAGES USERS``.

Runs MESSAGES messages from USERS users through the memory, on trio's
MockClock, in memory only (no store), and prints one JSON line:
``{"warm": RSS after the first 20 % of the messages, "samples": [RSS at each
further tenth], "conversations": ..., "turns": ..., "expired_sessions": ...,
"sweeps": ..., "context": {...}}`` (RSS in bytes, from /proc/self/statm,
after a gc.collect()).

How the messages are made (deterministic, random.Random(2024)): two kinds
of user, as on a real server. 100 regulars send 30 % of the messages, each
picked at random, about one message every 5.5 minutes each: their sessions
rarely time out and their conversations sit at the limits (100 turns,
packed). The other users send the rest in rounds, each round a fresh
permutation of them, so the warm-up has seen every user; a round lasts
about 4 hours, so their sessions (one message each) always time out and
are cleared when they come back, or by the hourly sweep before. One message
= append the user's turn, build the reply context (history + server memory,
through the context cache), append a reply, move the mock clock on by 1 s
(with a checkpoint every 50 messages, so the TimerWheel's hourly sweep runs
on time). Texts are 3 to 60 words drawn from a small vocabulary
(random.Random(7)), picked from a pool of 4096 and made unique by a
numbered suffix. Every 10th message also remembers a fact in the user's
guild (100 guilds, at most 10 facts each), so server memory is full before
the warm-up ends and then evicts (or reinforces a near-duplicate).
"""

from __future__ import annotations

import gc
import json
import os
import random
import sys
from pathlib import Path

import trio
import trio.testing

sys.path.append(str(Path(__file__).resolve().parents[2]))  # the checkout, for `bench` and `shell`

from shell.memory import Conversations, Memory, ServerLimits, ServerMemory, conversation_key  # noqa: E402
from shell.timers import TimerWheel  # noqa: E402

STEP = 1.0  # mock seconds between messages
REGULARS = 100
REGULAR_SHARE = 0.3
CHECKPOINT_EVERY = 50  # messages
GUILDS = 100
FACTS_PER_GUILD = 10
FACT_EVERY = 10  # messages
CONTEXT_BUDGET = 4000
WARM_UP = 0.2
SAMPLES = 8  # RSS samples after the warm-up, evenly spaced to the end


def rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


WORDS = (
    "the a to and of you it is that in for on my this with me what was just can bot not but so have"
    " are do like know think be get if your at how why about server discord message reply model token"
    " cache quota minute today python code error help please thanks yeah okay really question answer"
    " again channel trio nursery cancel scope deadline memory history sqlite frame deflate"
).split()


def texts(count: int) -> list[str]:
    rng = random.Random(7)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 60))) for _ in range(count)]


def speakers(messages: int, users: int):
    """User ids in message order (see the module docstring)."""
    rng = random.Random(2024)
    occasional = list(range(REGULARS, users))
    this_round: list[int] = []
    for _ in range(messages):
        if rng.random() < REGULAR_SHARE:
            yield rng.randrange(REGULARS)
        else:
            if not this_round:
                this_round = occasional[:]
                rng.shuffle(this_round)
            yield this_round.pop()


async def main(messages: int, users: int, clock: trio.testing.MockClock) -> dict:
    pool = texts(4096)
    wheel = TimerWheel()
    conversations = Conversations(timers=wheel, clock=trio.current_time)
    server = ServerMemory(limits=ServerLimits(facts=FACTS_PER_GUILD), clock=trio.current_time)
    memory = Memory(conversations, server)
    warm_at = int(messages * WARM_UP)
    sample_at = {warm_at + (messages - warm_at) * (index + 1) // SAMPLES for index in range(SAMPLES)}
    warm = 0
    samples = []
    async with trio.open_nursery() as nursery:
        await nursery.start(wheel.run)
        for number, user in enumerate(speakers(messages, users), 1):
            guild = user % GUILDS
            key = conversation_key(user, 1000 + guild)
            await conversations.append(key, "user", f"{pool[number % 4096]} ({number})")
            context = await memory.context(key, guild, CONTEXT_BUDGET)
            reply = f"{pool[(number * 31 + len(context.history)) % 4096]} [{number}]"
            await conversations.append(key, "assistant", reply)
            if number % FACT_EVERY == 0:
                await server.remember(guild, "fact", f"fact number {number} about guild {guild}: {pool[number % 4096][:200]}")
            clock.jump(STEP)
            if number % CHECKPOINT_EVERY == 0:
                await trio.lowlevel.checkpoint()
            if number == warm_at:
                warm = rss_bytes()
            if number in sample_at:
                samples.append(rss_bytes())
        nursery.cancel_scope.cancel()
    stats = conversations.stats()
    return {
        "warm": warm,
        "samples": samples,
        "conversations": stats["conversations"],
        "turns": stats["turns"],
        "expired_sessions": stats["expired_sessions"],
        "sweeps": stats["sweeps"],
        "server_items": server.stats()["items"],
        "context": memory.contexts.stats(),
    }


if __name__ == "__main__":
    mock_clock = trio.testing.MockClock()
    result = trio.run(main, int(sys.argv[1]), int(sys.argv[2]), mock_clock, clock=mock_clock)
    print(json.dumps(result), flush=True)
