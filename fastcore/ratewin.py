"""Several quota windows per key, checked and recorded at once, with snapshots.

A chat bot calling an LLM API typically has to respect, per API key, e.g. 15
requests/minute, 1500 requests/day (reset at midnight Pacific) and 1,000,000
tokens/minute. ``RateWindows`` keeps those counters for many keys at once.

``Window(limit, period, *, calendar=False, utc_offset=0.0)``: at most ``limit``
units (int, 1..2**53) per ``period`` seconds (float > 0).

- rolling (``calendar=False``): a sliding-window counter over fixed buckets
  of ``period`` seconds: ``estimate = previous * (1 - elapsed_fraction) + current``.
- calendar (``calendar=True``): boundaries fall at multiples of ``period`` on
  the clock ``now + utc_offset`` and the count resets at each one; Gemini's
  daily quota is ``Window(1500, 86400, calendar=True, utc_offset=-8 * 3600)``
  (``-7 * 3600`` in summer).

``RateWindows(windows, max_keys)``: ``windows`` is a non-empty sequence of
Window (plain tuples are taken as ``Window(*t)``); beyond ``max_keys`` keys
the least recently used key is evicted (``stats()["evictions"]``). ``now`` is
POSIX seconds passed by the caller; the module never reads a clock.

- ``try_acquire(key, now, cost=1) -> (allowed, retry_after)``: checks every
  window and records ``cost`` in all of them only if all allow it (else no
  count changes; the key still becomes most recently used, so a key being
  hammered is not the one evicted). ``cost`` is an int for every window or a
  tuple/list of one int per window, e.g. ``(1, 1, tokens)`` for the example
  above. ``retry_after`` is 0.0 when allowed; else ``now + retry_after`` is
  the earliest time (a float) at which the same call succeeds if nothing
  else is acquired, and any earlier time fails: exact under the float
  arithmetic used, found from a closed-form guess refined over adjacent
  floats (usually two extra window evaluations).
- ``refund(key, now, cost=1)``: gives ``cost`` back in each window's current
  bucket, never below zero; an unknown key is a no-op.
- ``usage(key, now) -> [(estimate, limit), ...]`` per window (zeros for an
  unknown key); ``len()``, ``in``, ``forget(key) -> bool``, ``clear()``,
  ``stats() -> {"keys", "max_keys", "evictions", "allowed", "denied"}``,
  ``windows`` and ``max_keys`` attributes; instances pickle via snapshots.
- A ``now`` earlier than a key's stored bucket (a clock stepping back) is read
  as the start of that bucket: the most conservative estimate available.

Snapshot format (``snapshot() -> bytes``, ``restore(data)``), little-endian::

    b"RWIN", version (u8, 1)
    window count (varint), per window: limit i64, period f64, calendar u8, utc_offset f64
    key count (varint)
    per key, least recently used first: UTF-8 length (varint), UTF-8 key
        (lone surrogates pass through), per window bucket i64, current i64, previous i64
    CRC32 of everything above (u32)

``restore`` checks everything (magic, version, CRC, windows identical to this
instance's, declared counts and lengths against the bytes present, UTF-8,
duplicate keys, counts within 0..limit, bucket indices in range) before
replacing the state; the compiled and pure implementations read each other's
snapshots. A snapshot holding more than ``max_keys`` keys keeps the newest.

Errors: ``TypeError`` for a non-str key, a non-real ``now``, a non-int cost
(bools rejected), non-bytes-like snapshot data and malformed constructor
arguments; ``ValueError`` for a non-finite or out-of-range ``now``, a cost
below 0 or beyond int64, a cost tuple of the wrong length, a cost above its
window's limit in ``try_acquire`` (it could never succeed), and bad limits,
periods, offsets or ``max_keys``. Any defect in snapshot data raises
``SnapshotError`` (a ``ValueError``) and leaves the state unchanged; hostile
declared sizes are rejected before anything is allocated for them.

Memory: the compiled version keeps no Python object per key beyond the key
string itself. Measured with tracemalloc (traced memory growth while
inserting N keys made beforehand, 3 windows, CPython 3.11, x86-64), key
strings not counted: 109 bytes per key at N = 100,000 with max_keys = N
(101 at 10,000, 105 at 1,000,000), and 126 at N = 100,000 with
max_keys = 10 N, where the 1.25x array growth can leave more slack. Of that,
72 bytes are window state, 8 LRU links, 8 the key pointer; the rest is the
hash table (load <= 3/4) and growth slack. The pure-Python twin takes about
340 bytes per key.

Not thread-safe, by design: triobot runs it on one Trio thread.
"""

from fastcore._select import load

_impl = load("ratewin")

RateWindows = _impl.RateWindows
SnapshotError = _impl.SnapshotError
Window = _impl.Window

__all__ = ["RateWindows", "SnapshotError", "Window"]
