"""LRU cache of compiled regular expressions, keyed on (pattern, flags).

``PatternCache(maxsize=1000)``

- ``compile(pattern, flags=0)`` returns the cached ``re.Pattern`` or
  compiles, caches and returns it. ``search``, ``match``, ``fullmatch``
  (``(pattern, string, flags=0)``), ``sub(pattern, repl, string, count=0,
  flags=0)`` and ``findall(pattern, string, flags=0)`` compile through the
  cache and call the pattern's method.
- str and bytes patterns are distinct keys; flags are normalised to a plain
  int, so ``re.IGNORECASE`` and ``2`` share one entry. At most ``maxsize``
  patterns are kept, least recently used evicted first.
- ``(pattern, flags) in cache`` (or ``pattern in cache`` for flags 0) tells
  whether an entry exists without promoting it; ``len()``, ``clear()``;
  ``stats()`` returns ``{"hits", "misses", "evictions", "entries", "maxsize"}``.

Unlike ``re``'s own module-level cache (512 entries, shared by every caller
in the process), a PatternCache is private and sized by its owner, so a bot
that compiles user-supplied patterns cannot push out everyone else's.

Errors: a pattern that is not str or bytes (a compiled pattern included)
or flags that are not an integer raise TypeError; an invalid pattern raises
``re.error`` (incompatible flags ValueError) from ``re.compile``: the
lookup counts as a miss and nothing is cached. Patterns compiled with
``re.DEBUG`` bypass the cache, as in ``re``. A bad ``maxsize`` raises
TypeError (not an int) or ValueError (< 1).

Not thread-safe, by design: triobot runs it on one Trio thread.
"""

from fastcore._select import load

_impl = load("patterns")

PatternCache = _impl.PatternCache

__all__ = ["PatternCache"]
