"""Pure-Python PatternCache: the twin of fastcore._patterns_c (same API and behaviour).

Compiled patterns live in the twin LRUCache, keyed so that the common case
(a str pattern, flags 0) is the pattern itself: no tuple to build or hash.
"""

from __future__ import annotations

import re
from operator import index as _index

from fastcore._lru_py import LRUCache

__all__ = ["PatternCache"]

_DEBUG = int(re.DEBUG)


def _normalise_flags(flags):
    """*flags* as a plain int (RegexFlag -> int); TypeError for non-integers."""
    if type(flags) is int:
        return flags
    try:
        return _index(flags)
    except TypeError:
        raise TypeError(f"flags must be an int or re.RegexFlag, not {type(flags).__name__}") from None


def _cache_key(pattern, flags):
    """The LRU key of (pattern, flags); TypeError unless pattern is str or bytes.

    str patterns key as ``pattern`` (flags 0) or ``(pattern, flags)``; bytes
    patterns as ``(pattern, flags, bytes)``, a different tuple length, so a
    bytes key never equals a str key (nor compares its pattern with one,
    which would warn under ``python -b``).
    """
    if isinstance(pattern, str):
        return pattern if flags == 0 else (pattern, flags)
    if isinstance(pattern, bytes):
        return (pattern, flags, bytes)
    raise TypeError(f"pattern must be str or bytes, not {type(pattern).__name__}")


class PatternCache:
    """LRU cache of compiled regular expressions, keyed on (pattern, flags).

    ``PatternCache(maxsize=1000)``: *maxsize* (int >= 1) compiled patterns
    are kept, least recently used evicted first. ``compile()`` returns the
    cached ``re.Pattern`` (a hit) or compiles and caches it (a miss);
    ``search``, ``match``, ``fullmatch``, ``sub`` and ``findall`` compile
    through the cache and call the pattern's method. str and bytes patterns
    are distinct keys; flags are normalised to a plain int, so
    ``re.IGNORECASE`` and ``2`` share an entry.

    Errors: a pattern that is not str or bytes, or flags that are not an
    integer, raise TypeError; an invalid pattern raises ``re.error`` (and
    incompatible flags ValueError) from ``re.compile``: the lookup counts as
    a miss and nothing is cached. Patterns compiled with ``re.DEBUG`` bypass
    the cache (as in ``re``), so their debug output appears every time.
    A bad *maxsize* raises TypeError or ValueError.
    """

    __slots__ = ("_lru",)

    def __init__(self, maxsize=1000):
        self._lru = LRUCache(maxsize)

    def __reduce__(self):
        raise TypeError("PatternCache cannot be pickled")

    def __repr__(self):
        return f"PatternCache(maxsize={self._lru.maxsize}, entries={len(self._lru)})"

    @property
    def maxsize(self):
        """The most compiled patterns kept."""
        return self._lru.maxsize

    def compile(self, pattern, flags=0):
        """Return ``re.compile(pattern, flags)``, from the cache when possible."""
        if type(flags) is not int:
            flags = _normalise_flags(flags)
        if flags == 0 and type(pattern) is str:
            key = pattern
        else:
            key = _cache_key(pattern, flags)
            if flags & _DEBUG:
                return re.compile(pattern, flags)
        compiled = self._lru.get(key)
        if compiled is None:
            compiled = re.compile(pattern, flags)  # re.error propagates: nothing cached
            self._lru[key] = compiled
        return compiled

    def search(self, pattern, string, flags=0):
        """``compile(pattern, flags).search(string)``."""
        return self.compile(pattern, flags).search(string)

    def match(self, pattern, string, flags=0):
        """``compile(pattern, flags).match(string)``."""
        return self.compile(pattern, flags).match(string)

    def fullmatch(self, pattern, string, flags=0):
        """``compile(pattern, flags).fullmatch(string)``."""
        return self.compile(pattern, flags).fullmatch(string)

    def sub(self, pattern, repl, string, count=0, flags=0):
        """``compile(pattern, flags).sub(repl, string, count)``."""
        return self.compile(pattern, flags).sub(repl, string, count)

    def findall(self, pattern, string, flags=0):
        """``compile(pattern, flags).findall(string)``."""
        return self.compile(pattern, flags).findall(string)

    def clear(self):
        """Forget every compiled pattern; the statistics are kept."""
        self._lru.clear()

    def __len__(self):
        return len(self._lru)

    def __contains__(self, item):
        """True if ``item`` (a ``(pattern, flags)`` pair, or a pattern meaning flags 0) is cached.

        Does not promote the entry or count a hit; TypeError for a pattern
        that is not str or bytes or flags that are not an integer.
        """
        if type(item) is tuple and len(item) == 2:
            pattern, flags = item
            flags = _normalise_flags(flags)
        else:
            pattern, flags = item, 0
        return _cache_key(pattern, flags) in self._lru

    def stats(self):
        """Counters: hits, misses, evictions, entries, maxsize."""
        lru = self._lru.stats()
        return {
            "hits": lru["hits"],
            "misses": lru["misses"],
            "evictions": lru["evictions"],
            "entries": lru["entries"],
            "maxsize": self._lru.maxsize,
        }
