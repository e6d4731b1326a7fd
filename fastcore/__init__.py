"""fastcore: triobot's hot data structures.

Cython extension modules, each with a pure-Python twin of the same API:

- :mod:`fastcore.lru`       O(1) LRU cache with byte budget and TTLs
- :mod:`fastcore.framing`   self-describing (optionally compressed) frames, zlib-stream inflater
- :mod:`fastcore.ratewin`   several quota windows per key, snapshot/restore
- :mod:`fastcore.patterns`  LRU cache of compiled regular expressions
- :mod:`fastcore.pool`      object pool with idle eviction

Nothing here does I/O or reads a clock: time is passed in (``now``) or
injected (``clock=``). ``COMPILED`` is True when every module in use is the
compiled one; ``IMPLEMENTATION`` maps each module to ``"compiled"`` or
``"pure"``. Set ``TRIOBOT_PURE=1`` to force the twins.
"""

from fastcore import framing, lru, patterns, pool, ratewin
from fastcore._select import MODULES, is_compiled

_loaded = {"lru": lru, "framing": framing, "ratewin": ratewin, "patterns": patterns, "pool": pool}

IMPLEMENTATION: dict[str, str] = {
    name: "compiled" if is_compiled(_loaded[name]._impl) else "pure" for name in MODULES
}
COMPILED: bool = all(kind == "compiled" for kind in IMPLEMENTATION.values())

__all__ = ["COMPILED", "IMPLEMENTATION", "framing", "lru", "patterns", "pool", "ratewin"]
__version__ = "0.1.0"
