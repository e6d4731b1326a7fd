"""Conversation memory: time to append and read turns, and bytes held per stored turn.

Text: :func:`chat_turns` makes chat-like turns from an order-2 word Markov
chain trained on the standard library's docstrings: real English word
statistics, new sentences every time, little verbatim repetition (so deflate
gets no easy wins; real chats, which repeat names, phrases and code, compress
better). User turns are 1 or 2 sentences, assistant turns 2 to 6;
deterministic for a given Python version.

Timing (GROUP "turn-memory"): one loop is one exchange in a conversation
already at its limits (100 turns): append the user's turn, read the history
within the default budget, append the reply; 50 conversations in turn, inside
one ``trio.run``. ``compiled`` and ``twin`` differ only in the
:mod:`fastcore.framing` implementation; ``plain`` is the same exchange on a
plain store (a list of :class:`~shell.memory.Turn` per conversation, same
limits) for the cost of compression.

Memory (the key figure, not a pyperf group): :func:`BYTES_PER_TURN` measures
with tracemalloc the bytes a store holds per live turn once its
conversations are full, for :class:`~shell.memory.Conversations` and for
the plain store; ``python -m bench`` prints :func:`markdown` after the timing
table. Target (``MAX_RATIO``): compressed at most 40 % of plain. For
reference the table also gives the size of the texts' str objects alone
(no role, time or container): on this text, deflate alone cannot go below
about 40 % of that, whatever the layout.
"""

from __future__ import annotations

import functools
import gc
import importlib
import inspect
import random
import re
import sys
import tracemalloc
from collections import defaultdict
from time import perf_counter

import trio

from bench.workloads._impl import fastcore_module
from shell.memory import Conversations, Turn, conversation_key

GROUP = "turn-memory"
SUBJECT = "compiled"
MAX_RATIO = 0.40
CONVERSATIONS = 50  # conversations the timed exchanges go round
MEASURED_CONVERSATIONS = 100  # conversations in the memory measurement
MAX_TURNS = 100
MAX_CHARS = 50_000

_CORPUS_MODULES = (
    "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message",
    "enum", "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "http.client", "inspect",
    "io", "ipaddress", "itertools", "json", "logging", "mailbox", "pathlib", "pickle", "pprint",
    "queue", "random", "re", "sched", "selectors", "shlex", "shutil", "socket", "sqlite3",
    "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "tokenize", "traceback", "unittest", "urllib.request", "uuid", "warnings",
    "weakref", "zipfile",
)  # fmt: skip


@functools.cache
def _markov_chain() -> tuple[tuple[tuple[str, str], ...], dict[tuple[str, str], tuple[str | None, ...]]]:
    """(sentence openings, next words by word pair; None ends a sentence) from docstring prose."""
    texts: list[str] = []
    for name in _CORPUS_MODULES:
        module = importlib.import_module(name)
        texts.append(inspect.getdoc(module) or "")
        for _, value in sorted(vars(module).items()):
            if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == module.__name__:
                texts.append(inspect.getdoc(value) or "")
    openings: list[tuple[str, str]] = []
    following: dict[tuple[str, str], list[str | None]] = defaultdict(list)
    for text in texts:
        for paragraph in text.split("\n\n"):
            if paragraph.startswith(" ") or ">>>" in paragraph:
                continue  # code examples, tables
            for sentence in re.split(r"(?<=[.?!])\s+", " ".join(paragraph.split())):
                words = sentence.split()
                if len(words) < 3 or not sentence[0].isalpha():
                    continue
                openings.append((words[0], words[1]))
                chain: list[str | None] = [*words, None]
                for first, second, then in zip(chain, chain[1:], chain[2:]):
                    following[(first, second)].append(then)  # type: ignore[index]
    return tuple(openings), {pair: tuple(nexts) for pair, nexts in following.items()}


def _sentence(rng: random.Random) -> str:
    openings, following = _markov_chain()
    first, second = rng.choice(openings)
    words = [first, second]
    while len(words) < 50:
        then = rng.choice(following[(first, second)])
        if then is None:
            break
        words.append(then)
        first, second = second, then
    return " ".join(words)


def chat_turns(count: int, seed: int = 1) -> list[str]:
    """*count* chat-like turn texts, user and assistant alternating (user first)."""
    rng = random.Random(seed)
    turns = []
    for index in range(count):
        sentences = rng.randint(1, 2) if index % 2 == 0 else rng.randint(2, 6)
        turns.append(" ".join(_sentence(rng) for _ in range(sentences)))
    return turns


class PlainConversations:
    """The obvious uncompressed store: a list of Turn per key, same limits, same async API."""

    def __init__(self, max_turns: int = MAX_TURNS, max_chars: int = MAX_CHARS) -> None:
        self.max_turns = max_turns
        self.max_chars = max_chars
        self._turns: dict[object, list[Turn]] = {}
        self._chars: dict[object, int] = {}

    async def append(self, key, role: str, text: str) -> Turn:
        turns = self._turns.setdefault(key, [])
        turn = Turn(role, text, trio.current_time())
        turns.append(turn)
        chars = self._chars.get(key, 0) + len(text)
        while len(turns) > self.max_turns or chars > self.max_chars:
            chars -= len(turns.pop(0).text)
        self._chars[key] = chars
        return turn

    async def history(self, key, budget_chars: int = 12_000) -> list[Turn]:
        turns = self._turns.get(key, [])
        used = 0
        fit = 0
        for turn in reversed(turns):
            used += len(turn.text)
            if used > budget_chars:
                break
            fit += 1
        return turns[len(turns) - fit :]

    def live_turns(self) -> int:
        return sum(map(len, self._turns.values()))


