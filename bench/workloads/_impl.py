"""Load a fastcore module's compiled build or its pure-Python twin directly."""

import importlib


def fastcore_module(name: str, kind: str):
    suffix = {"compiled": "c", "twin": "py"}[kind]
    return importlib.import_module(f"fastcore._{name}_{suffix}")
