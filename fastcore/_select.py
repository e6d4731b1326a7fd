"""Choose between a compiled module and its pure-Python twin.

Every fastcore module ``X`` has two implementations with one API:
``fastcore._X_c`` (Cython, built by setup.py) and ``fastcore._X_py``.
The public module ``fastcore.X`` re-exports whichever :func:`load` returns.
``TRIOBOT_PURE=1`` in the environment forces the twins (for debugging and
for comparing the two); otherwise the compiled module is used when present.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

MODULES = ("lru", "framing", "ratewin", "patterns", "pool")


def pure_forced() -> bool:
    """True when ``TRIOBOT_PURE`` asks for the pure-Python twins."""
    return os.environ.get("TRIOBOT_PURE", "").strip().lower() not in ("", "0", "false", "no")


def load(name: str) -> ModuleType:
    """Return the implementation of fastcore module *name* to use."""
    if not pure_forced():
        try:
            return importlib.import_module(f"fastcore._{name}_c")
        except ImportError:
            pass
    return importlib.import_module(f"fastcore._{name}_py")


def is_compiled(module: ModuleType) -> bool:
    return module.__name__.endswith("_c")
