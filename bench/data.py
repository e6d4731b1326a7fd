"""Deterministic inputs shared by the workloads (generated, never downloaded)."""

from __future__ import annotations

import functools
import random

import numpy as np

ZIPF_DISTINCT = 4096
ZIPF_EXPONENT = 1.2


@functools.cache
def zipf_keys(count: int = 1_000_000, distinct: int = ZIPF_DISTINCT, exponent: float = ZIPF_EXPONENT) -> tuple[str, ...]:
    """*count* keys drawn from a finite Zipf law over *distinct* strings.

    P(key-i) is proportional to i**-exponent for i = 1..distinct, which is how
    chat prompts and cache keys are distributed: a few very common, a long tail.
    """
    ranks = np.arange(1, distinct + 1, dtype=np.float64)
    weights = ranks**-exponent
    weights /= weights.sum()
    draws = np.random.default_rng(42).choice(distinct, size=count, p=weights)
    names = [f"key-{i + 1}" for i in range(distinct)]
    return tuple(names[i] for i in draws)


_WORDS = (
    "the a to and of you it is that in for on my this with me what was just can"
    " bot not but so have are do like know think be get if your at how why about"
    " server discord message reply model token cache quota minute today python code"
    " error help please thanks lol yeah okay really question answer again channel"
).split()


@functools.cache
def chat_text(size: int = 4096, seed: int = 7) -> bytes:
    """About *size* bytes of chat-like English: short sentences from a small vocabulary."""
    rng = random.Random(seed)
    parts: list[str] = []
    length = 0
    while length < size:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        sentence = " ".join(words).capitalize() + rng.choice(".?!") + " "
        parts.append(sentence)
        length += len(sentence)
    return "".join(parts).encode()[:size]
