"""Pure-Python twin of :mod:`fastcore._ratewin_c` (same API and behaviour).

Per key, an OrderedDict (oldest key first, so LRU eviction is ``popitem``)
maps the key to one flat list ``[bucket, current, previous] * len(windows)``.
See :mod:`fastcore.ratewin` for the semantics; the float arithmetic below is
written operation for operation like the compiled version's so both give
bit-identical estimates and retry times.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from zlib import crc32

from fastcore._windows import (
    BUCKET_INDEX_LIMIT,
    INT64_MAX,
    MAX_KEYS,
    SNAPSHOT_MAGIC,
    SNAPSHOT_VERSION,
    SnapshotError,
    Window,
    coerce_costs,
    coerce_key,
    coerce_time,
    encode_varint,
    normalize_windows,
    window_specs_bytes,
)

__all__ = ["RateWindows", "SnapshotError", "Window"]

_ALLOWED = (True, 0.0)
_DOUBLE = struct.Struct("<d")
_UINT64 = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_SIGN = 1 << 63
_MASK64 = (1 << 64) - 1
_HEADER = SNAPSHOT_MAGIC + bytes([SNAPSHOT_VERSION])
_BUCKET_INDEX_MAX = 2**62  # exclusive bound on |bucket index| (BUCKET_INDEX_LIMIT as an int)


def _order_key(value: float) -> int:
    """A uint64 that orders like the floats: ``a < b`` iff ``key(a) < key(b)``
    (for non-NaN values; -0.0 sorts just below 0.0)."""
    bits = _UINT64.unpack(_DOUBLE.pack(value))[0]
    return bits | _SIGN if bits < _SIGN else ~bits & _MASK64


def _from_order_key(key: int) -> float:
    bits = key & ~_SIGN if key & _SIGN else ~key & _MASK64
    return _DOUBLE.unpack(_UINT64.pack(bits))[0]


_INF_KEY = _order_key(math.inf)


def _estimate(calendar: bool, bucket: int, current: int, previous: int, index: int, frac: float) -> float:
    """Used amount at bucket ``index`` + ``frac``, for state (bucket, current, previous).

    An index before the stored bucket (time went backwards) is read as the
    start of the stored bucket: the most conservative estimate it has.
    """
    if calendar:
        return float(current) if index <= bucket else 0.0
    if index < bucket:
        frac = 0.0
    if index <= bucket:
        return previous * (1.0 - frac) + current
    if index == bucket + 1:
        return current * (1.0 - frac)
    return 0.0


def _roll(state: list, j: int, index: int, calendar: bool) -> None:
    """Advance window j's buckets to ``index`` (never backwards)."""
    bucket = state[j]
    if index > bucket:
        state[j + 2] = state[j + 1] if (index == bucket + 1 and not calendar) else 0
        state[j + 1] = 0
        state[j] = index


def _rebuild(windows, max_keys, data):
    """Unpickle helper: a RateWindows restored from its snapshot."""
    limiter = RateWindows(windows, max_keys)
    limiter.restore(data)
    return limiter


