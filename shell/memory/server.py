"""Server memory: what the bot remembers about a guild, bounded, deduplicated, persisted.

Four kinds of item per guild (:data:`KINDS`), each bounded
(:class:`ServerLimits`): facts (50), running gags (30), remembered moments
(60; a moment is about one user) and code snippets (12 per user; a snippet
is by one user). Every item may name the user it concerns (``user_id``:
required for moments and snippets, optional for facts and gags); forgetting
a user (:meth:`ServerMemory.drop_user`, used by
:meth:`shell.memory.Memory.forget`) removes every item naming them.

Near-duplicates are not stored twice. A text is normalised
(:func:`normalize_text`: NFKC, casefolded, punctuation removed, whitespace
collapsed) and cut into word bigrams (:func:`shingles`); a new item whose
Jaccard similarity with an existing item of the same kind (and, for moments
and snippets, the same user) is at least ``similarity`` (0.8) reinforces
that item instead: its ``count`` goes up and ``last_seen`` becomes now.

When a kind is full, the least valuable item goes to make room. An item's
value is ``count * 0.5 ** ((now - last_seen) / half_life)`` with a 7-day
half-life: reinforcement counts, and it fades with time, so the oldest and
least reinforced go first (ties: the one seen longest ago, then the oldest
id). The new item itself is always kept.

:meth:`ServerMemory.context_block` renders the facts, then the gags, then
the moments, each section most valuable first, as a prompt block that never
exceeds its character budget.

Persistence: with a :class:`~shell.memory.store.MemoryStore`, a guild's
items are loaded on first use and every change is written behind (table
``server_items``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
import unicodedata
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from shell.memory.conversations import as_id
from shell.memory.store import Batch, MemoryStore
from shell.ratelimit import WallClock

logger = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "MemoryItem",
    "Remembered",
    "ServerLimits",
    "ServerMemory",
    "jaccard",
    "normalize_text",
    "shingles",
]

KINDS = ("fact", "gag", "moment", "snippet")
_PERSONAL = ("moment", "snippet")  # kinds that are about (or by) one user
SECTIONS = (("fact", "Facts about this server:"), ("gag", "Running gags:"), ("moment", "Remembered moments:"))
SHINGLE_WORDS = 2
_NOT_WORD = re.compile(r"[^\w\s]|_")  # punctuation and symbols (\w alone would keep "_")


@dataclass(frozen=True)
class ServerLimits:
    """Bounds of one guild's memory.

    ``facts``, ``gags``, ``moments`` per guild and ``snippets_per_user``;
    ``max_text`` characters per fact, gag or moment and ``max_snippet`` per
    snippet; ``similarity``: the Jaccard similarity from which a new item is
    a duplicate; ``half_life``: seconds over which an item's value halves.
    Bad values raise :exc:`TypeError` or :exc:`ValueError`.
    """

    facts: int = 50
    gags: int = 30
    moments: int = 60
    snippets_per_user: int = 12
    max_text: int = 500
    max_snippet: int = 2000
    similarity: float = 0.8
    half_life: float = 7 * 86400.0

    def __post_init__(self) -> None:
        for name in ("facts", "gags", "moments", "snippets_per_user", "max_text", "max_snippet"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, not {value!r}")
        for name in ("similarity", "half_life"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, not {type(value).__name__}")
        if not 0 < self.similarity <= 1:
            raise ValueError(f"similarity must be in (0, 1], not {self.similarity!r}")
        if not 0 < self.half_life < math.inf:
            raise ValueError(f"half_life must be a finite number > 0, not {self.half_life!r}")

    def capacity(self, kind: str) -> int:
        """How many items of *kind* fit (per guild; snippets: per user)."""
        return {"fact": self.facts, "gag": self.gags, "moment": self.moments, "snippet": self.snippets_per_user}[kind]

    def max_chars(self, kind: str) -> int:
        return self.max_snippet if kind == "snippet" else self.max_text


class MemoryItem(NamedTuple):
    """A snapshot of one remembered item."""

    item_id: int
    kind: str
    text: str
    user_id: str | None
    count: int
    created_at: float
    last_seen: float


class Remembered(NamedTuple):
    """What :meth:`ServerMemory.remember` did: the item stored or reinforced, whether it was a
    near-duplicate (then ``item`` is the existing one, reinforced), and the item evicted to make room."""

    item: MemoryItem
    duplicate: bool
    evicted: MemoryItem | None


def normalize_text(text: str) -> str:
    """*text* as duplicates are compared: NFKC, casefolded, punctuation and symbols removed, whitespace collapsed.

    >>> normalize_text("  Bob   FELL off his chair!!  ")
    'bob fell off his chair'
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NOT_WORD.sub(" ", folded).split())


