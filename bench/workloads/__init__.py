"""Benchmark workloads, one module per group.

Each module defines ``GROUP`` (str), ``SUBJECT`` (the variant the targets are
about, usually "compiled"), ``VARIANTS`` (ordered name -> pyperf time
function ``f(loops) -> seconds``) and ``TARGETS`` (list of
``(other_variant, max_ratio)``: SUBJECT time / other time must be <= max_ratio).
A time function times only the measured loop, never its set-up.
"""

from bench.workloads import framing, lru, patterns, pool, ratewin, shell_analytics, shell_cache, shell_coalescer, shell_ratelimit, shell_turns

GROUPS = (lru, ratewin, patterns, framing, pool, shell_coalescer, shell_cache, shell_ratelimit, shell_analytics, shell_turns)