class RateWindows:
    """Several quota windows per key, checked and recorded together.

    See :mod:`fastcore.ratewin` for the full description and error behaviour.
    """

    __slots__ = (
        "_allowed",
        "_denied",
        "_evictions",
        "_max_keys",
        "_min_limit",
        "_nwin",
        "_params",
        "_specs",
        "_states",
        "_state_format",
        "_windows",
    )

    def __init__(self, windows, max_keys):
        windows = normalize_windows(windows)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int):
            raise TypeError(f"max_keys must be an int, not {type(max_keys).__name__}")
        if not 1 <= max_keys <= MAX_KEYS:
            raise ValueError(f"max_keys must be in 1..2**30, got {max_keys}")
        self._windows = windows
        self._params = tuple((w.limit, w.period, w.calendar, w.utc_offset) for w in windows)
        self._min_limit = min(w.limit for w in windows)
        self._nwin = len(windows)
        self._specs = window_specs_bytes(windows)
        self._state_format = struct.Struct(f"<{3 * len(windows)}q")
        self._max_keys = int(max_keys)
        self._states: OrderedDict[str, list[int]] = OrderedDict()
        self._evictions = 0
        self._allowed = 0
        self._denied = 0

    @property
    def windows(self) -> tuple[Window, ...]:
        return self._windows

    @property
    def max_keys(self) -> int:
        return self._max_keys

    def __repr__(self) -> str:
        return f"RateWindows({list(self._windows)!r}, max_keys={self._max_keys}) with {len(self._states)} keys"

    def __reduce__(self):
        return (_rebuild, (self._windows, self._max_keys, self.snapshot()))

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key) -> bool:
        if not isinstance(key, str):
            return False
        return coerce_key(key) in self._states

    # -- argument handling -------------------------------------------------

    def _positions(self, now: float) -> list[tuple[int, float]]:
        """(bucket index, fraction elapsed in it) per window; ValueError when
        ``now`` is not finite or too far out for some window."""
        positions = []
        for _limit, period, _calendar, offset in self._params:
            q = (now + offset) / period
            if not -BUCKET_INDEX_LIMIT < q < BUCKET_INDEX_LIMIT:
                raise ValueError(f"now must be finite and within range, got {now!r}")
            index = math.floor(q)
            positions.append((index, q - index))
        return positions

    def _costs(self, cost, for_acquire: bool) -> tuple[int, ...]:
        """One int per window (see coerce_costs); for an acquire, a cost above
        its window's limit can never succeed: ValueError."""
        if type(cost) is int and 0 <= cost <= INT64_MAX:
            if for_acquire and cost > self._min_limit:
                raise ValueError(f"cost {cost} exceeds a window limit ({self._min_limit}): it can never succeed")
            return (cost,) * self._nwin
        if type(cost) is tuple and len(cost) == self._nwin and all(type(c) is int and 0 <= c <= INT64_MAX for c in cost):
            costs = cost
        else:
            costs = coerce_costs(cost, self._nwin)
        if for_acquire:
            for (limit, _period, _calendar, _offset), amount in zip(self._params, costs):
                if amount > limit:
                    raise ValueError(f"cost {amount} exceeds its window's limit {limit}: it can never succeed")
        return costs

    # -- operations --------------------------------------------------------

    def try_acquire(self, key, now, cost=1):
        """Take ``cost`` from every window of ``key`` at time ``now``, or nothing.

        ``cost`` is an int for every window or one int per window. Returns
        ``(True, 0.0)``, or ``(False, retry_after)``: ``now + retry_after``
        is the earliest float time at which the same call succeeds if nothing
        else is acquired (any earlier time fails).
        """
        if type(key) is not str:
            key = coerce_key(key)
        if type(now) is not float:
            now = coerce_time(now)
        costs = self._costs(cost, True)
        positions = self._positions(now)
        states = self._states
        state = states.get(key)
        if state is None:
            if len(states) >= self._max_keys:
                states.popitem(last=False)
                self._evictions += 1
            fresh = []
            for (index, _frac), amount in zip(positions, costs):
                fresh += (index, amount, 0)
            states[key] = fresh
            self._allowed += 1
            return _ALLOWED
        states.move_to_end(key)
        rooms = [limit - amount for (limit, _p, _c, _o), amount in zip(self._params, costs)]
        j = 0
        for (_limit, _period, calendar, _offset), (index, frac), room in zip(self._params, positions, rooms):
            if _estimate(calendar, state[j], state[j + 1], state[j + 2], index, frac) > float(room):
                self._denied += 1
                return (False, self._retry_after(state, now, rooms))
            j += 3
        j = 0
        for (_limit, _period, calendar, _offset), (index, _frac), amount in zip(self._params, positions, costs):
            _roll(state, j, index, calendar)
            state[j + 1] += amount
            j += 3
        self._allowed += 1
        return _ALLOWED

    def _allowed_at(self, state: list, now: float, rooms: list[int]) -> bool:
        """Does every window's estimate at ``now`` stay within its room
        (limit - cost)? A window whose bucket index is out of range (only in
        the far future) counts as empty."""
        j = 0
        for (_limit, period, calendar, offset), room in zip(self._params, rooms):
            q = (now + offset) / period
            if -BUCKET_INDEX_LIMIT < q < BUCKET_INDEX_LIMIT:
                index = math.floor(q)
                if _estimate(calendar, state[j], state[j + 1], state[j + 2], index, q - index) > float(room):
                    return False
            j += 3
        return True

    def _retry_after(self, state: list, now: float, rooms: list[int]) -> float:
        """Seconds until the earliest float time at which every window has room.

        A closed-form guess per denying window (the time its estimate falls to
        its room, in this bucket or the next) is refined by a search over the
        floats in time order, so the answer is exact under the very
        arithmetic try_acquire uses.
        """
        target = now
        j = 0
        for (_limit, period, calendar, offset), room in zip(self._params, rooms):
            q = (now + offset) / period
            index = math.floor(q)
            bucket, current, previous = state[j], state[j + 1], state[j + 2]
            j += 3
            if _estimate(calendar, bucket, current, previous, index, q - index) <= float(room):
                continue
            if calendar:
                q_free = float(bucket + 1)
            else:
                if index <= bucket:
                    base, older, newer = bucket, previous, current
                else:  # index == bucket + 1: the stored current bucket is now the previous one
                    base, older, newer = index, current, 0
                if newer <= room:
                    q_free = base + (1.0 - (room - newer) / older)
                else:
                    q_free = base + 1 + (1.0 - room / newer)
            candidate = q_free * period - offset
            if candidate > target:
                target = candidate
        return _retry_from(lambda key: self._allowed_at(state, _from_order_key(key), rooms), now, target)

    def refund(self, key, now, cost=1) -> None:
        """Give ``cost`` (an int, or one per window) back to every window's
        current bucket, floored at 0. An unknown key is a no-op; arguments
        are validated either way."""
        if type(key) is not str:
            key = coerce_key(key)
        if type(now) is not float:
            now = coerce_time(now)
        costs = self._costs(cost, False)
        positions = self._positions(now)
        state = self._states.get(key)
        if state is None:
            return
        j = 0
        for (_limit, _period, calendar, _offset), (index, _frac), amount in zip(self._params, positions, costs):
            _roll(state, j, index, calendar)
            state[j + 1] = max(0, state[j + 1] - amount)
            j += 3

    def usage(self, key, now) -> list[tuple[float, int]]:
        """``(estimated used, limit)`` per window at ``now``; zeros for an unknown key."""
        if type(key) is not str:
            key = coerce_key(key)
        if type(now) is not float:
            now = coerce_time(now)
        positions = self._positions(now)
        state = self._states.get(key)
        if state is None:
            return [(0.0, limit) for limit, _p, _c, _o in self._params]
        result = []
        j = 0
        for (limit, _period, calendar, _offset), (index, frac) in zip(self._params, positions):
            result.append((_estimate(calendar, state[j], state[j + 1], state[j + 2], index, frac), limit))
            j += 3
        return result

    def forget(self, key) -> bool:
        """Drop ``key``; True if it was present. TypeError for a non-str key."""
        if type(key) is not str:
            key = coerce_key(key)
        return self._states.pop(key, None) is not None

    def clear(self) -> None:
        """Forget every key (the stats counters keep counting)."""
        self._states.clear()

    def stats(self) -> dict[str, int]:
        return {
            "keys": len(self._states),
            "max_keys": self._max_keys,
            "evictions": self._evictions,
            "allowed": self._allowed,
            "denied": self._denied,
        }

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as compact versioned bytes (format in fastcore.ratewin)."""
        pack_state = self._state_format.pack
        parts = [_HEADER, self._specs, encode_varint(len(self._states))]
        for key, state in self._states.items():
            encoded = key.encode("utf-8", "surrogatepass")
            parts.append(encode_varint(len(encoded)))
            parts.append(encoded)
            parts.append(pack_state(*state))
        body = b"".join(parts)
        return body + _CRC.pack(crc32(body))

    def restore(self, data) -> None:
        """Replace the state with a snapshot's, or raise and change nothing.

        TypeError if ``data`` is not bytes-like; SnapshotError for anything
        wrong in it. Keeps the newest ``max_keys`` keys of a larger snapshot.
        """
        raw = bytes(memoryview(data))
        size = len(raw)
        if size < len(_HEADER) + 4:
            raise SnapshotError("snapshot truncated")
        if raw[:4] != SNAPSHOT_MAGIC:
            raise SnapshotError("not a RateWindows snapshot (bad magic)")
        if raw[4] != SNAPSHOT_VERSION:
            raise SnapshotError(f"unsupported snapshot version {raw[4]}")
        end = size - 4
        if _CRC.unpack_from(raw, end)[0] != crc32(raw[:end]):
            raise SnapshotError("snapshot checksum mismatch")
        pos = len(_HEADER)
        specs = self._specs
        if raw[pos : pos + len(specs)] != specs:
            raise SnapshotError("snapshot was taken with different windows")
        pos += len(specs)
        count, pos = _read_varint(raw, pos, end)
        state_format = self._state_format
        per_key_min = 1 + state_format.size
        if count > (end - pos) // per_key_min:
            raise SnapshotError(f"snapshot declares {count} keys, more than its size allows")
        params = self._params
        entries = OrderedDict()
        for _ in range(count):
            length, pos = _read_varint(raw, pos, end)
            if length > end - pos:
                raise SnapshotError("snapshot key overruns the data")
            try:
                key = raw[pos : pos + length].decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                raise SnapshotError("snapshot key is not valid UTF-8") from None
            pos += length
            if end - pos < state_format.size:
                raise SnapshotError("snapshot truncated in a key's state")
            state = list(state_format.unpack_from(raw, pos))
            pos += state_format.size
            j = 0
            for limit, _period, calendar, _offset in params:
                bucket, current, previous = state[j], state[j + 1], state[j + 2]
                if not -_BUCKET_INDEX_MAX < bucket < _BUCKET_INDEX_MAX:
                    raise SnapshotError("snapshot bucket index out of range")
                if not (0 <= current <= limit and 0 <= previous <= limit):
                    raise SnapshotError("snapshot count out of range")
                if calendar and previous:
                    raise SnapshotError("snapshot has a previous count for a calendar window")
                j += 3
            if key in entries:
                raise SnapshotError("snapshot repeats a key")
            entries[key] = state
        if pos != end:
            raise SnapshotError("snapshot has trailing bytes")
        while len(entries) > self._max_keys:
            entries.popitem(last=False)
        self._states = entries


def _read_varint(raw: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint (at most 10 bytes, < 2**64) at ``pos``."""
    value = 0
    shift = 0
    while True:
        if pos >= end:
            raise SnapshotError("snapshot truncated in a varint")
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise SnapshotError("snapshot varint too long")
    if value >= 2**64:
        raise SnapshotError("snapshot varint too large")
    return value, pos


def _retry_from(passes, now: float, guess: float) -> float:
    """Seconds from ``now`` to the earliest float time at which ``passes``.

    ``passes(key)`` tells whether the request fits at the time with order key
    ``key``; it must be monotone in time, false at ``now`` and true at +inf.
    Gallop from ``guess`` (usually within a few ulps), then bisect; the
    result is that time minus ``now``, nudged up if the subtraction rounded
    down so that ``now + result`` lands on it.
    """
    low = _order_key(now)
    start = _order_key(guess) if guess > now else low
    if start > low and passes(start):
        high = start
        step = 1
        while high - low > step:
            probe = high - step
            if not passes(probe):
                low = probe
                break
            high = probe
            step <<= 1
    else:
        low = start
        step = 1
        while True:
            if step >= _INF_KEY - low:
                high = _INF_KEY
                break
            probe = low + step
            if passes(probe):
                high = probe
                break
            low = probe
            step <<= 1
    while high - low > 1:
        middle = (low + high) >> 1
        if passes(middle):
            high = middle
        else:
            low = middle
    earliest = _from_order_key(high)
    retry = earliest - now
    while now + retry < earliest:  # the subtraction rounded down
        retry = math.nextafter(retry, math.inf)
    return retry
