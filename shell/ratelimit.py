"""Rate limits on the reply path: provider quotas per API key, fairness per user and guild.

Two kinds of quota, kept apart because they protect different things:

- **Fairness** (:meth:`RateLimiter.check_fairness`): per user (default 6 a
  minute and 100 a day) and per guild (30 a minute). Spent once per message
  that asks the model, *whether or not the answer then comes from the
  cache*: it bounds how much of the bot one user or server may take, and a
  user's allowance must not depend on what others asked before (nor reveal
  it).
- **Provider** (:meth:`RateLimiter.acquire_provider`): per API key, what the
  model provider enforces (default: Gemini's free tier, 15 requests a minute,
  1500 a day, 1,000,000 tokens a minute). Spent only right before a real
  upstream call: cache hits and coalesced followers never call it. Settle
  the token estimate with :meth:`RateLimiter.record_tokens` once the real
  count is known, or give everything back with
  :meth:`RateLimiter.refund_provider` if the call did not happen.

Minute quotas are rolling (sliding-window counters); day quotas are calendar
days that reset at midnight on the clock ``UTC + day_utc_offset``, by default
UTC-8, Pacific standard time, where Gemini resets. During daylight saving
time the provider's day starts at 07:00 UTC, an hour before ours (08:00 UTC):
for that hour we still refuse on the old day's count (conservative), and
what is spent in that hour counts against our old day, so early in our new
day the provider may refuse up to that many requests before we do; such a
refusal comes back as an upstream 429.

Every answer is a :class:`Decision` with a sentence for the user. The
counters live in memory (:class:`fastcore.ratewin.RateWindows`); the
:class:`RateLimiter` service writes them behind to a :class:`StateFile` at
most once per ``write_interval`` (5 s) while anything changes, and once more
at shutdown, so a restart keeps the day's counts. API keys never reach the
file: the provider counters are keyed by :func:`api_key_id`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import trio

from fastcore.ratewin import RateWindows, Window
from shell.service import Service
from shell.statefile import StateFile

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOWED",
    "Decision",
    "RateLimiter",
    "RateLimits",
    "StateError",
    "WallClock",
    "api_key_id",
]

MINUTE = 60.0
DAY = 86400.0
PACIFIC_STANDARD = -8 * 3600.0

# Scopes, one per window, in the order of each group's windows.
PROVIDER_SCOPES = ("provider-minute", "provider-day", "provider-tokens")
USER_SCOPES = ("user-minute", "user-day")
GUILD_SCOPES = ("guild-minute",)
_TOKENS = 2  # index of the token window among the provider windows

STATE_MAGIC = b"TBRL"
STATE_VERSION = 1
_LENGTH = struct.Struct("<Q")
_API_KEY_IDS_KEPT = 256  # api_key -> id memo size; cleared when full (there are few keys)


class StateError(ValueError):
    """Saved rate-limit state that is not a valid RateLimiter snapshot."""


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The quotas. Every count is an int >= 1; ``max_*`` bound the keys kept
    (least recently used evicted first). Raises TypeError/ValueError on bad values.

    Changing a quota or ``day_utc_offset`` makes saved state unreadable (it
    was counted against other windows): the limiter then starts fresh and
    says so in the log. Lowering a ``max_*`` keeps the most recent keys.
    """

    provider_per_minute: int = 15
    provider_per_day: int = 1500
    provider_tokens_per_minute: int = 1_000_000
    user_per_minute: int = 6
    user_per_day: int = 100
    guild_per_minute: int = 30
    day_utc_offset: float = PACIFIC_STANDARD
    max_api_keys: int = 64
    max_users: int = 100_000
    max_guilds: int = 10_000

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "day_utc_offset":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"day_utc_offset must be a number, not {type(value).__name__}")
                if not abs(value) <= DAY:
                    raise ValueError(f"day_utc_offset must be within one day, not {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{field.name} must be an int, not {type(value).__name__}")
            elif not 1 <= value <= 2**30:
                raise ValueError(f"{field.name} must be in 1..2**30, not {value!r}")

    def provider_windows(self) -> tuple[Window, ...]:
        """Requests a minute, requests a day (calendar), tokens a minute: see PROVIDER_SCOPES."""
        return (
            Window(self.provider_per_minute, MINUTE),
            Window(self.provider_per_day, DAY, calendar=True, utc_offset=self.day_utc_offset),
            Window(self.provider_tokens_per_minute, MINUTE),
        )

    def user_windows(self) -> tuple[Window, ...]:
        """Messages a minute, messages a day (calendar): see USER_SCOPES."""
        return (
            Window(self.user_per_minute, MINUTE),
            Window(self.user_per_day, DAY, calendar=True, utc_offset=self.day_utc_offset),
        )

    def guild_windows(self) -> tuple[Window, ...]:
        """Messages a minute: see GUILD_SCOPES."""
        return (Window(self.guild_per_minute, MINUTE),)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to a quota check.

    ``allowed``; when refused, ``retry_after`` (seconds until the same request
    would pass if nothing else is spent; ``math.inf`` if it never can),
    ``scope`` (which quota refused, e.g. ``"user-minute"``, see the
    ``*_SCOPES`` constants) and ``message`` (a sentence to show the user).
    """

    allowed: bool
    retry_after: float = 0.0
    scope: str | None = None
    message: str = ""


ALLOWED = Decision(True)


class WallClock:
    """POSIX time that trio's clock drives: ``trio.current_time()`` plus an offset.

    The offset is fixed at the first call (inside a Trio run) so that
    ``start`` (default: ``time.time()`` then) is the POSIX time of that
    moment; a MockClock then moves calendar time too. The wall clock is read
    once, so later steps of the system clock (NTP) are not followed.
    """

    def __init__(self, start: float | None = None) -> None:
        self._start = start
        self._offset: float | None = None

    def __call__(self) -> float:
        now = trio.current_time()
        if self._offset is None:
            self._offset = (time.time() if self._start is None else self._start) - now
        return now + self._offset


def api_key_id(api_key: str) -> str:
    """A stable, non-secret name for an API key (what the state file and logs hold).

    TypeError unless *api_key* is a str; ValueError if it is empty.
    """
    if not isinstance(api_key, str):
        raise TypeError(f"api_key must be a str, not {type(api_key).__name__}")
    if not api_key:
        raise ValueError("api_key must not be empty")
    return "key-" + hashlib.blake2b(api_key.encode("utf-8", "surrogatepass"), digest_size=9).hexdigest()


def _id_key(value: object, name: str) -> str:
    """A user or guild id (str, or int such as a Discord snowflake) as a counter key."""
    if type(value) is str:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError(f"{name} must be a str or an int, not {type(value).__name__}")


def _token_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value}")
    return value


def _wait_text(seconds: float) -> str:
    """``seconds`` rounded up, in words: "12 s", "5 min", "7 h 12 min"."""
    whole = math.ceil(seconds)
    if whole < 120:
        return f"{max(whole, 1)} s"
    minutes = math.ceil(whole / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _message(scope: str, retry_after: float, limits: RateLimits) -> str:
    wait = _wait_text(retry_after) if retry_after < math.inf else ""
    if scope == "provider-minute":
        return f"The bot has hit its per-minute limit with the model provider; try again in {wait}."
    if scope == "provider-tokens":
        if retry_after == math.inf:
            return "This request is too long for the model provider's per-minute token limit; try a shorter one."
        return f"The bot has used its per-minute token budget with the model provider; try again in {wait}."
    if scope == "provider-day":
        return f"The bot has used its daily quota with the model provider; it resets in {wait}."
    if scope == "user-minute":
        return f"You are sending messages faster than {limits.user_per_minute} a minute; try again in {wait}."
    if scope == "user-day":
        plural = "" if limits.user_per_day == 1 else "s"
        return f"You have reached your daily limit of {limits.user_per_day} message{plural}; try again in {wait}."
    return f"This server is sending the bot more than {limits.guild_per_minute} messages a minute; try again in {wait}."


class RateLimiter(Service):
    """The quotas of :class:`RateLimits`, in memory, written behind to a :class:`StateFile`.

    A :class:`~shell.service.Service` (name ``"ratelimit"``). :meth:`run`
    loads the saved state (falling back to the backup, else starting fresh,
    see :func:`shell.statefile.read_with_fallback`), reports ready, then
    writes behind: ``write_interval`` seconds after the first change not yet
    written, one snapshot of every counter, however many changes came since
    the last write; the file work runs in a worker thread. :meth:`flush`
    writes at once if anything changed (the runtime calls it at shutdown).
    A change made while a write is in progress is in the next write.

    The quota methods are synchronous and need no running service (without a
    ``state_file`` nothing is persisted). Time is ``clock()``, POSIX seconds
    (default :class:`WallClock`, which follows ``trio.current_time()``).
    ``windows_type`` is the RateWindows implementation (the compiled one or
    its twin). Errors: TypeError/ValueError for bad arguments, raised before
    any counter changes.
    """

    name = "ratelimit"

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        state_file: StateFile | None = None,
        write_interval: float = 5.0,
        windows_type: type = RateWindows,
        clock: Callable[[], float] | None = None,
        name: str | None = None,
        **settings,
    ) -> None:
        super().__init__(name, **settings)
        if not 0 < write_interval < math.inf:
            raise ValueError(f"write_interval must be a finite number > 0, not {write_interval!r}")
        self.limits = RateLimits() if limits is None else limits
        self.state_file = state_file
        self.write_interval = write_interval
        self._windows_type = windows_type
        self._clock = WallClock() if clock is None else clock
        self._provider, self._users, self._guilds = self._new_windows()
        self._api_key_ids: dict[str, str] = {}
        # Dirty tracking: every change bumps _version; a write records the
        # version its snapshot was taken at. Dirty <=> they differ.
        self._version = 0
        self._written_version = 0
        self._changed = trio.Event()  # set by a change; the writer waits on it while clean
        self._wakeup_sent = False  # whether _changed is set
        self._write_lock = trio.Lock()
        self._loaded = False  # run() loads unless load() ran: a restarted run() keeps the newer counters
        self._fairness_allowed = self._fairness_denied = 0
        self._provider_allowed = self._provider_denied = self._provider_refunds = 0

    def _new_windows(self) -> tuple[RateWindows, RateWindows, RateWindows]:
        limits, make = self.limits, self._windows_type
        return (
            make(limits.provider_windows(), limits.max_api_keys),
            make(limits.user_windows(), limits.max_users),
            make(limits.guild_windows(), limits.max_guilds),
        )

    # -- quotas ------------------------------------------------------------

    def check_fairness(self, user_id: str | int, guild_id: str | int | None = None) -> Decision:
        """Spend one message of *user_id*'s quota and of *guild_id*'s (None in DMs).

        Call it once per message that asks the model, before looking in the
        cache. Spends both or neither: refused by the guild, the user's
        message is given back.
        """
        user = user_id if type(user_id) is str else _id_key(user_id, "user_id")
        guild = guild_id if guild_id is None or type(guild_id) is str else _id_key(guild_id, "guild_id")
        now = self._clock()
        allowed, retry_after = self._users.try_acquire(user, now)
        if not allowed:
            self._fairness_denied += 1
            return self._refusal(self._users, user, now, (1, 1), USER_SCOPES, retry_after)
        self._mark_changed()
        if guild is not None:
            allowed, retry_after = self._guilds.try_acquire(guild, now)
            if not allowed:
                self._users.refund(user, now)
                self._fairness_denied += 1
                return self._refusal(self._guilds, guild, now, (1,), GUILD_SCOPES, retry_after)
        self._fairness_allowed += 1
        return ALLOWED

    def acquire_provider(self, api_key: str, tokens: int = 0) -> Decision:
        """Spend one request and *tokens* (the estimated cost) of *api_key*'s provider quota.

        Call it right before a real upstream call and only then. A request
        estimated above the per-minute token limit is refused with
        ``retry_after = math.inf``.
        """
        key = self._api_key_ids.get(api_key) if type(api_key) is str else None
        if key is None:
            key = self._api_key_id(api_key)
        if type(tokens) is not int or tokens < 0:
            tokens = _token_count(tokens, "tokens")
        if tokens > self.limits.provider_tokens_per_minute:
            self._provider_denied += 1
            return Decision(False, math.inf, "provider-tokens", _message("provider-tokens", math.inf, self.limits))
        now = self._clock()
        cost = (1, 1, tokens)
        allowed, retry_after = self._provider.try_acquire(key, now, cost)
        if not allowed:
            self._provider_denied += 1
            return self._refusal(self._provider, key, now, cost, PROVIDER_SCOPES, retry_after)
        self._mark_changed()
        self._provider_allowed += 1
        return ALLOWED

    def record_tokens(self, api_key: str, *, estimated: int, actual: int) -> None:
        """Replace the *estimated* token cost spent by :meth:`acquire_provider` with the *actual* one.

        Fewer tokens than estimated are given back; more are added, as far as
        the window holds (a window never counts beyond its limit, so a
        window already full stays full).
        """
        key = self._api_key_id(api_key)
        estimated = _token_count(estimated, "estimated")
        actual = _token_count(actual, "actual")
        if actual == estimated:
            return
        now = self._clock()
        if actual < estimated:
            self._provider.refund(key, now, (0, 0, estimated - actual))
        else:
            limit = self.limits.provider_tokens_per_minute
            allowed, _ = self._provider.try_acquire(key, now, (0, 0, min(actual - estimated, limit)))
            if not allowed:
                used, _ = self._provider.usage(key, now)[_TOKENS]
                room = math.floor(limit - used)
                if room > 0:
                    self._provider.try_acquire(key, now, (0, 0, room))
        self._mark_changed()

    def refund_provider(self, api_key: str, tokens: int = 0) -> None:
        """Give back a request and *tokens* taken by :meth:`acquire_provider` for a call that never happened.

        The refund goes to the current minute and day (never below zero),
        which is exact when the refund follows the acquire within the same
        minute, as it does on the reply path.
        """
        key = self._api_key_id(api_key)
        tokens = _token_count(tokens, "tokens")
        self._provider.refund(key, self._clock(), (1, 1, tokens))
        self._provider_refunds += 1
        self._mark_changed()

    def _api_key_id(self, api_key: str) -> str:
        key = self._api_key_ids.get(api_key) if type(api_key) is str else None
        if key is None:  # first sight of this key (or not a str: api_key_id raises)
            key = api_key_id(api_key)
            if len(self._api_key_ids) >= _API_KEY_IDS_KEPT:
                self._api_key_ids.clear()
            self._api_key_ids[api_key] = key
        return key

    def _refusal(
        self,
        windows: RateWindows,
        key: str,
        now: float,
        cost: tuple[int, ...],
        scopes: tuple[str, ...],
        retry_after: float,
    ) -> Decision:
        """A refusal naming the quota that refused (the longest one, if several did)."""
        refusing = None
        for window, scope, (used, limit), amount in zip(windows.windows, scopes, windows.usage(key, now), cost):
            # The test try_acquire makes: the estimate must leave room for the cost.
            if used > limit - amount and (refusing is None or window.period > refusing[0]):
                refusing = (window.period, scope)
        scope = scopes[0] if refusing is None else refusing[1]
        return Decision(False, retry_after, scope, _message(scope, retry_after, self.limits))

    def usage(
        self, api_key: str | None = None, *, user_id: str | int | None = None, guild_id: str | int | None = None
    ) -> dict[str, tuple[float, int]]:
        """``{scope: (used, limit)}`` now, for whichever of the three keys are given."""
        now = self._clock()
        result: dict[str, tuple[float, int]] = {}
        if api_key is not None:
            result.update(zip(PROVIDER_SCOPES, self._provider.usage(self._api_key_id(api_key), now)))
        if user_id is not None:
            result.update(zip(USER_SCOPES, self._users.usage(_id_key(user_id, "user_id"), now)))
        if guild_id is not None:
            result.update(zip(GUILD_SCOPES, self._guilds.usage(_id_key(guild_id, "guild_id"), now)))
        return result

    def stats(self) -> dict[str, int]:
        """Counters for monitoring: decisions, keys held, writes (0 without a state file)."""
        file = self.state_file
        return {
            "fairness_allowed": self._fairness_allowed,
            "fairness_denied": self._fairness_denied,
            "provider_allowed": self._provider_allowed,
            "provider_denied": self._provider_denied,
            "provider_refunds": self._provider_refunds,
            "api_keys": len(self._provider),
            "users": len(self._users),
            "guilds": len(self._guilds),
            "dirty": int(self.dirty),
            "writes": file.writes if file else 0,
            "write_errors": file.write_errors if file else 0,
        }

    # -- state -------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True when some change is not in the state file yet."""
        return self._version != self._written_version

    def _mark_changed(self) -> None:
        self._version += 1
        if not self._wakeup_sent:  # a plain flag: cheaper than Event.set() on every change
            self._wakeup_sent = True
            self._changed.set()

    def snapshot(self) -> bytes:
        """Every counter as bytes: ``b"TBRL"``, version (u8), then the provider,
        user and guild RateWindows snapshots, each preceded by its length (u64 LE)."""
        parts = [STATE_MAGIC, bytes([STATE_VERSION])]
        for windows in (self._provider, self._users, self._guilds):
            data = windows.snapshot()
            parts += (_LENGTH.pack(len(data)), data)
        return b"".join(parts)

    def _decode(self, data: bytes) -> tuple[RateWindows, RateWindows, RateWindows]:
        """New RateWindows holding a :meth:`snapshot`'s counters; touches no live state.

        Raises StateError for a bad container and SnapshotError (a
        ValueError) for a bad part, including one saved under other limits.
        """
        view = memoryview(data)
        header = len(STATE_MAGIC) + 1
        if len(view) < header or bytes(view[: len(STATE_MAGIC)]) != STATE_MAGIC:
            raise StateError("not a RateLimiter state (bad magic or truncated)")
        if view[len(STATE_MAGIC)] != STATE_VERSION:
            raise StateError(f"unsupported RateLimiter state version {view[len(STATE_MAGIC)]}")
        parts = self._new_windows()
        position = header
        for windows in parts:
            if len(view) - position < _LENGTH.size:
                raise StateError("RateLimiter state truncated")
            (length,) = _LENGTH.unpack_from(view, position)
            position += _LENGTH.size
            if length > len(view) - position:
                raise StateError("RateLimiter state truncated")
            windows.restore(view[position : position + length])
            position += length
        if position != len(view):
            raise StateError("RateLimiter state has trailing bytes")
        return parts

    def restore(self, data: bytes) -> None:
        """Replace every counter with a :meth:`snapshot`'s, or raise (ValueError) and change nothing.

        The restored state counts as a change (it is written behind).
        """
        self._provider, self._users, self._guilds = self._decode(data)
        self._mark_changed()

    async def load(self) -> str:
        """Replace the counters with the state file's; return where they came from.

        The source is ``"main"``, ``"backup"``, ``"missing"`` or ``"fresh"``
        (see :class:`shell.statefile.Loaded`; the last two keep the current
        counters). A loaded state counts as written. Reads in a worker thread
        (not cancellable once started). Without a state file: ``"missing"``.
        """
        self._loaded = True
        if self.state_file is None:
            return "missing"
        loaded = await trio.to_thread.run_sync(self.state_file.read, self._decode)
        if loaded.value is not None:
            self._provider, self._users, self._guilds = loaded.value
            self._written_version = self._version
        logger.info(
            "rate limits loaded from %s (%s): %d api keys, %d users, %d guilds",
            self.state_file.path, loaded.source, len(self._provider), len(self._users), len(self._guilds),
        )  # fmt: skip
        return loaded.source

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load (on the first run only), report ready, then write behind until cancelled.

        A failed write (OSError) is logged and retried ``write_interval``
        later; the counters stay in memory meanwhile. Cancellation waits for
        a write in progress to finish (file work is not abandoned midway).
        """
        if not self._loaded:
            await self.load()
        task_status.started()
        if self.state_file is None:
            await trio.sleep_forever()
        while True:
            if not self.dirty:
                # Only this loop replaces the event, right before waiting on it,
                # so a change made from now on is the one that wakes it.
                self._changed = trio.Event()
                self._wakeup_sent = False
                await self._changed.wait()
            # Not the TimerWheel: this wakes on changes and sleeps while clean.
            await trio.sleep(self.write_interval)
            try:
                await self._write()
            except OSError:
                logger.exception("writing rate-limit state to %s failed; retrying later", self.state_file.path)

    async def flush(self) -> None:
        """Write the state now if anything changed since the last write.

        Raises OSError if the write fails (the changes stay pending).
        """
        if self.state_file is not None:
            await self._write()

    async def _write(self) -> None:
        """One write of a snapshot if dirty; one write at a time."""
        async with self._write_lock:
            if not self.dirty:
                return
            version = self._version
            data = self.snapshot()
            await trio.to_thread.run_sync(self.state_file.write, data)
            self._written_version = version
