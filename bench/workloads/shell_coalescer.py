"""Coalescer per-call cost inside trio: the price a lone request pays for the
chance to share, and what each of 100 identical concurrent asks costs.

The Coalescer is pure Trio (no fastcore inside), so there is no compiled/twin
pair here: the reference is awaiting the same function directly.
"""

from time import perf_counter

import trio

from shell.concurrency import Coalescer

GROUP = "coalescer"
SUBJECT = "lone call"
CROWD = 100


async def _upstream():
    await trio.lowlevel.checkpoint()
    return 1


def _lone(loops):
    async def main():
        async with Coalescer() as coalescer:
            start = perf_counter()
            for i in range(loops):
                await coalescer.run(i, _upstream)
            return perf_counter() - start

    return trio.run(main)


def _direct(loops):
    async def main():
        start = perf_counter()
        for _ in range(loops):
            await _upstream()
        return perf_counter() - start

    return trio.run(main)


def _crowd(loops):
    """Time per caller when CROWD callers ask the same key at once."""

    async def main():
        async with Coalescer() as coalescer:
            rounds = max(1, loops // CROWD)
            start = perf_counter()
            for i in range(rounds):
                async with trio.open_nursery() as nursery:
                    for _ in range(CROWD):
                        nursery.start_soon(coalescer.run, i, _upstream)
            return (perf_counter() - start) * loops / (rounds * CROWD)

    return trio.run(main)


VARIANTS = {
    "lone call": _lone,
    "direct await": _direct,
    f"{CROWD} sharing callers": _crowd,
}

TARGETS: list = []
