"""PatternCache hit: compile() cycling over 200 distinct patterns, all cached."""

import re
from time import perf_counter

from bench.workloads._impl import fastcore_module

GROUP = "patterns"
SUBJECT = "compiled"
PATTERNS = tuple(rf"(?i)\b(cmd{i}|alias{i})\s+(\w+)?" for i in range(200))
ROUNDS = 50  # one loop = 200 patterns x 50 rounds = 10,000 compile() hits


def _hits(compile_):
    def time_func(loops):
        for pattern in PATTERNS:  # warm whichever cache is behind compile_
            compile_(pattern)
        patterns = PATTERNS * ROUNDS
        start = perf_counter()
        for _ in range(loops):
            for pattern in patterns:
                compile_(pattern)
        return perf_counter() - start

    return time_func


def _ours(kind):
    def time_func(loops):
        cache = fastcore_module("patterns", kind).PatternCache(1000)
        return _hits(cache.compile)(loops)

    return time_func


VARIANTS = {
    "compiled": _ours("compiled"),
    "twin": _ours("twin"),
    # re.compile on a hit goes through re's own module-level cache (512 entries).
    "re.compile": _hits(re.compile),
}

TARGETS = [("re.compile", 0.5)]
