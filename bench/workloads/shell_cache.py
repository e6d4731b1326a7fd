"""ResponseCache hit: per-call cost of ``await cache.get(parts)`` for a 4 KB compressed reply.

One hit is the whole reply-path lookup: key hashing (prompt normalisation
and blake2b), the read lock, the LRU lookup, inflating the frame and UTF-8
decoding. The compiled fastcore core (lru + framing) is compared with its
pure-Python twins; the set-up (building the cache, storing the entry) is not
timed, only the loop of lookups inside one ``trio.run``.
"""

from time import perf_counter

import trio

from bench.data import chat_text
from bench.workloads._impl import fastcore_module
from shell.cache import CacheKeyParts, ResponseCache

GROUP = "cache-hit"
SUBJECT = "compiled"
REPLY_SIZE = 4096


def _hit(kind):
    def time_func(loops):
        lru = fastcore_module("lru", kind)
        framing = fastcore_module("framing", kind)
        reply = chat_text(REPLY_SIZE).decode()
        parts = CacheKeyParts("Tell me a story about the server", "gemini", "gemini-2.0-flash", "You are a helpful bot.")

        async def main():
            cache = ResponseCache(lru_type=lru.LRUCache, framing=framing)
            await cache.put(parts, reply)
            stats = cache.stats()
            assert stats["stored_bytes"] < stats["raw_bytes"] == REPLY_SIZE, "entry must be stored compressed"
            assert await cache.get(parts) == reply
            get = cache.get
            start = perf_counter()
            for _ in range(loops):
                await get(parts)
            return perf_counter() - start

        return trio.run(main)

    return time_func


VARIANTS = {
    "compiled": _hit("compiled"),
    "twin": _hit("twin"),
}

# Reported, not gated: no target is stated, and most of a hit (inflating 4 KB,
# the lock's checkpoint, hashing the key) costs the same on both cores, so the
# ratio sits near 0.85 and machine noise could flip a gate at 1.0.
TARGETS = []
