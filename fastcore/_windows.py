"""The quota window spec shared by both ratewin implementations.

Kept in its own pure-Python module so that ``fastcore._ratewin_c`` and
``fastcore._ratewin_py`` hand out the very same :class:`Window` type (windows
compare equal and snapshots carry identical specs whichever side made them),
together with the constants and validators both sides must agree on.
"""

from __future__ import annotations

import math
import operator
import struct
from typing import NamedTuple

__all__ = [
    "BUCKET_INDEX_LIMIT",
    "INT64_MAX",
    "MAX_KEYS",
    "MAX_LIMIT",
    "SNAPSHOT_MAGIC",
    "SNAPSHOT_VERSION",
    "SnapshotError",
    "Window",
    "coerce_cost",
    "coerce_costs",
    "coerce_key",
    "coerce_time",
    "encode_varint",
    "normalize_windows",
    "window_specs_bytes",
]

#: Largest window limit: counts stay exactly representable as floats, so the
#: sliding-window estimate arithmetic is exact on the integer parts.
MAX_LIMIT = 2**53

#: ``(now + utc_offset) / period`` must lie strictly within +-this value, so
#: bucket indices fit an int64 with room to spare.
BUCKET_INDEX_LIMIT = float(2**62)

INT64_MAX = 2**63 - 1

#: Snapshot header: magic, then one version byte.
SNAPSHOT_MAGIC = b"RWIN"
SNAPSHOT_VERSION = 1

#: Largest ``max_keys``: the compiled version addresses slots with int32.
MAX_KEYS = 2**30


class SnapshotError(ValueError):
    """A snapshot is corrupt, truncated, hostile or was taken with other windows."""


def _real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError(f"{name} out of range") from None
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


class _WindowFields(NamedTuple):
    limit: int
    period: float
    calendar: bool
    utc_offset: float


class Window(_WindowFields):
    """One quota: at most ``limit`` units per ``period`` seconds.

    ``calendar=False`` (default): a rolling window, estimated with a
    sliding-window counter over fixed buckets of ``period`` seconds:
    ``previous * (1 - elapsed_fraction) + current``.
    ``calendar=True``: a fixed window whose boundaries fall at multiples of
    ``period`` on the clock ``now + utc_offset`` (a daily quota resetting at
    midnight UTC-8 is ``Window(1500, 86400, calendar=True, utc_offset=-8 * 3600)``);
    the count resets at every boundary.

    Raises TypeError for a non-int ``limit`` (bool included), a non-real
    ``period``/``utc_offset`` or a non-bool ``calendar``; ValueError for
    ``limit`` outside 1..2**53, ``period`` not finite and > 0, or a non-finite
    ``utc_offset``.
    """

    __slots__ = ()

    def __new__(cls, limit: int, period: float, *, calendar: bool = False, utc_offset: float = 0.0) -> Window:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, not {type(limit).__name__}")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be in 1..2**53, got {limit}")
        period = _real(period, "period")
        if period <= 0.0:
            raise ValueError(f"period must be > 0, got {period!r}")
        if not isinstance(calendar, bool):
            raise TypeError(f"calendar must be a bool, not {type(calendar).__name__}")
        utc_offset = _real(utc_offset, "utc_offset")
        return super().__new__(cls, int(limit), period, calendar, utc_offset)

    def __getnewargs_ex__(self) -> tuple[tuple[int, float], dict[str, object]]:
        # Pickle and copy through __new__, which takes calendar/utc_offset by keyword only.
        return (self.limit, self.period), {"calendar": self.calendar, "utc_offset": self.utc_offset}


def normalize_windows(windows: object) -> tuple[Window, ...]:
    """Validate a RateWindows ``windows`` argument into a tuple of Window.

    Each item is a Window (re-validated: ``_replace``/``_make`` skip checks)
    or a plain tuple taken as ``Window(*item)``. Raises TypeError for a
    non-iterable or an item of another type, ValueError when empty.
    """
    try:
        items = tuple(windows)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"windows must be a sequence of Window, not {type(windows).__name__}") from None
    if not items:
        raise ValueError("windows must not be empty")
    result = []
    for item in items:
        if isinstance(item, Window):
            item = Window(item.limit, item.period, calendar=item.calendar, utc_offset=item.utc_offset)
        elif type(item) is tuple:
            item = Window(*item)
        else:
            raise TypeError(f"each window must be a Window or a tuple, not {type(item).__name__}")
        result.append(item)
    return tuple(result)


_SPEC = struct.Struct("<qdBd")


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low group first, high bit = more follows."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def window_specs_bytes(windows: tuple[Window, ...]) -> bytes:
    """The snapshot's window section: varint count, then per window
    limit (int64), period (float64), calendar (uint8), utc_offset (float64),
    all little-endian. Restore compares it byte for byte."""
    parts = [encode_varint(len(windows))]
    for window in windows:
        parts.append(_SPEC.pack(window.limit, window.period, window.calendar, window.utc_offset))
    return b"".join(parts)


def coerce_key(key: object) -> str:
    """A key as an exact str (subclasses are copied so no user __hash__/__eq__ runs).

    Raises TypeError for anything that is not a str.
    """
    if type(key) is str:
        return key
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    return str.__str__(key)


def coerce_time(now: object) -> float:
    """``now`` as a float. TypeError unless int or float (bool rejected);
    ValueError for an int too large for a float. Finiteness and range are
    checked against each window by the caller."""
    if type(now) is float:
        return now
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise TypeError(f"now must be a real number, not {type(now).__name__}")
    try:
        return float(now)
    except OverflowError:
        raise ValueError("now out of range") from None


def coerce_cost(cost: object) -> int:
    """``cost`` as an int in 0..2**63-1: TypeError unless an int (or an
    ``__index__`` type; bool rejected), ValueError when negative or beyond int64."""
    if type(cost) is not int:
        if isinstance(cost, bool):
            raise TypeError("cost must be an int, not bool")
        try:
            cost = operator.index(cost)
        except TypeError:
            raise TypeError(f"cost must be an int, not {type(cost).__name__}") from None
    if cost < 0:
        raise ValueError(f"cost must be >= 0, got {cost}")
    if cost > INT64_MAX:
        raise ValueError("cost out of range (beyond int64)")
    return int(cost)


def coerce_costs(cost: object, count: int) -> tuple[int, ...]:
    """A ``cost`` argument as one int per window.

    An int applies to every window; a tuple or list gives one cost per window
    (ValueError if its length is not ``count``). Each item follows
    :func:`coerce_cost`.
    """
    if isinstance(cost, (tuple, list)):
        if len(cost) != count:
            raise ValueError(f"cost has {len(cost)} items for {count} windows")
        return tuple(coerce_cost(item) for item in cost)
    return (coerce_cost(cost),) * count
