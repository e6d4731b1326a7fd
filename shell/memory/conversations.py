"""Conversation history: role-tagged turns per conversation, bounded, compressed, persisted.

A conversation is what one user said to the bot in one place, and the bot's
replies. Its key (:func:`conversation_key`) is the channel id, or ``"dm"``,
plus the user id. Each :class:`Turn` has a provider-neutral role, ``"user"``
or ``"assistant"`` (providers map them: Gemini calls the second ``"model"``),
its text and ``at``, the clock time it was added.

Limits (constructor settings of :class:`Conversations`):

- ``max_turns`` (100) and ``max_chars`` (50,000 characters of text): after
  each append the oldest turns are dropped until both hold. A single text
  longer than ``max_chars`` is refused.
- ``session_timeout`` (30 minutes): a conversation idle (no new turn) for
  longer starts fresh. Its old turns are *deleted*, not archived: in memory
  when the conversation is next used or at the next sweep, on disk with the
  next write. Nothing would ever read them again, and keeping personal data
  nobody needs is what a privacy policy must not do.
- ``stale_after`` (30 days): the hourly sweep (a job on the
  :class:`~shell.timers.TimerWheel`, :meth:`Conversations.sweep`) removes
  conversations idle longer than that, in memory and on disk, and clears
  the sessions that timed out since the last sweep.

Storage: the newest turns, fewer than ``plain_turns`` (8), are plain
:class:`Turn` objects. Every older live turn is packed into one
:mod:`fastcore.framing` frame per conversation (deflated), which is rebuilt
each time the plain turns reach ``plain_turns``: the work of a rebuild is
bounded by ``max_chars``, and the frame compresses the whole history at
once, which deflate does far better than message by message. Dropping the
oldest turns only advances a counter; their bytes leave at the next rebuild.
Frame payload: one ``<BdI`` header per turn (role code, ``at``, UTF-8 length),
then the UTF-8 texts. Measured (``bench/workloads/shell_turns.py``): full
conversations of chat-like text take about a third of the memory of plain
:class:`Turn` objects; the price is CPU, a rebuild (inflate + deflate of up
to ``max_chars``) every ``plain_turns`` appends and an inflate per
:meth:`~Conversations.history` that reaches past the plain turns.

Reading: :meth:`Conversations.history` gives the newest turns whose texts
fit a character budget, oldest first, ready to send as multi-turn messages;
:meth:`Conversations.digest` is :func:`shell.cache.digest_history` over
exactly the turns ``history(key)`` returns with the default budget
``history_budget`` (12,000 characters): the history digest of a response
cache key (see also :class:`shell.memory.Context`, which carries the digest
of the history it holds).

Persistence: with a :class:`~shell.memory.store.MemoryStore`, a conversation
is loaded on first use of its key and every change is written behind by the
store (new turns inserted, dropped ones deleted). Without one, memory is all
there is.

Time is ``clock()`` (default :class:`shell.ratelimit.WallClock`: POSIX
seconds that follow ``trio.current_time()``, so a MockClock drives it and
stored times stay meaningful across restarts).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import struct
from array import array
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import NamedTuple

from fastcore import framing as fastcore_framing
from shell.cache import digest_history
from shell.memory.store import Batch, MemoryStore, StoredConversation
from shell.ratelimit import WallClock
from shell.timers import TimerHandle, TimerWheel

logger = logging.getLogger(__name__)

__all__ = [
    "ROLES",
    "ConversationKey",
    "Conversations",
    "Turn",
    "as_id",
    "conversation_key",
    "digest_turns",
]

ROLES = ("user", "assistant")
DEFAULT_MAX_TURNS = 100
DEFAULT_MAX_CHARS = 50_000
DEFAULT_SESSION_TIMEOUT = 30 * 60.0
DEFAULT_HISTORY_BUDGET = 12_000
DEFAULT_PLAIN_TURNS = 8
DEFAULT_STALE_AFTER = 30 * 86400.0
DEFAULT_SWEEP_EVERY = 3600.0
DEFAULT_IDLE_AFTER = 300.0
COMPRESSION_LEVEL = 4  # on chat text: within 3 % of level 6's size in about half its time

_ROLE_CODES = {role: code for code, role in enumerate(ROLES)}
_HEADER = struct.Struct("<BdI")  # role code, at, UTF-8 length of the text
_MAX_UTF8_PER_CHAR = 4


class Turn(NamedTuple):
    """One message: ``role`` (``"user"`` or ``"assistant"``), ``text``, ``at`` (clock seconds)."""

    role: str
    text: str
    at: float


class ConversationKey(NamedTuple):
    """Whose conversation, where: ``scope`` is the channel id or ``"dm"``. Build it with :func:`conversation_key`."""

    scope: str
    user_id: str


def as_id(value: object, name: str = "id") -> str:
    """A user, channel or guild id as a str: a non-empty str, or an int >= 0 (a Discord snowflake).

    Raises :exc:`TypeError` for another type (bool included) and
    :exc:`ValueError` for an empty or space-padded string or a negative int.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{name} must be a str or an int, not {type(value).__name__}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, not {value!r}")
        return str(value)
    if not value or value != value.strip():
        raise ValueError(f"{name} must be a non-empty string without surrounding spaces, not {value!r}")
    return str.__str__(value)


