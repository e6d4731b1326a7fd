"""The response cache on the bot's reply path: an LRU of compressed replies.

A reply is reused only for the same question asked in the same situation. The
key (:func:`cache_key`) is a hash of everything that shaped the reply, held in
a :class:`CacheKeyParts`: the normalised prompt (Unicode NFKC, casefolded,
whitespace collapsed), provider, model, persona (or system prompt), a digest
of the conversation history used (:func:`digest_history`;
:data:`EMPTY_HISTORY_DIGEST` for a fresh user) and digests of attachments.

Replies are stored as :mod:`fastcore.framing` frames of their UTF-8 bytes,
deflated from ``compress_threshold`` (1 KB) up, in a :mod:`fastcore.lru`
``LRUCache`` whose per-entry size is the frame size, so ``maxbytes`` bounds
the memory really held. Entries expire after ``ttl`` seconds of
``trio.current_time()`` (or the injected clock).

:class:`ResponseCache` is a :class:`~shell.service.Service` named ``"cache"``
so that the :class:`~shell.service.Runtime` runs its background work: its
:meth:`~ResponseCache.run` warms common prompts (a :class:`WarmPlan`) after
reporting ready and, given a :class:`~shell.timers.TimerWheel`, drops expired
entries periodically. The bot calls :meth:`~ResponseCache.should_bypass`,
:meth:`~ResponseCache.get` and :meth:`~ResponseCache.put`; those work whether
or not the service runs. Example::

    cache = ResponseCache(timers=wheel, warming=WarmPlan(answer, provider="gemini",
                          model="gemini-2.0-flash", persona=persona))
    runtime = Runtime([wheel, cache, bot])
    ...
    parts = CacheKeyParts(text, "gemini", "gemini-2.0-flash", persona, digest_history(turns))
    if not cache.should_bypass(text, temperature=temperature):
        reply = await cache.get(parts)
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import unicodedata
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from types import ModuleType
from typing import Any, NamedTuple

import trio

from fastcore import framing as fastcore_framing
from fastcore import lru as fastcore_lru
from shell.concurrency import Overloaded
from shell.service import Service
from shell.sync import RWLock
from shell.timers import TimerWheel

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_WARM_PROMPTS",
    "EMPTY_HISTORY_DIGEST",
    "CacheKeyParts",
    "ResponseCache",
    "WarmPlan",
    "cache_key",
    "digest_history",
    "normalize_prompt",
]

DEFAULT_MAXSIZE = 1000
DEFAULT_MAXBYTES = 32 * 1024 * 1024
DEFAULT_TTL = 300.0
DEFAULT_BYPASS_TEMPERATURE = 1.0
COMPRESS_THRESHOLD = 1024  # replies this long or longer are stored deflated
THREAD_THRESHOLD = 64 * 1024  # replies longer than this are (un)packed in a worker thread
DEFAULT_EXPIRE_EVERY = 60.0
COMMAND_PREFIX = "/"
DEFAULT_WARM_PROMPTS = ("hello", "hi", "help", "what can you do", "how are you", "tell me a joke")

_LATENCY_SAMPLES = 1024  # recent lookups kept for the percentiles
_KEY_PERSON = b"triobot.cache.1"  # blake2b personalisation: keys never equal other digests
_HISTORY_PERSON = b"triobot.hist.1"


# --------------------------------------------------------------------------- keys


def normalize_prompt(prompt: str) -> str:
    """The prompt as the cache compares it: NFKC, casefolded, whitespace collapsed and stripped.

    ``"  Hello\\n WORLD "`` and ``"hello world"`` normalise alike, and so do
    full-width and ASCII letters. Raises :exc:`TypeError` for a non-string.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    return " ".join(unicodedata.normalize("NFKC", prompt).casefold().split())


def _update_field(hasher: Any, text: str) -> None:
    """Feed *text* to *hasher* length-prefixed, so field boundaries cannot shift."""
    data = text.encode("utf-8", "surrogatepass")
    hasher.update(len(data).to_bytes(8, "big"))
    hasher.update(data)


def digest_history(turns: Iterable[tuple[str, str]]) -> str:
    """A hex digest of the conversation history a reply was generated from.

    *turns* are ``(role, text)`` pairs, oldest first, exactly as sent to the
    provider. No turns give :data:`EMPTY_HISTORY_DIGEST`. Raises
    :exc:`TypeError` unless every role and text is a str.
    """
    hasher = hashlib.blake2b(digest_size=16, person=_HISTORY_PERSON)
    for role, text in turns:
        if not isinstance(role, str) or not isinstance(text, str):
            raise TypeError("history turns must be (role, text) pairs of str")
        _update_field(hasher, role)
        _update_field(hasher, text)
    return hasher.hexdigest()


