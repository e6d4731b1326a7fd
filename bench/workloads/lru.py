"""LRU get-or-set: 1,000,000 operations on Zipf(1.2) keys over 4096 strings, maxsize 1024."""

from time import perf_counter

from bench.data import zipf_keys
from bench.workloads._impl import fastcore_module

GROUP = "lru"
SUBJECT = "compiled"
MAXSIZE = 1024


def _get_or_set(make):
    def time_func(loops):
        keys = zipf_keys()
        total = 0.0
        for _ in range(loops):
            cache = make()
            get = cache.get
            start = perf_counter()
            for key in keys:
                if get(key) is None:
                    cache[key] = key
            total += perf_counter() - start
        return total

    return time_func


def _ours(kind):
    return lambda: fastcore_module("lru", kind).LRUCache(MAXSIZE)


def _lru_dict():
    from lru import LRU

    return LRU(MAXSIZE)


def _cachetools():
    from cachetools import LRUCache

    return LRUCache(MAXSIZE)


def _cachebox():
    from cachebox import LRUCache

    return LRUCache(MAXSIZE)


VARIANTS = {
    "compiled": _get_or_set(_ours("compiled")),
    "twin": _get_or_set(_ours("twin")),
    "lru-dict": _get_or_set(_lru_dict),
    "cachetools": _get_or_set(_cachetools),
    "cachebox": _get_or_set(_cachebox),
    # The floor: the same loop on a plain dict, no recency work and no eviction.
    "dict": _get_or_set(dict),
}

TARGETS = [("lru-dict", 0.6), ("cachetools", 0.3), ("cachebox", 1.0), ("dict", 2.0), ("twin", 1 / 3)]