def conversation_key(user_id: str | int, channel_id: str | int | None = None) -> ConversationKey:
    """The key of *user_id*'s conversation in *channel_id*, or in direct messages when it is None.

    Errors as for :func:`as_id`.
    """
    scope = "dm" if channel_id is None else as_id(channel_id, "channel_id")
    return ConversationKey(scope, as_id(user_id, "user_id"))


def digest_turns(turns: Iterable[Turn]) -> str:
    """:func:`shell.cache.digest_history` of *turns* (their roles and texts, in order)."""
    return digest_history((turn.role, turn.text) for turn in turns)


def _check_key(key: object) -> None:
    if not isinstance(key, ConversationKey):
        raise TypeError(f"key must be a ConversationKey (see conversation_key), not {type(key).__name__}")
    if not (isinstance(key.scope, str) and isinstance(key.user_id, str)):
        raise TypeError("a ConversationKey holds two str; build it with conversation_key()")


def _count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value!r}")
    return value


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, not {value!r}")
    return float(value)


class _Conversation:
    """One conversation's turns: ``packed[skip:packed_count]`` then ``tail`` are the live ones, oldest first."""

    __slots__ = (
        "chars",
        "last_at",
        "last_used",
        "lengths",
        "next_seq",
        "packed",
        "packed_count",
        "skip",
        "tail",
        "version",
        "written_first",
        "written_seq",
    )

    def __init__(self, now: float, next_seq: int = 0) -> None:
        self.packed = b""  # frame of packed turns; b"" when none
        self.packed_count = 0  # turns in the frame, the first `skip` of them dropped
        self.skip = 0
        self.tail: list[Turn] = []  # the newest turns, plain
        self.lengths = array("I")  # characters of every live turn, oldest first
        self.chars = 0  # sum of lengths
        self.next_seq = next_seq  # sequence number of the next turn; live turns end just below it
        self.last_at = now  # when the last turn was added (or the conversation created)
        self.last_used = now  # when the conversation was last read or changed
        self.version = 0  # a stamp unique across the Conversations object; changes with every change
        self.written_seq = next_seq  # turns below this are on disk
        self.written_first = next_seq  # the first live turn as the disk knows it

    @property
    def first_seq(self) -> int:
        return self.next_seq - len(self.lengths)

    def fitting(self, budget: int) -> int:
        """How many of the newest turns fit in *budget* characters together."""
        used = 0
        fit = 0
        for length in reversed(self.lengths):
            used += length
            if used > budget:
                break
            fit += 1
        return fit