EMPTY_HISTORY_DIGEST = digest_history(())
"""The history digest of a user with no conversation history (a first message)."""


@dataclass(frozen=True, slots=True)
class CacheKeyParts:
    """Everything that shapes a reply; :func:`cache_key` hashes it.

    Build it the same way wherever a key is needed (the bot's lookup and
    store, warming), so that equal situations give equal keys. The prompt is
    normalised by the key (see :func:`normalize_prompt`); the other fields are
    compared exactly. *attachment_digests* is kept in order as a tuple.

    Raises :exc:`TypeError` if a field is not a str, or if
    *attachment_digests* is a str or holds a non-str.
    """

    prompt: str
    provider: str
    model: str
    persona: str
    history_digest: str = EMPTY_HISTORY_DIGEST
    attachment_digests: Sequence[str] = ()

    def __post_init__(self) -> None:
        for name in ("prompt", "provider", "model", "persona", "history_digest"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
        digests = self.attachment_digests
        if isinstance(digests, (str, bytes)):
            raise TypeError("attachment_digests must be a sequence of str, not a single string")
        digests = tuple(digests)
        if not all(isinstance(digest, str) for digest in digests):
            raise TypeError("attachment_digests must hold only str")
        object.__setattr__(self, "attachment_digests", digests)


def cache_key(parts: CacheKeyParts) -> str:
    """The cache key of *parts*: a 128-bit blake2b hex digest.

    Every field is length-prefixed (and the attachments counted), so no two
    different field tuples share an encoding: ``("a|b", "c")`` and
    ``("a", "b|c")`` give different keys.
    """
    hasher = hashlib.blake2b(digest_size=16, person=_KEY_PERSON)
    _update_field(hasher, normalize_prompt(parts.prompt))
    _update_field(hasher, parts.provider)
    _update_field(hasher, parts.model)
    _update_field(hasher, parts.persona)
    _update_field(hasher, parts.history_digest)
    hasher.update(len(parts.attachment_digests).to_bytes(8, "big"))
    for digest in parts.attachment_digests:
        _update_field(hasher, digest)
    return hasher.hexdigest()


# --------------------------------------------------------------------------- warming


def is_overloaded(exc: BaseException) -> bool:
    """The default quota test of a :class:`WarmPlan`: an :exc:`~shell.concurrency.Overloaded`."""
    return isinstance(exc, Overloaded)


@dataclass(frozen=True)
class WarmPlan:
    """What :meth:`ResponseCache.warm` asks, through what, and under which key.

    ``answer(prompt)`` is the real provider call (pass one that goes through
    the rate limiter, so warming spends quota like any user). Each prompt is
    stored under ``CacheKeyParts(prompt, provider, model, persona)`` with no
    history and no attachments: the key a first-time user asking it produces.
    ``is_quota_error(exc)`` says whether an exception from ``answer`` means
    "out of quota / overloaded", which stops warming.
    """

    answer: Callable[[str], Awaitable[str]]
    provider: str
    model: str
    persona: str
    prompts: tuple[str, ...] = DEFAULT_WARM_PROMPTS
    is_quota_error: Callable[[BaseException], bool] = field(default=is_overloaded)

    def __post_init__(self) -> None:
        if not callable(self.answer) or not callable(self.is_quota_error):
            raise TypeError("answer and is_quota_error must be callable")
        if isinstance(self.prompts, str) or not all(isinstance(prompt, str) for prompt in self.prompts):
            raise TypeError("prompts must be a sequence of str")
        object.__setattr__(self, "prompts", tuple(self.prompts))
        self.parts_for("")  # checks provider, model and persona now, not at warming time

    def parts_for(self, prompt: str) -> CacheKeyParts:
        """The key parts a user with no history asking *prompt* produces."""
        return CacheKeyParts(prompt, self.provider, self.model, self.persona)


# --------------------------------------------------------------------------- the cache


class StoredReply(NamedTuple):
    """One LRU value: the frame and the size of the reply's UTF-8 bytes."""

    frame: bytes
    raw_size: int


def _decode_frame(unpack: Callable[..., bytes], frame: bytes, raw_size: int) -> str:
    """The reply in *frame*; raises the framing module's FrameError or UnicodeDecodeError."""
    return unpack(frame, max_size=raw_size).decode("utf-8")


class _Latencies:
    """Lookup durations: lifetime count, sum and max, percentiles over recent ones."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.recent: deque[float] = deque(maxlen=_LATENCY_SAMPLES)

    def record(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        self.recent.append(seconds)

    def snapshot_us(self) -> dict[str, float | int]:
        ordered = sorted(self.recent)
        return {
            "lookup_count": self.count,
            "lookup_mean_us": self.total / self.count * 1e6 if self.count else 0.0,
            "lookup_p50_us": _percentile(ordered, 0.50) * 1e6,
            "lookup_p99_us": _percentile(ordered, 0.99) * 1e6,
            "lookup_max_us": self.max * 1e6,
        }


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list; 0.0 when it is empty."""
    if not ordered:
        return 0.0
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


class ResponseCache(Service):
    """Replies by :func:`cache_key`, compressed, bounded in entries, bytes and age.

    Settings (all keyword-only): ``maxsize`` entries (1000), ``maxbytes`` of
    stored frames (32 MB; None for no byte bound), ``ttl`` seconds (300; None
    for no expiry), ``bypass_temperature`` (1.0: a higher temperature
    bypasses), ``compress_threshold`` (1024: replies this long or longer are
    deflated), ``thread_threshold`` (64 KB: longer replies are packed and
    unpacked in a worker thread), ``timers`` and ``expire_every`` (60 s: the
    period of the expiry job, registered only when a wheel is given),
    ``warming`` (a :class:`WarmPlan`, or None for no warming), ``clock``
    (default ``trio.current_time``), ``lru_type`` and ``framing`` (default
    :class:`fastcore.lru.LRUCache` and :mod:`fastcore.framing`; injectable to
    compare implementations). Other keywords (``name``, ``depends_on``,
    ``restart``...) go to :class:`~shell.service.Service`; with a wheel,
    ``depends_on`` defaults to the wheel's name. Bad settings raise
    :exc:`TypeError` or :exc:`ValueError`.

    Concurrency: :meth:`get` holds an :class:`~shell.sync.RWLock` for reading
    for the whole lookup, including the unpacking of a large reply in a
    worker thread, so concurrent lookups overlap; :meth:`put` and
    :meth:`clear` hold it for writing. So a store waits for the lookups in
    flight, and a lookup that starts after a store returned sees it.
    """

    name = "cache"

    def __init__(
        self,
        *,
        maxsize: int = DEFAULT_MAXSIZE,
        maxbytes: int | None = DEFAULT_MAXBYTES,
        ttl: float | None = DEFAULT_TTL,
        bypass_temperature: float = DEFAULT_BYPASS_TEMPERATURE,
        compress_threshold: int = COMPRESS_THRESHOLD,
        thread_threshold: int = THREAD_THRESHOLD,
        timers: TimerWheel | None = None,
        expire_every: float = DEFAULT_EXPIRE_EVERY,
        warming: WarmPlan | None = None,
        clock: Callable[[], float] = trio.current_time,
        lru_type: Callable[..., Any] | None = None,
        framing: ModuleType | None = None,
        **service_settings: Any,
    ) -> None:
        if timers is not None:
            service_settings.setdefault("depends_on", (timers.name,))
        super().__init__(**service_settings)
        if isinstance(bypass_temperature, bool) or not isinstance(bypass_temperature, (int, float)):
            raise TypeError(f"bypass_temperature must be a number, not {type(bypass_temperature).__name__}")
        if not 0 <= bypass_temperature < math.inf:
            raise ValueError(f"bypass_temperature must be a finite number >= 0, not {bypass_temperature!r}")
        for setting, value in (("compress_threshold", compress_threshold), ("thread_threshold", thread_threshold)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{setting} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{setting} must be >= 0, not {value!r}")
        if not 0 < expire_every < math.inf:
            raise ValueError(f"expire_every must be a finite number > 0, not {expire_every!r}")
        framing = fastcore_framing if framing is None else framing
        lru_type = fastcore_lru.LRUCache if lru_type is None else lru_type
        self.bypass_temperature = bypass_temperature
        self.compress_threshold = compress_threshold
        self.thread_threshold = thread_threshold
        self.expire_every = expire_every
        self.warming = warming
        self._timers = timers
        self._pack = framing.pack
        self._unpack = framing.unpack
        self._frame_error: type[Exception] = framing.FrameError
        self._lru = lru_type(maxsize, maxbytes, ttl, clock=clock, on_evict=self._on_evict)
        self._lock = RWLock()
        self._latencies = _Latencies()
        self._raw_bytes = 0
        self._hits = 0
        self._misses = 0
        self._bypasses = 0
        self._corrupt = 0
        self._oversized = 0
        self._warmed = 0

    def __repr__(self) -> str:
        return f"<ResponseCache {len(self._lru)} entries, {self._lru.stats()['bytes']} bytes stored>"

    # -- the reply path ---------------------------------------------------

    def should_bypass(self, prompt: str, *, temperature: float | None = None, is_command: bool = False) -> bool:
        """True if this message must neither read nor write the cache; counted as a bypass.

        Commands bypass (*is_command*, or a prompt starting with ``/`` after
        leading whitespace), and so do non-deterministic settings: a
        *temperature* above ``bypass_temperature``. Call it once per message.

        Raises:
          TypeError: if *prompt* is not a str.
          ValueError: if *temperature* is negative or NaN.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
        if temperature is not None and not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, not {temperature!r}")
        bypass = (
            is_command
            or prompt.lstrip().startswith(COMMAND_PREFIX)
            or (temperature is not None and temperature > self.bypass_temperature)
        )
        if bypass:
            self._bypasses += 1
        return bypass

    async def get(self, parts: CacheKeyParts) -> str | None:
        """The cached reply for *parts*, or None (a miss). Counts a hit or a miss.

        A checkpoint. Replies longer than ``thread_threshold`` are unpacked in
        a worker thread while the read lock is held; cancellation then waits
        for that thread (bounded work) before it takes effect. A corrupt frame
        is never raised: it is logged, dropped from the cache, counted as
        ``corrupt`` and returned as a miss.
        """
        started = perf_counter()
        key = cache_key(parts)
        async with self._lock.read():
            stored = self._lru.get(key)
            if stored is None:
                reply = None
            else:
                reply = await self._decode(key, stored)
        if reply is None:
            self._misses += 1
        else:
            self._hits += 1
        self._latencies.record(perf_counter() - started)
        return reply

    async def put(self, parts: CacheKeyParts, reply: str) -> bool:
        """Store *reply* for *parts*, replacing any earlier one; True if stored.

        A reply whose frame alone exceeds ``maxbytes`` is not stored (logged,
        counted as ``oversized``; returns False). Least recently used entries
        are evicted to make room. Replies longer than ``thread_threshold`` are
        packed in a worker thread before the write lock is taken. A
        checkpoint; if it raises :exc:`trio.Cancelled`, nothing was stored.

        Raises:
          TypeError: if *reply* is not a str.
          UnicodeEncodeError: if *reply* cannot be encoded as UTF-8 (lone surrogates).
        """
        return await self._store(cache_key(parts), reply)

    async def clear(self) -> None:
        """Remove every entry, once the lookups in flight are done. Counters are kept."""
        async with self._lock.write():
            self._lru.clear()
            self._raw_bytes = 0

    def expire(self) -> int:
        """Drop every expired entry now and return how many (counted as expirations).

        Lookups already treat expired entries as misses; this frees their
        memory without waiting for a lookup. Does not wait for the lock: it
        never changes what a lookup in flight returns.
        """
        return self._lru.expire()

    # -- warming ------------------------------------------------------------

    async def warm(self, plan: WarmPlan) -> int:
        """Answer *plan*'s prompts through ``plan.answer`` and store them; return how many.

        Each reply is stored under ``plan.parts_for(prompt)``, the key a
        first-time user asking that prompt produces. Prompts already cached
        are not asked again, and prompts that would bypass the cache (commands)
        are skipped. When ``answer`` raises an exception that
        ``plan.is_quota_error`` accepts, warming stops there (logged as a
        warning): more calls would only be refused or spend quota users need.
        Any other :exc:`Exception` is logged with its traceback and only that
        prompt is skipped. Cancellation propagates; replies stored before it
        stay.
        """
        stored = 0
        for position, prompt in enumerate(plan.prompts):
            if prompt.lstrip().startswith(COMMAND_PREFIX):
                logger.warning("cache warming: %r is a command and can never hit; skipped", prompt)
                continue
            key = cache_key(plan.parts_for(prompt))
            if key in self._lru:
                continue
            try:
                reply = await plan.answer(prompt)
                if await self._store(key, reply):
                    stored += 1
                    self._warmed += 1
            except Exception as exc:
                if plan.is_quota_error(exc):
                    logger.warning(
                        "cache warming stopped at prompt %d of %d (%r), out of quota: %r",
                        position + 1,
                        len(plan.prompts),
                        prompt,
                        exc,
                    )
                    break
                logger.exception("cache warming: answering %r failed; skipped", prompt)
        logger.info("cache warming stored %d of %d prompts", stored, len(plan.prompts))
        return stored

    # -- the service ----------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Report ready at once, then warm (if a plan was given) and expire periodically.

        The cache serves lookups from the moment it is constructed; ready
        means the bot may start, while warming goes on here. With a wheel, an
        expiry job runs every ``expire_every`` seconds until this is
        cancelled (the job is then unregistered). Warming errors are handled
        by :meth:`warm`; cancellation stops warming where it is.
        """
        expiry = None
        if self._timers is not None:
            expiry = self._timers.every(self.expire_every, self._expire_job, name=f"{self.name}-expire")
        try:
            task_status.started()
            if self.warming is not None:
                await self.warm(self.warming)
            await trio.sleep_forever()
        finally:
            if expiry is not None:
                expiry.cancel()

    async def _expire_job(self) -> None:
        expired = self.expire()
        if expired:
            logger.debug("cache: %d expired entries dropped", expired)

    # -- statistics -----------------------------------------------------------

    def stats(self) -> dict[str, float | int]:
        """Measured counters and sizes (never estimates).

        ``hits``, ``misses``, ``hit_rate`` (hits / lookups, 0.0 before any),
        ``bypasses``, ``corrupt`` (lookups that found a corrupt frame; also
        misses), ``oversized`` (replies too big to store), ``warmed`` (entries
        stored by warming), ``evictions``, ``expirations``, ``entries``,
        ``raw_bytes`` (UTF-8 size of the replies held), ``stored_bytes``
        (size of their frames), and lookup latency in microseconds:
        ``lookup_count``, ``lookup_mean_us``, ``lookup_max_us`` over the
        cache's life, ``lookup_p50_us``/``lookup_p99_us`` over the last 1024.
        ``entries`` and the byte sizes include expired entries that neither a
        lookup nor :meth:`expire` has dropped yet.
        """
        lru_stats = self._lru.stats()
        lookups = self._hits + self._misses
        return {
            "hits": self._hits,
            "misses": self._misses,
            "hit_rate": self._hits / lookups if lookups else 0.0,
            "bypasses": self._bypasses,
            "corrupt": self._corrupt,
            "oversized": self._oversized,
            "warmed": self._warmed,
            "evictions": lru_stats["evictions"],
            "expirations": lru_stats["expirations"],
            "entries": lru_stats["entries"],
            "raw_bytes": self._raw_bytes,
            "stored_bytes": lru_stats["bytes"],
            **self._latencies.snapshot_us(),
        }

    # -- internals ------------------------------------------------------------

    async def _decode(self, key: str, stored: StoredReply) -> str | None:
        """The reply in *stored*, or None after dropping it if its frame is corrupt."""
        try:
            if stored.raw_size > self.thread_threshold:
                return await trio.to_thread.run_sync(_decode_frame, self._unpack, stored.frame, stored.raw_size)
            return _decode_frame(self._unpack, stored.frame, stored.raw_size)
        except (self._frame_error, UnicodeDecodeError) as exc:
            self._corrupt += 1
            # Another lookup of the same key may have dropped it already.
            if self._lru.peek(key) is stored:
                self._lru.delete(key)
                self._raw_bytes -= stored.raw_size
            logger.warning("cache: corrupt entry %s dropped: %s", key, exc)
            return None

    async def _store(self, key: str, reply: str) -> bool:
        if not isinstance(reply, str):
            raise TypeError(f"reply must be a str, not {type(reply).__name__}")
        data = reply.encode("utf-8")
        if len(data) > self.thread_threshold:
            frame = await trio.to_thread.run_sync(
                functools.partial(self._pack, data, threshold=self.compress_threshold)
            )
        else:
            frame = self._pack(data, threshold=self.compress_threshold)
        maxbytes = self._lru.maxbytes
        if maxbytes is not None and len(frame) > maxbytes:
            self._oversized += 1
            logger.info("cache: a %d-byte reply does not fit in %d bytes; not stored", len(data), maxbytes)
            return False
        async with self._lock.write():
            replaced = self._lru.peek(key)
            if replaced is not None:
                self._raw_bytes -= replaced.raw_size
            self._lru.set(key, StoredReply(frame, len(data)), size=len(frame))
            self._raw_bytes += len(data)
        return True

    def _on_evict(self, key: str, stored: StoredReply) -> None:
        """Called by the LRU for every entry it evicts or expires."""
        self._raw_bytes -= stored.raw_size
