"""The bot's memory: conversation history, server memory, the context built from both, and forgetting.

Parts:

- :mod:`shell.memory.conversations`: :class:`Conversations`, every
  conversation's turns, bounded and compressed.
- :mod:`shell.memory.server`: :class:`ServerMemory`, what the bot remembers
  about each guild.
- :mod:`shell.memory.store`: :class:`MemoryStore`, the SQLite database both
  write behind to (a :class:`~shell.service.Service`).
- here: :class:`Memory`, which builds a reply's :class:`Context` (cached in a
  :class:`ContextCache`) and forgets a user everywhere.

Wiring::

    store = MemoryStore("memory.db")                       # Service "memory-store"
    conversations = Conversations(store, timers=wheel)     # hourly sweep on the wheel
    memory = Memory(conversations, ServerMemory(store))
    memory.on_forget(analytics.forget_user)
    monitor.register_shedder("conversations", functools.partial(conversations.shed_idle, 0.5))
    runtime = Runtime([wheel, store, ...])
    ...
    key = conversation_key(user_id, channel_id)            # channel_id None in DMs
    context = await memory.context(key, guild_id, 16_000)
    reply = await provider(context.history, context.server_block, prompt)
    await conversations.append(key, "user", prompt)
    await conversations.append(key, "assistant", reply)
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, NamedTuple

import trio

from fastcore.lru import LRUCache
from shell.memory.conversations import (
    ROLES,
    ConversationKey,
    Conversations,
    Turn,
    as_id,
    conversation_key,
    digest_turns,
)
from shell.memory.server import KINDS, MemoryItem, Remembered, ServerLimits, ServerMemory
from shell.memory.store import MemoryStore, StoreError

logger = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "ROLES",
    "Context",
    "ContextCache",
    "ConversationKey",
    "Conversations",
    "Memory",
    "MemoryItem",
    "MemoryStore",
    "Remembered",
    "ServerLimits",
    "ServerMemory",
    "StoreError",
    "Turn",
    "conversation_key",
    "digest_turns",
]

DEFAULT_CONTEXT_TTL = 300.0
DEFAULT_CONTEXT_ENTRIES = 1000
DEFAULT_SERVER_SHARE = 0.25

ForgetHook = Callable[[str], Awaitable[object] | object]


class Context(NamedTuple):
    """What a reply is generated from, besides the persona and the prompt.

    ``history``: the turns to send as multi-turn messages, oldest first;
    ``history_digest``: :func:`digest_turns` of exactly those turns (put it
    in the response cache key); ``server_block``: the guild's memory as a
    prompt block ("" in DMs or when the guild has none).
    """

    history: tuple[Turn, ...]
    history_digest: str
    server_block: str


class ContextCache:
    """Built contexts, valid while the versions they were built from are current and younger than *ttl*.

    An entry is stored with the versions of its conversation and guild
    (see :meth:`Conversations.version`, :meth:`ServerMemory.version`);
    :meth:`get` with other versions is a miss and drops the entry
    (``invalidated``), so an entry is never served after a change. At most
    *maxsize* entries (least recently used evicted); *clock* is monotonic
    seconds (default ``trio.current_time``). Hits and misses are counted.
    """

    def __init__(
        self,
        maxsize: int = DEFAULT_CONTEXT_ENTRIES,
        ttl: float = DEFAULT_CONTEXT_TTL,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._lru: LRUCache = LRUCache(maxsize, None, ttl, clock=clock)
        self._hits = 0
        self._misses = 0
        self._invalidated = 0

    def get(self, key: Hashable, versions: tuple[int, ...]) -> Context | None:
        """The context stored under *key* if it was built at *versions* and has not expired; else None."""
        entry = self._lru.get(key)
        if entry is not None and entry[0] != versions:
            self._lru.delete(key)
            self._invalidated += 1
            entry = None
        if entry is None:
            self._misses += 1
            return None
        self._hits += 1
        return entry[1]

    def put(self, key: Hashable, versions: tuple[int, ...], context: Context) -> None:
        """Store *context*, built at *versions*, under *key* (replacing any earlier entry)."""
        self._lru[key] = (versions, context)

    def discard(self, matches: Callable[[Hashable], bool]) -> int:
        """Drop every entry whose key *matches*; return how many."""
        doomed = [key for key in self._lru.keys() if matches(key)]
        for key in doomed:
            self._lru.delete(key)
        return len(doomed)

    def stats(self) -> dict[str, float | int]:
        """``hits``, ``misses``, ``hit_rate`` (hits / lookups; 0.0 before any), ``invalidated``
        (misses because the conversation or guild changed), ``expired``, ``evicted``, ``entries``."""
        lookups = self._hits + self._misses
        lru = self._lru.stats()
        return {
            "hits": self._hits,
            "misses": self._misses,
            "hit_rate": self._hits / lookups if lookups else 0.0,
            "invalidated": self._invalidated,
            "expired": lru["expirations"],
            "evicted": lru["evictions"],
            "entries": lru["entries"],
        }


class Memory:
    """Conversations and server memory together: reply contexts and forgetting.

    Both must use the same store (or none): :exc:`ValueError` otherwise.
    ``context_ttl`` (300 s) and ``context_entries`` (1000) size the
    :class:`ContextCache` (attribute :attr:`contexts`); ``server_share``
    (0.25) is the part of a context budget the server block may take;
    ``on_forget``: hooks as for :meth:`on_forget`.
    """

    def __init__(
        self,
        conversations: Conversations,
        server: ServerMemory,
        *,
        context_ttl: float = DEFAULT_CONTEXT_TTL,
        context_entries: int = DEFAULT_CONTEXT_ENTRIES,
        server_share: float = DEFAULT_SERVER_SHARE,
        on_forget: Iterable[ForgetHook] = (),
    ) -> None:
        if not isinstance(conversations, Conversations) or not isinstance(server, ServerMemory):
            raise TypeError("Memory needs a Conversations and a ServerMemory")
        if conversations.store is not server.store:
            raise ValueError("conversations and server memory must share one store (or both have none)")
        if isinstance(server_share, bool) or not isinstance(server_share, (int, float)):
            raise TypeError(f"server_share must be a number, not {type(server_share).__name__}")
        if not 0 <= server_share <= 1:
            raise ValueError(f"server_share must be between 0 and 1, not {server_share!r}")
        self.conversations = conversations
        self.server = server
        self.server_share = float(server_share)
        self.contexts = ContextCache(context_entries, context_ttl)
        self._forget_hooks: list[ForgetHook] = []
        for hook in on_forget:
            self.on_forget(hook)

    @property
    def store(self) -> MemoryStore | None:
        return self.conversations.store

    async def context(self, key: ConversationKey, guild_id: str | int | None, budget_chars: int) -> Context:
        """The context of a reply in *key*'s conversation, in guild *guild_id* (None in DMs).

        The server block gets at most ``server_share`` of *budget_chars*;
        the history gets what the block leaves, so the block's characters
        plus the history's texts never exceed *budget_chars*. Served from
        :attr:`contexts` when neither the conversation nor the guild's
        memory changed since it was built (and within the TTL). Raises
        :exc:`TypeError`/:exc:`ValueError` for bad arguments.
        """
        if isinstance(budget_chars, bool) or not isinstance(budget_chars, int):
            raise TypeError(f"budget_chars must be an int, not {type(budget_chars).__name__}")
        if budget_chars < 0:
            raise ValueError(f"budget_chars must be >= 0, not {budget_chars!r}")
        guild = None if guild_id is None else as_id(guild_id, "guild_id")
        # Versions first: a change while the context is built makes the stored entry stale, never wrong.
        versions = (
            await self.conversations.version(key),
            0 if guild is None else await self.server.version(guild),
        )
        cache_key = (key, guild, budget_chars)
        cached = self.contexts.get(cache_key, versions)
        if cached is not None:
            return cached
        block = ""
        if guild is not None:
            block = await self.server.context_block(guild, math.floor(budget_chars * self.server_share))
        history = tuple(await self.conversations.history(key, budget_chars - len(block)))
        context = Context(history, digest_turns(history), block)
        self.contexts.put(cache_key, versions, context)
        return context

    def on_forget(self, hook: ForgetHook) -> Callable[[], None]:
        """Call ``hook(user_id)`` (awaited if it returns an awaitable) in every :meth:`forget`.

        Returns a function that unregisters it. Raises :exc:`TypeError` if
        *hook* is not callable.
        """
        if not callable(hook):
            raise TypeError(f"a forget hook must be callable, not {type(hook).__name__}")
        self._forget_hooks.append(hook)

        def unregister() -> None:
            if hook in self._forget_hooks:
                self._forget_hooks.remove(hook)

        return unregister

    async def forget(self, user_id: str | int) -> dict[str, int]:
        """Delete everything remembered about *user_id*, in memory and on disk, then call the forget hooks.

        Removes all of the user's conversations, the server items naming
        them (moments about them, snippets by them) and every cached
        context (forgetting is rare; a cached server block of someone
        else's conversation may name the user); with a store, deletes their rows in one
        transaction. Returns the counts: ``conversations``, ``turns`` and
        ``server_items`` removed from memory; ``conversation_rows``,
        ``turn_rows`` and ``server_item_rows`` deleted from disk; ``hooks``
        called successfully and ``hook_errors`` (a hook that raises is
        logged with its traceback and the others still run).

        Raises :exc:`TypeError`/:exc:`ValueError` for a bad id, and
        ``sqlite3.Error``/``OSError`` if the disk deletion fails (memory is
        already clear; hooks are not called then: retry the call).
        Cancellation during the disk deletion takes effect once it has
        finished; hooks not called yet are then not called.
        """
        user = as_id(user_id, "user_id")
        conversations, turns = self.conversations.drop_user(user)
        server_items = self.server.drop_user(user)
        rows = {"conversation_rows": 0, "turn_rows": 0, "server_item_rows": 0}
        if self.store is not None:
            rows = await self.store.forget_user(user)
            # A load of this user's data that finished before the deletion began is in
            # memory by now (no checkpoint after a load): drop it too.
            more_conversations, more_turns = self.conversations.drop_user(user)
            conversations += more_conversations
            turns += more_turns
            server_items += self.server.drop_user(user)
        # Any cached context may hold the user's turns or a server block naming them.
        self.contexts.discard(lambda cache_key: True)
        hooks = hook_errors = 0
        for hook in list(self._forget_hooks):
            try:
                result = hook(user)
                if inspect.isawaitable(result):
                    await result
                hooks += 1
            except Exception:
                hook_errors += 1
                logger.exception("forget hook %r failed for a user", hook)
        return {
            "conversations": conversations,
            "turns": turns,
            "server_items": server_items,
            **rows,
            "hooks": hooks,
            "hook_errors": hook_errors,
        }

    def stats(self) -> dict[str, Any]:
        """``{"context": ContextCache stats, "conversations": ..., "server": ..., "store": ... or None}``."""
        return {
            "context": self.contexts.stats(),
            "conversations": self.conversations.stats(),
            "server": self.server.stats(),
            "store": None if self.store is None else self.store.stats(),
        }