def shingles(normalized: str) -> frozenset[str]:
    """The word bigrams of a normalised text; a one-word text is its own single shingle."""
    words = normalized.split()
    if len(words) < SHINGLE_WORDS:
        return frozenset(words)
    return frozenset(" ".join(words[i : i + SHINGLE_WORDS]) for i in range(len(words) - SHINGLE_WORDS + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a & b| / |a | b|; 0.0 when both are empty."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def _fingerprint(text: str) -> frozenset[int]:
    """The hashes of *text*'s shingles: what duplicates are compared on (hashes take less room)."""
    return frozenset(map(hash, shingles(normalize_text(text))))


class _Item:
    __slots__ = ("count", "created_at", "fingerprint", "item_id", "kind", "last_seen", "text", "user_id")

    def __init__(
        self, item_id: int, kind: str, text: str, user_id: str | None, count: int, created_at: float, last_seen: float
    ) -> None:
        self.item_id = item_id
        self.kind = kind
        self.text = text
        self.user_id = user_id
        self.count = count
        self.created_at = created_at
        self.last_seen = last_seen
        self.fingerprint = array("q", _fingerprint(text))  # an array: a fraction of a set's size

    def value(self, now: float, half_life: float) -> float:
        return self.count * 0.5 ** ((now - self.last_seen) / half_life)

    def rank(self, half_life: float) -> tuple[float, float, int]:
        """Orders items as :meth:`value` does at any time: log2(value) + now / half_life does not depend on now."""
        return (math.log2(self.count) + self.last_seen / half_life, self.last_seen, self.item_id)

    def snapshot(self) -> MemoryItem:
        return MemoryItem(self.item_id, self.kind, self.text, self.user_id, self.count, self.created_at, self.last_seen)

    def row(self, guild_id: str) -> tuple:
        return (guild_id, self.item_id, self.kind, self.user_id, self.text, self.count, self.created_at, self.last_seen)


class _Guild:
    __slots__ = ("block", "deletes", "items", "next_id", "upserts", "version")

    def __init__(self) -> None:
        self.items: dict[int, _Item] = {}
        self.next_id = 1
        self.version = 0
        self.block: tuple[int, int, str] | None = None  # (version, budget, block) of the last context block
        self.upserts: set[int] = set()  # item ids to write (only with a store)
        self.deletes: set[int] = set()  # item ids to delete on disk (only with a store)


class ServerMemory:
    """Per-guild remembered items (see the module docstring).

    ``store``: a :class:`~shell.memory.store.MemoryStore` (None: memory
    only); ``limits``: a :class:`ServerLimits`; ``clock``: seconds (default
    :class:`shell.ratelimit.WallClock`). The async methods are checkpoints
    only when they load a guild from the store (its first use); a load that
    fails raises the store's ``sqlite3.Error``/``OSError`` and changes
    nothing. Bad arguments raise :exc:`TypeError` or :exc:`ValueError`
    before anything changes.
    """

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        limits: ServerLimits | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if store is not None and not isinstance(store, MemoryStore):
            raise TypeError(f"store must be a MemoryStore or None, not {type(store).__name__}")
        if limits is not None and not isinstance(limits, ServerLimits):
            raise TypeError(f"limits must be a ServerLimits, not {type(limits).__name__}")
        self.limits = ServerLimits() if limits is None else limits
        self._store = store
        self._clock = WallClock() if clock is None else clock
        self._guilds: dict[str, _Guild] = {}
        self._dirty: dict[str, _Guild] = {}
        self._stamps = itertools.count(1)
        self._added = self._duplicates = self._evictions = self._loaded = 0
        if store is not None:
            store.add_source(self)

    @property
    def store(self) -> MemoryStore | None:
        return self._store

    async def remember(
        self, guild_id: str | int, kind: str, text: str, *, user_id: str | int | None = None
    ) -> Remembered:
        """Store *text* as an item of *kind* in *guild_id*'s memory, or reinforce its near-duplicate.

        *user_id* is the user the item concerns: required for ``"moment"``
        (whom it is about) and ``"snippet"`` (whose code it is), optional
        otherwise. Surrounding whitespace is stripped; in facts, gags and
        moments (one-line prompt items) every run of whitespace becomes one
        space, while snippets keep their layout. When the kind is full, the
        least valuable item is evicted (returned in the result).

        Raises :exc:`TypeError` for wrong types; :exc:`ValueError` for an
        unknown kind, an empty text or one without any word, a text over the
        kind's limit, or a missing *user_id*.
        """
        guild_key = as_id(guild_id, "guild_id")
        if not isinstance(kind, str):
            raise TypeError(f"kind must be a str, not {type(kind).__name__}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        text = text.strip() if kind == "snippet" else _one_line(text)
        if not text:
            raise ValueError("text must not be empty")
        limit = self.limits.max_chars(kind)
        if len(text) > limit:
            raise ValueError(f"a {kind} of {len(text)} characters is over the {limit}-character limit")
        if user_id is None:
            if kind in _PERSONAL:
                raise ValueError(f"a {kind} needs the user_id of the user it concerns")
            user = None
        else:
            user = as_id(user_id, "user_id")
        fingerprint = _fingerprint(text)
        if not fingerprint:
            raise ValueError(f"text has no words: {text!r}")

        guild = await self._use(guild_key)
        now = self._clock()
        personal = kind in _PERSONAL
        similar = [
            item
            for item in guild.items.values()
            if item.kind == kind and (not personal or item.user_id == user)
        ]
        for item in similar:
            if jaccard(frozenset(item.fingerprint), fingerprint) >= self.limits.similarity:
                item.count += 1
                item.last_seen = now
                self._duplicates += 1
                self._changed(guild_key, guild, upsert=item.item_id)
                return Remembered(item.snapshot(), True, None)

        rivals = similar if kind == "snippet" else [item for item in guild.items.values() if item.kind == kind]
        evicted = None
        while len(rivals) >= self.limits.capacity(kind):
            loser = min(rivals, key=lambda item: (item.value(now, self.limits.half_life), item.last_seen, item.item_id))
            rivals.remove(loser)
            del guild.items[loser.item_id]
            evicted = loser.snapshot()
            self._evictions += 1
            self._changed(guild_key, guild, delete=loser.item_id)
        item = _Item(guild.next_id, kind, text, user, 1, now, now)
        guild.next_id += 1
        guild.items[item.item_id] = item
        self._added += 1
        self._changed(guild_key, guild, upsert=item.item_id)
        return Remembered(item.snapshot(), False, evicted)

    async def items(self, guild_id: str | int, kind: str | None = None) -> list[MemoryItem]:
        """*guild_id*'s items (of *kind*, if given), oldest first."""
        guild_key = as_id(guild_id, "guild_id")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS} or None, not {kind!r}")
        guild = await self._use(guild_key)
        return [item.snapshot() for item in guild.items.values() if kind is None or item.kind == kind]

    async def forget_item(self, guild_id: str | int, item_id: int) -> bool:
        """Remove one item (an admin's correction); True if it existed."""
        guild_key = as_id(guild_id, "guild_id")
        if isinstance(item_id, bool) or not isinstance(item_id, int):
            raise TypeError(f"item_id must be an int, not {type(item_id).__name__}")
        guild = await self._use(guild_key)
        if guild.items.pop(item_id, None) is None:
            return False
        self._changed(guild_key, guild, delete=item_id)
        return True

    async def context_block(self, guild_id: str | int, budget_chars: int) -> str:
        """Facts, gags and moments of *guild_id* as a prompt block of at most *budget_chars* characters.

        Sections in that order, each a title line then ``- item`` lines,
        most valuable item first; an item that does not fit is left out
        (a shorter one after it may still fit), and a section without any
        item that fits is left out with its title. An empty string when
        nothing fits or nothing is stored. Snippets are not included. The
        order by value is the same at any time (all values fade alike), so
        the last block built is reused until the guild changes.
        """
        guild_key = as_id(guild_id, "guild_id")
        if isinstance(budget_chars, bool) or not isinstance(budget_chars, int):
            raise TypeError(f"budget_chars must be an int, not {type(budget_chars).__name__}")
        if budget_chars < 0:
            raise ValueError(f"budget_chars must be >= 0, not {budget_chars!r}")
        guild = await self._use(guild_key)
        if guild.block is not None and guild.block[:2] == (guild.version, budget_chars):
            return guild.block[2]
        half_life = self.limits.half_life
        lines: list[str] = []
        used = 0  # len("\n".join(lines))

        def cost(new_lines: list[str]) -> int:
            return sum(map(len, new_lines)) + len(new_lines) - (0 if lines else 1)

        for kind, title in SECTIONS:
            ranked = sorted(
                (item for item in guild.items.values() if item.kind == kind),
                key=lambda item: item.rank(half_life),
                reverse=True,
            )
            titled = False
            for item in ranked:
                new_lines = ["- " + _render(item)]
                if not titled:
                    new_lines.insert(0, title)
                extra = cost(new_lines)
                if used + extra <= budget_chars:
                    lines += new_lines
                    used += extra
                    titled = True
        block = "\n".join(lines)
        guild.block = (guild.version, budget_chars, block)
        return block

    async def version(self, guild_id: str | int) -> int:
        """A stamp that changes whenever *guild_id*'s items change (never reused within this object)."""
        return (await self._use(as_id(guild_id, "guild_id"))).version

    def drop_user(self, user_id: str | int) -> int:
        """Remove every item naming *user_id* from memory (not from disk); return how many."""
        user = as_id(user_id, "user_id")
        dropped = 0
        for guild in self._guilds.values():
            doomed = [item_id for item_id, item in guild.items.items() if item.user_id == user]
            for item_id in doomed:
                del guild.items[item_id]
                guild.upserts.discard(item_id)
            if doomed:
                dropped += len(doomed)
                guild.version = next(self._stamps)
        return dropped

    def stats(self) -> dict[str, int]:
        """``guilds`` and ``items`` in memory, ``dirty`` guilds, ``added``, ``duplicates``, ``evictions``, ``loaded``."""
        return {
            "guilds": len(self._guilds),
            "items": sum(len(guild.items) for guild in self._guilds.values()),
            "dirty": len(self._dirty),
            "added": self._added,
            "duplicates": self._duplicates,
            "evictions": self._evictions,
            "loaded": self._loaded,
        }

    # -- the store's source protocol -------------------------------------------

    def collect_writes(self, batch: Batch) -> None:
        """Add every unwritten change to *batch* (see :class:`~shell.memory.store.WriteSource`)."""
        if not self._dirty:
            return
        collected = []
        for guild_key, guild in self._dirty.items():
            for item_id in guild.upserts:
                item = guild.items.get(item_id)
                if item is not None:
                    batch.items.append(item.row(guild_key))
            batch.item_deletes.extend((guild_key, item_id) for item_id in guild.deletes)
            collected.append((guild_key, guild, guild.version))
        batch.on_commit.append(functools.partial(self._written, collected))

    def _written(self, collected: list[tuple[str, _Guild, int]]) -> None:
        for guild_key, guild, version in collected:
            # A guild changed since it was collected stays dirty and is written whole again.
            if guild.version == version and self._dirty.get(guild_key) is guild:
                guild.upserts.clear()
                guild.deletes.clear()
                del self._dirty[guild_key]

    # -- internals ---------------------------------------------------------------

    async def _use(self, guild_key: str) -> _Guild:
        guild = self._guilds.get(guild_key)
        if guild is not None:
            return guild
        rows: list[tuple] = []
        if self._store is not None:
            rows = await self._store.load_guild(guild_key)
            existing = self._guilds.get(guild_key)
            if existing is not None:  # another task loaded it while this one waited
                return existing
            self._loaded += 1
        # No checkpoint from here on (see Conversations._load).
        guild = _Guild()
        for item_id, kind, user, text, count, created_at, last_seen in rows:
            guild.next_id = max(guild.next_id, item_id + 1)  # never reuse an id, even a skipped one
            if kind not in KINDS or not isinstance(text, str) or not text or (kind in _PERSONAL and user is None):
                logger.warning("guild %s: stored item %s is unusable; skipped", guild_key, item_id)
                continue
            if kind != "snippet":
                text = _one_line(text)  # rows written by hand, perhaps: prompt items are one line
            guild.items[item_id] = _Item(item_id, kind, text, user, count, created_at, last_seen)
        guild.version = next(self._stamps)
        self._guilds[guild_key] = guild
        return guild

    def _changed(self, guild_key: str, guild: _Guild, *, upsert: int | None = None, delete: int | None = None) -> None:
        guild.version = next(self._stamps)
        if self._store is None:
            return
        if upsert is not None:
            guild.upserts.add(upsert)
        if delete is not None:
            guild.upserts.discard(delete)
            guild.deletes.add(delete)
        self._dirty[guild_key] = guild
        self._store.changed()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _render(item: _Item) -> str:
    if item.kind == "moment":
        return f"(about user {item.user_id}) {item.text}"
    return item.text