class Conversations:
    """Every conversation's history, in memory, compressed, optionally persisted.

    Settings (keyword-only; see the module docstring): ``max_turns`` (100),
    ``max_chars`` (50,000), ``session_timeout`` (1800 s; None: sessions never
    end), ``history_budget`` (12,000: the default budget of :meth:`history`
    and :meth:`digest`), ``plain_turns`` (8), ``stale_after`` (30 days),
    ``idle_after`` (300 s: how long unused a conversation must be before
    :meth:`shed_idle` may drop it), ``timers`` and ``sweep_every`` (3600 s:
    with a wheel, :meth:`sweep` is registered on it at once as
    ``"conversations-sweep"``; :attr:`sweep_job` is its handle), ``clock``
    and ``framing`` (the :mod:`fastcore.framing` implementation). Bad
    settings raise :exc:`TypeError` or :exc:`ValueError`.

    The async methods are checkpoints only when they load a conversation
    from the store (the first use of a key); everything else happens
    synchronously, so each call sees and leaves a consistent conversation.
    A call cancelled while loading changes nothing; a load that fails
    raises the store's ``sqlite3.Error``/``OSError`` and changes nothing.
    Bad arguments raise :exc:`TypeError` or :exc:`ValueError` before
    anything changes. Call :meth:`sweep_job.cancel() <TimerHandle.cancel>`
    to stop the sweep of a Conversations object no longer used.
    """

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        max_turns: int = DEFAULT_MAX_TURNS,
        max_chars: int = DEFAULT_MAX_CHARS,
        session_timeout: float | None = DEFAULT_SESSION_TIMEOUT,
        history_budget: int = DEFAULT_HISTORY_BUDGET,
        plain_turns: int = DEFAULT_PLAIN_TURNS,
        stale_after: float = DEFAULT_STALE_AFTER,
        idle_after: float = DEFAULT_IDLE_AFTER,
        timers: TimerWheel | None = None,
        sweep_every: float = DEFAULT_SWEEP_EVERY,
        clock: Callable[[], float] | None = None,
        framing: ModuleType | None = None,
    ) -> None:
        if store is not None and not isinstance(store, MemoryStore):
            raise TypeError(f"store must be a MemoryStore or None, not {type(store).__name__}")
        self.max_turns = _count(max_turns, "max_turns", 1)
        self.max_chars = _count(max_chars, "max_chars", 1)
        self.session_timeout = None if session_timeout is None else _seconds(session_timeout, "session_timeout")
        self.history_budget = _count(history_budget, "history_budget", 0)
        self.plain_turns = _count(plain_turns, "plain_turns", 1)
        self.stale_after = _seconds(stale_after, "stale_after")
        self.idle_after = _seconds(idle_after, "idle_after")
        sweep_every = _seconds(sweep_every, "sweep_every")
        framing = fastcore_framing if framing is None else framing
        self._pack = framing.pack
        self._unpack = framing.unpack
        self._clock = WallClock() if clock is None else clock
        self._store = store
        # In least recently used order: a use moves the conversation to the end.
        self._conversations: dict[ConversationKey, _Conversation] = {}
        # Conversations with changes not yet written (only with a store).
        self._dirty: dict[ConversationKey, _Conversation] = {}
        self._stamps = itertools.count(1)
        self._created = self._loaded = self._expired = self._stale_removed = self._shed = self._sweeps = 0
        if store is not None:
            store.add_source(self)
        self.sweep_job: TimerHandle | None = None
        if timers is not None:
            self.sweep_job = timers.every(sweep_every, self._sweep_job, name="conversations-sweep")

    @property
    def store(self) -> MemoryStore | None:
        return self._store

    def __len__(self) -> int:
        """Conversations held in memory."""
        return len(self._conversations)

    # -- the reply path ----------------------------------------------------

    async def append(self, key: ConversationKey, role: str, text: str) -> Turn:
        """Add a turn to *key*'s conversation and return it; drop the oldest turns beyond the limits.

        If the session had timed out, the conversation starts fresh first.
        Raises :exc:`TypeError` for a wrong type, :exc:`ValueError` for a
        role other than ``"user"``/``"assistant"``, an empty (or blank) text,
        a text longer than ``max_chars`` or one that is not valid Unicode
        (lone surrogates).
        """
        _check_key(key)
        if not isinstance(role, str):
            raise TypeError(f"role must be a str, not {type(role).__name__}")
        if role not in _ROLE_CODES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        self._check_text(text)
        conversation = await self._use(key)
        now = conversation.last_used  # the clock as _use read it, just now
        turn = Turn(ROLES[_ROLE_CODES[role]], text, now)
        conversation.tail.append(turn)
        conversation.lengths.append(len(text))
        conversation.chars += len(text)
        conversation.next_seq += 1
        conversation.last_at = now
        self._trim(conversation)
        if len(conversation.tail) >= self.plain_turns:
            self._repack(conversation)
        self._changed(key, conversation)
        return turn

    async def history(self, key: ConversationKey, budget_chars: int | None = None) -> list[Turn]:
        """The newest turns of *key* whose texts fit in *budget_chars* together, oldest first.

        The turns are contiguous: the first one that does not fit ends the
        history, even if an older, shorter one would fit. *budget_chars*
        defaults to ``history_budget``. An unknown key has no turns (and a
        timed-out session neither). Raises :exc:`TypeError` or
        :exc:`ValueError` for a bad key or budget.
        """
        _check_key(key)
        budget = self._budget(budget_chars)
        conversation = await self._use(key)
        return self._newest(conversation, conversation.fitting(budget))

    async def digest(self, key: ConversationKey, budget_chars: int | None = None) -> str:
        """:func:`digest_turns` of exactly ``history(key, budget_chars)``.

        With the default budget, this is the history digest to put in a
        response cache key (:class:`shell.cache.CacheKeyParts`); a fresh
        conversation gives :data:`shell.cache.EMPTY_HISTORY_DIGEST`.
        """
        return digest_turns(await self.history(key, budget_chars))

    async def version(self, key: ConversationKey) -> int:
        """A stamp that changes whenever *key*'s turns change (never reused within this object)."""
        _check_key(key)
        return (await self._use(key)).version

    async def reset(self, key: ConversationKey) -> int:
        """Delete *key*'s turns now (memory now, disk at the next write); return how many there were."""
        _check_key(key)
        conversation = await self._use(key)
        dropped = len(conversation.lengths)
        if dropped:
            self._clear(key, conversation)
        return dropped

    # -- upkeep ------------------------------------------------------------

    async def sweep(self) -> dict[str, int]:
        """Remove conversations idle longer than ``stale_after`` and the turns of timed-out sessions.

        In memory at once; on disk (with a store) in one transaction that
        first writes what is pending, so it compares the times memory
        holds. Returns ``removed`` (conversations dropped from memory),
        ``expired`` (sessions cleared in memory) and, from the disk,
        ``conversation_rows`` and ``turn_rows`` deleted. Raises
        ``sqlite3.Error``/``OSError`` if the disk work fails (memory is
        already swept; the disk catches up at the next sweep).
        """
        now = self._clock()
        stale_before = now - self.stale_after
        expired_before = None if self.session_timeout is None else now - self.session_timeout
        removed = expired = 0
        for key, conversation in list(self._conversations.items()):
            if conversation.last_at < stale_before:
                del self._conversations[key]
                self._dirty.pop(key, None)
                removed += 1
            elif expired_before is not None and conversation.lengths and conversation.last_at < expired_before:
                self._clear(key, conversation)
                expired += 1
        self._sweeps += 1
        self._stale_removed += removed
        self._expired += expired
        rows = {"conversation_rows": 0, "turn_rows": 0}
        if self._store is not None:
            rows = await self._store.delete_idle(stale_before, expired_before)
        return {"removed": removed, "expired": expired, **rows}

    async def _sweep_job(self) -> None:
        swept = await self.sweep()
        logger.info("conversation sweep: %s", swept)

    async def shed_idle(self, fraction: float) -> int:
        """Drop up to ``ceil(fraction * len(self))`` idle conversations from memory; return how many.

        For the memory monitor under pressure. Candidates are the least
        recently used conversations not used for ``idle_after`` seconds.
        With a store, pending changes are written first and the
        conversations stay on disk (loaded again on their next use); one
        that changed or was used meanwhile is kept. Without a store, a
        dropped conversation is gone. Raises :exc:`TypeError`/:exc:`ValueError`
        unless 0 <= *fraction* <= 1, and ``sqlite3.Error``/``OSError`` if the
        write fails (then nothing is dropped).
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise TypeError(f"fraction must be a number, not {type(fraction).__name__}")
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be between 0 and 1, not {fraction!r}")
        wanted = math.ceil(fraction * len(self._conversations))
        idle_before = self._clock() - self.idle_after
        candidates: list[tuple[ConversationKey, _Conversation]] = []
        for key, conversation in self._conversations.items():  # least recently used first
            if len(candidates) >= wanted or conversation.last_used > idle_before:
                break
            candidates.append((key, conversation))
        if self._store is not None and any(key in self._dirty for key, _ in candidates):
            await self._store.write()
        dropped = 0
        for key, conversation in candidates:
            if (
                self._conversations.get(key) is conversation
                and key not in self._dirty
                and conversation.last_used <= idle_before
            ):
                del self._conversations[key]
                dropped += 1
        self._shed += dropped
        return dropped

    def drop_user(self, user_id: str | int) -> tuple[int, int]:
        """Remove every conversation of *user_id* from memory (not from disk); return (conversations, turns).

        Part of :meth:`shell.memory.Memory.forget`, which also deletes the
        rows. Errors as for :func:`as_id`.
        """
        user = as_id(user_id, "user_id")
        keys = [key for key in self._conversations if key.user_id == user]
        turns = 0
        for key in keys:
            turns += len(self._conversations.pop(key).lengths)
            self._dirty.pop(key, None)
        return len(keys), turns

    def stats(self) -> dict[str, int]:
        """Counters and sizes, all measured. Walks every conversation in memory (O(conversations)).

        ``conversations``, ``turns`` (live, in memory), ``plain_turns``,
        ``packed_turns``, ``packed_bytes`` (frame sizes), ``dirty``
        (conversations with unwritten changes), ``created``, ``loaded``
        (from the store), ``expired_sessions``, ``stale_removed``, ``shed``,
        ``sweeps``.
        """
        conversations = self._conversations.values()
        return {
            "conversations": len(self._conversations),
            "turns": sum(len(c.lengths) for c in conversations),
            "plain_turns": sum(len(c.tail) for c in conversations),
            "packed_turns": sum(c.packed_count - c.skip for c in conversations),
            "packed_bytes": sum(len(c.packed) for c in conversations),
            "dirty": len(self._dirty),
            "created": self._created,
            "loaded": self._loaded,
            "expired_sessions": self._expired,
            "stale_removed": self._stale_removed,
            "shed": self._shed,
            "sweeps": self._sweeps,
        }

    # -- the store's source protocol -------------------------------------------

    def collect_writes(self, batch: Batch) -> None:
        """Add every unwritten change to *batch* (see :class:`~shell.memory.store.WriteSource`)."""
        if not self._dirty:
            return
        collected = []
        for key, conversation in self._dirty.items():
            scope, user = key
            first, next_seq = conversation.first_seq, conversation.next_seq
            batch.conversations.append((scope, user, conversation.last_at, first, next_seq))
            if first > conversation.written_first:
                batch.turn_cuts.append((scope, user, first))
            start = max(first, conversation.written_seq)
            for seq, turn in enumerate(self._newest(conversation, next_seq - start), start):
                batch.turns.append((scope, user, seq, turn.role, turn.text, turn.at))
            collected.append((key, conversation, conversation.version, first, next_seq))
        batch.on_commit.append(functools.partial(self._written, collected))

    def _written(self, collected: list[tuple[ConversationKey, _Conversation, int, int, int]]) -> None:
        for key, conversation, version, first, next_seq in collected:
            conversation.written_seq = max(conversation.written_seq, next_seq)
            conversation.written_first = max(conversation.written_first, first)
            if conversation.version == version and self._dirty.get(key) is conversation:
                del self._dirty[key]

    # -- internals ---------------------------------------------------------------

    def _check_text(self, text: object) -> None:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        if not text.strip():
            raise ValueError("text must not be empty")
        if len(text) > self.max_chars:
            raise ValueError(f"text of {len(text)} characters is over the {self.max_chars}-character limit")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"text is not valid Unicode: {exc.reason}") from None

    def _budget(self, budget_chars: object) -> int:
        if budget_chars is None:
            return self.history_budget
        return _count(budget_chars, "budget_chars", 0)

    async def _use(self, key: ConversationKey) -> _Conversation:
        """*key*'s conversation, loaded or created if needed, moved to the recent end; sessions timed out are cleared."""
        conversation = self._conversations.get(key)
        if conversation is None:
            conversation = await self._load(key)
        else:
            del self._conversations[key]
            self._conversations[key] = conversation
        now = self._clock()
        conversation.last_used = now
        timeout = self.session_timeout
        if timeout is not None and conversation.lengths and now - conversation.last_at > timeout:
            self._clear(key, conversation)
            self._expired += 1
        return conversation

    async def _load(self, key: ConversationKey) -> _Conversation:
        stored = None
        if self._store is not None:
            stored = await self._store.load_conversation(key.scope, key.user_id)
            existing = self._conversations.get(key)
            if existing is not None:  # another task loaded it while this one waited
                return existing
        # No checkpoint from here on: Memory.forget relies on a load that finished
        # before its deletion being in memory by the time the deletion ends.
        if stored is None:
            conversation = _Conversation(self._clock())
            conversation.version = next(self._stamps)
            self._created += 1
        else:
            conversation = self._from_stored(key, stored)
            self._loaded += 1
        self._conversations[key] = conversation
        return conversation

    def _from_stored(self, key: ConversationKey, stored: StoredConversation) -> _Conversation:
        conversation = _Conversation(self._clock(), stored.next_seq)
        conversation.last_at = stored.last_at
        conversation.written_first = stored.first_seq
        # Keep the newest run of turns numbered without a gap up to next_seq - 1;
        # anything else means the rows were damaged outside triobot.
        turns: list[Turn] = []
        expected = stored.next_seq - 1
        for seq, role, text, at in reversed(stored.turns):
            if seq != expected or role not in _ROLE_CODES or not isinstance(text, str) or not text:
                logger.warning("conversation %s: stored turn %d unusable or missing; older turns dropped", key, seq)
                break
            turns.append(Turn(ROLES[_ROLE_CODES[role]], text, float(at)))
            expected -= 1
        turns.reverse()
        conversation.tail = turns
        conversation.lengths = array("I", (len(turn.text) for turn in turns))
        conversation.chars = sum(conversation.lengths)
        self._trim(conversation)  # the limits may have been lowered since it was written
        if len(conversation.tail) >= self.plain_turns:
            self._repack(conversation)
        conversation.version = next(self._stamps)
        if conversation.first_seq != stored.first_seq:
            self._changed(key, conversation)
        return conversation

    def _changed(self, key: ConversationKey, conversation: _Conversation) -> None:
        conversation.version = next(self._stamps)
        if self._store is not None:
            self._dirty[key] = conversation
            self._store.changed()

    def _clear(self, key: ConversationKey, conversation: _Conversation) -> None:
        """Drop every turn of *conversation* (its numbering goes on)."""
        conversation.packed = b""
        conversation.packed_count = conversation.skip = 0
        conversation.tail = []
        conversation.lengths = array("I")
        conversation.chars = 0
        self._changed(key, conversation)

    def _trim(self, conversation: _Conversation) -> None:
        """Drop the oldest turns until the turn and character limits hold."""
        lengths = conversation.lengths
        while len(lengths) > self.max_turns or conversation.chars > self.max_chars:
            conversation.chars -= lengths.pop(0)
            if conversation.skip < conversation.packed_count:
                conversation.skip += 1
                if conversation.skip == conversation.packed_count:
                    conversation.packed = b""
                    conversation.packed_count = conversation.skip = 0
            else:
                del conversation.tail[0]

    def _payload(self, conversation: _Conversation) -> bytes:
        # Every packed turn was live when packed, so the texts hold at most max_chars characters.
        limit = _HEADER.size * conversation.packed_count + _MAX_UTF8_PER_CHAR * self.max_chars
        return self._unpack(conversation.packed, max_size=limit)

    def _repack(self, conversation: _Conversation) -> None:
        """Pack every live turn into a new frame; the plain tail becomes empty."""
        headers: list[bytes] = []
        texts: list[bytes] = []
        if conversation.packed_count:
            payload = self._payload(conversation)
            text_start = _HEADER.size * conversation.packed_count
            dropped_headers = payload[: _HEADER.size * conversation.skip]
            dropped_bytes = sum(size for _, _, size in _HEADER.iter_unpack(dropped_headers))
            headers.append(payload[len(dropped_headers) : text_start])
            texts.append(payload[text_start + dropped_bytes :])
        for turn in conversation.tail:
            data = turn.text.encode("utf-8")
            headers.append(_HEADER.pack(_ROLE_CODES[turn.role], turn.at, len(data)))
            texts.append(data)
        conversation.packed = self._pack(b"".join(headers + texts), threshold=0, level=COMPRESSION_LEVEL)
        conversation.packed_count = len(conversation.lengths)
        conversation.skip = 0
        conversation.tail = []

    def _newest(self, conversation: _Conversation, count: int) -> list[Turn]:
        """The newest *count* live turns, oldest first (*count* <= live turns)."""
        tail = conversation.tail
        if count <= len(tail):
            return tail[len(tail) - count :]
        wanted = count - len(tail)  # from the end of the packed turns
        payload = memoryview(self._payload(conversation))
        text_start = _HEADER.size * conversation.packed_count
        headers = list(_HEADER.iter_unpack(payload[:text_start]))
        first = conversation.packed_count - wanted
        position = text_start + sum(size for _, _, size in headers[:first])
        turns = []
        for code, at, size in headers[first:]:
            turns.append(Turn(ROLES[code], str(payload[position : position + size], "utf-8"), at))
            position += size
        return turns + tail
