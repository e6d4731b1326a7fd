"""Shared fixtures: every fastcore test runs on both implementations."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

# `bench` lives in the checkout, not in the installed package. Append (never
# prepend) the checkout so an installed fastcore, with its compiled modules,
# still wins over the source tree.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from fastcore._select import pure_forced

IMPLS = ("compiled", "pure")


def load_impl(name: str, kind: str):
    """Import ``fastcore._{name}_c`` or ``fastcore._{name}_py``.

    A missing compiled module is a failure, not a skip, unless TRIOBOT_PURE
    is set: CI must never pass on the twins alone by accident.
    """
    if kind == "pure":
        return importlib.import_module(f"fastcore._{name}_py")
    if pure_forced():
        pytest.skip("TRIOBOT_PURE is set: compiled modules not under test")
    try:
        return importlib.import_module(f"fastcore._{name}_c")
    except ImportError as exc:  # pragma: no cover - the failure is the point
        pytest.fail(f"compiled fastcore._{name}_c missing ({exc}); build it or set TRIOBOT_PURE=1")


@pytest.fixture(params=IMPLS)
def impl_kind(request) -> str:
    return request.param
