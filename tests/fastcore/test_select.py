"""The package picks the compiled modules, and TRIOBOT_PURE forces the twins."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastcore
from fastcore._select import MODULES, pure_forced


def test_compiled_modules_present_unless_pure_forced():
    if pure_forced():
        assert not fastcore.COMPILED
        assert set(fastcore.IMPLEMENTATION.values()) == {"pure"}
    else:
        missing = [m for m, kind in fastcore.IMPLEMENTATION.items() if kind != "compiled"]
        assert not missing, f"compiled modules missing: {missing} (TRIOBOT_PURE is unset)"
        assert fastcore.COMPILED


def test_every_module_reported():
    assert set(fastcore.IMPLEMENTATION) == set(MODULES)


@pytest.mark.parametrize("value, expect_pure", [("1", True), ("0", False), ("", False)])
def test_triobot_pure_env(value, expect_pure, tmp_path):
    # Import the very fastcore under test (installed or in-place), not the cwd's.
    root = str(Path(fastcore.__file__).resolve().parent.parent)
    env = dict(os.environ, TRIOBOT_PURE=value, PYTHONPATH=root)
    code = "import fastcore, json; print(json.dumps(fastcore.IMPLEMENTATION))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    kinds = set(__import__("json").loads(out.stdout).values())
    if expect_pure:
        assert kinds == {"pure"}
    elif not pure_forced():
        assert kinds == {"compiled"}
