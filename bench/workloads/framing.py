"""Framing pack + unpack of 4 KB of chat-like text at zlib level 6."""

import zlib
from time import perf_counter

from bench.data import chat_text
from bench.workloads._impl import fastcore_module

GROUP = "framing"
SUBJECT = "compiled"
LEVEL = 6


def _ours(kind):
    def time_func(loops):
        framing = fastcore_module("framing", kind)
        pack, unpack = framing.pack, framing.unpack
        data = chat_text(4096)
        limit = 1 << 20
        assert unpack(pack(data, level=LEVEL), max_size=limit) == data
        start = perf_counter()
        for _ in range(loops):
            unpack(pack(data, level=LEVEL), max_size=limit)
        return perf_counter() - start

    return time_func


def _bare_zlib(loops):
    compress, decompress = zlib.compress, zlib.decompress
    data = chat_text(4096)
    start = perf_counter()
    for _ in range(loops):
        decompress(compress(data, LEVEL))
    return perf_counter() - start


VARIANTS = {
    "compiled": _ours("compiled"),
    "twin": _ours("twin"),
    "zlib": _bare_zlib,
}

TARGETS = [("zlib", 1.05)]