def _conversations(kind: str) -> Conversations:
    framing = fastcore_module("framing", kind)
    return Conversations(max_turns=MAX_TURNS, max_chars=MAX_CHARS, session_timeout=None, clock=trio.current_time, framing=framing)


def _make(variant: str):
    return PlainConversations() if variant == "plain" else _conversations(variant)


def _exchanges(variant: str):
    def time_func(loops: int) -> float:
        texts = chat_turns(2 * (MAX_TURNS + 64))

        async def main() -> float:
            store = _make(variant)
            keys = [conversation_key(user, 1) for user in range(CONVERSATIONS)]
            for key in keys:  # fill every conversation to its limits first
                for index in range(MAX_TURNS + 8):
                    await store.append(key, ("user", "assistant")[index % 2], texts[index])
            start = perf_counter()
            for loop in range(loops):
                key = keys[loop % CONVERSATIONS]
                await store.append(key, "user", texts[2 * (loop % 64)])
                await store.history(key)
                await store.append(key, "assistant", texts[2 * (loop % 64) + 1])
            return perf_counter() - start

        return trio.run(main)

    return time_func


VARIANTS = {
    "compiled": _exchanges("compiled"),
    "twin": _exchanges("twin"),
    "plain": _exchanges("plain"),
}

# Reported, not gated: compression costs time by design (the plain store is
# the floor), and the two framing implementations both spend it in zlib.
TARGETS: list[tuple[str, float]] = []


def _held_bytes(variant: str, conversations: int, appends: int, texts: list[str]) -> tuple[int, int, object]:
    """(bytes the store holds, live turns, the store) after *appends* appends to each of *conversations*.

    Each text is copied inside the traced region, so both stores hold text
    allocated while tracing (the plain store keeps it; the compressed one
    keeps a packed copy and drops the rest).
    """

    async def fill(store) -> None:
        for conversation in range(conversations):
            key = conversation_key(conversation, 1)
            # Stagger the counts so the plain tails of the compressed store are at every fill level.
            for index in range(appends + conversation % 8):
                text = texts[(conversation * 7 + index) % len(texts)]
                await store.append(key, ("user", "assistant")[index % 2], (text + " ")[:-1])

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        store = _make(variant)
        trio.run(fill, store)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    live = store.live_turns() if isinstance(store, PlainConversations) else store.stats()["turns"]
    return held, live, store


def BYTES_PER_TURN(  # noqa: N802
    conversations: int = MEASURED_CONVERSATIONS, appends: int = 2 * MAX_TURNS
) -> dict[str, float]:
    """Bytes held per live turn, and the ratios the target is about.

    ``plain``: the plain store (a list of Turn per conversation);
    ``compressed``: :class:`~shell.memory.Conversations` (compiled framing);
    ``ratio``: compressed / plain, the figure with the target. For reference,
    ``strings``: the str objects of the texts alone (``sys.getsizeof``, no
    role, time or container), and ``ratio_to_strings``.

    Every conversation gets *appends* (+0..7) chat-like turns, so with the
    defaults each is full (100 turns) and has been dropping its oldest turns.
    The bytes are what tracemalloc sees the store allocate and keep: turn
    objects, strings, frames, arrays, dicts, keys.
    """
    texts = chat_turns(1024, seed=11)
    plain, plain_turns, plain_store = _held_bytes("plain", conversations, appends, texts)
    packed, packed_turns, _ = _held_bytes("compiled", conversations, appends, texts)
    assert plain_turns == packed_turns, (plain_turns, packed_turns)
    strings = sum(sys.getsizeof(turn.text) for turns in plain_store._turns.values() for turn in turns)
    result = {"plain": plain / plain_turns, "compressed": packed / packed_turns, "strings": strings / plain_turns}
    result["ratio"] = result["compressed"] / result["plain"]
    result["ratio_to_strings"] = result["compressed"] / result["strings"]
    return result


def markdown() -> str:
    """The bytes-per-turn table."""
    figures = BYTES_PER_TURN()
    text_chars = sum(map(len, chat_turns(1024, seed=11))) / 1024
    met = "yes" if figures["ratio"] <= MAX_RATIO else "**MISSED**"
    return "\n".join(
        [
            f"Conversation memory per stored turn ({MEASURED_CONVERSATIONS} full conversations of {MAX_TURNS} turns,"
            f" chat-like text averaging {text_chars:.0f} characters a turn; tracemalloc):",
            "",
            "| storage | bytes per turn | vs plain | target | met |",
            "|---|---|---|---|---|",
            f"| compressed (Conversations) | {figures['compressed']:.0f} | {figures['ratio']:.1%}"
            f" | <= {MAX_RATIO:.0%} | {met} |",
            f"| plain (list of Turn) | {figures['plain']:.0f} | — | — | |",
            f"| for reference: the texts' str objects alone | {figures['strings']:.0f}"
            f" | compressed = {figures['ratio_to_strings']:.1%} of it | — | |",
        ]
    )
