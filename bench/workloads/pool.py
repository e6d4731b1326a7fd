"""ObjectPool: lease and release a 64 KB buffer vs constructing a fresh one."""

from time import perf_counter

from bench.workloads._impl import fastcore_module

GROUP = "pool"
SUBJECT = "compiled"
BUFFER_SIZE = 64 * 1024


class Buffer:
    """A reusable write buffer: reset rewinds the position, no zeroing."""

    __slots__ = ("data", "pos")

    def __init__(self):
        self.data = bytearray(BUFFER_SIZE)
        self.pos = 0

    def reset(self):
        self.pos = 0


def _reset(buffer):
    buffer.reset()


def _ours(kind):
    def time_func(loops):
        pool = fastcore_module("pool", kind).ObjectPool(Buffer, max_idle=8, reset=_reset)
        lease = pool.lease
        start = perf_counter()
        for _ in range(loops):
            with lease() as buffer:
                buffer.pos += 1
        return perf_counter() - start

    return time_func


def _fresh(loops):
    start = perf_counter()
    for _ in range(loops):
        buffer = Buffer()
        buffer.pos += 1
    return perf_counter() - start


VARIANTS = {
    "compiled": _ours("compiled"),
    "twin": _ours("twin"),
    "fresh Buffer()": _fresh,
}

TARGETS = [("fresh Buffer()", 0.5)]
