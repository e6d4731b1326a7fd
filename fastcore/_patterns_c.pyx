# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled PatternCache (see fastcore.patterns; fastcore._patterns_py is its twin).

The cache is the compiled LRUCache from fastcore._lru_c, driven through its
C-level ``lookup``/``store`` entry points, so a hit costs one dict probe and
no Python-level call. The common key (a str pattern with flags 0) is the
pattern itself: no tuple to build or hash.
"""

cimport cython

from fastcore._lru_c cimport LRUCache

import re
from operator import index as _index

__all__ = ["PatternCache"]

cdef object _re_compile = re.compile
cdef object _DEBUG = int(re.DEBUG)


cdef object _normalise_flags(object flags):
    """*flags* as a plain int (RegexFlag -> int); TypeError for non-integers."""
    if type(flags) is int:
        return flags
    try:
        return _index(flags)
    except TypeError:
        raise TypeError(f"flags must be an int or re.RegexFlag, not {type(flags).__name__}") from None


cdef object _cache_key(object pattern, object flags):
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


@cython.final
@cython.binding(False)  # builtin-method calls: cheaper than cyfunction dispatch on the hot path
@cython.auto_pickle(False)
cdef class PatternCache:
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

    def __cinit__(self, maxsize=1000):
        # In __cinit__, not __init__: _lru is never None, even for cls.__new__(cls).
        self._lru = LRUCache(maxsize)

    def __reduce__(self):
        raise TypeError("PatternCache cannot be pickled")

    def __repr__(self):
        return f"PatternCache(maxsize={self._lru.maxsize}, entries={len(self._lru)})"

    @property
    def maxsize(self):
        """The most compiled patterns kept."""
        return self._lru.maxsize

    cdef object _compile(self, object pattern, object flags):
        cdef object key
        if type(flags) is not int:
            flags = _normalise_flags(flags)
        if type(pattern) is str and not flags:
            key = pattern
        else:
            key = _cache_key(pattern, flags)
            if flags & _DEBUG:
                return _re_compile(pattern, flags)
        compiled = self._lru.lookup(key, None)
        if compiled is None:
            compiled = _re_compile(pattern, flags)  # re.error propagates: nothing cached
            self._lru.store(key, compiled)
        return compiled

    def compile(self, pattern, flags=0):
        """Return ``re.compile(pattern, flags)``, from the cache when possible."""
        return self._compile(pattern, flags)

    def search(self, pattern, string, flags=0):
        """``compile(pattern, flags).search(string)``."""
        return self._compile(pattern, flags).search(string)

    def match(self, pattern, string, flags=0):
        """``compile(pattern, flags).match(string)``."""
        return self._compile(pattern, flags).match(string)

    def fullmatch(self, pattern, string, flags=0):
        """``compile(pattern, flags).fullmatch(string)``."""
        return self._compile(pattern, flags).fullmatch(string)

    def sub(self, pattern, repl, string, count=0, flags=0):
        """``compile(pattern, flags).sub(repl, string, count)``."""
        return self._compile(pattern, flags).sub(repl, string, count)

    def findall(self, pattern, string, flags=0):
        """``compile(pattern, flags).findall(string)``."""
        return self._compile(pattern, flags).findall(string)

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
        return {
            "hits": self._lru._hits,
            "misses": self._lru._misses,
            "evictions": self._lru._evictions,
            "entries": len(self._lru),
            "maxsize": self._lru._maxsize,
        }
