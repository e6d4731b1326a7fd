"""fastcore: triobot's hot data structures.

Cython extension modules, each with a pure-Python twin of the same API:

- :mod:`fastcore.lru`       O(1) LRU cache with byte budget and TTLs
- :mod:`fastcore.framing`   self-describing (optionally compressed) frames, zlib-stream inflater
- :mod:`fastcore.ratewin`   several quota windows per key, snapshot/restore
- :mod:`fastcore.patterns`  LRU cache of compiled regular expressions
- :mod:`fastcore.pool`      object pool with idle eviction

Nothing here does I/O or reads a clock: time is passed in (``now``) or
injected (``clock=``). ``fastcore.COMPILED`` is True when every module in use
is the compiled one; ``fastcore.IMPLEMENTATION`` maps each module name to
``"compiled"`` or ``"pure"``. Set ``TRIOBOT_PURE=1`` to force the twins.
Both are computed on first access, so ``import fastcore.lru`` loads one module.
"""

import importlib

from fastcore._select import MODULES, is_compiled

__all__ = ["COMPILED", "IMPLEMENTATION", "MODULES"]
__version__ = "0.1.0"


def _implementation() -> dict[str, str]:
    kinds = {}
    for name in MODULES:
        module = importlib.import_module(f"fastcore.{name}")
        kinds[name] = "compiled" if is_compiled(module._impl) else "pure"
    return kinds


def __getattr__(name: str):
    if name == "IMPLEMENTATION":
        value = _implementation()
    elif name == "COMPILED":
        value = all(kind == "compiled" for kind in _implementation().values())
    else:
        raise AttributeError(f"module 'fastcore' has no attribute {name!r}")
    globals()[name] = value
    return value
