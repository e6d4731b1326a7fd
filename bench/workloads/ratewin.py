"""Rate windows: try_acquire with 3 windows per key over 1000 keys.

Windows: 15 per minute (rolling), 100 per hour (rolling), 1500 per day
(calendar, midnight at UTC-8 for ours; the peers only have rolling windows).
Every cost is 1: the peers store one entry per unit of cost, so a token
window (cost ~ hundreds) would measure their storage, not the limiter.
One loop = a fresh limiter and 10,000 acquisitions, 10 per key, all allowed
(10 < 15), with time advancing 1 ms per call.
"""

from time import perf_counter

from bench.workloads._impl import fastcore_module

GROUP = "ratewin"
SUBJECT = "compiled"
KEYS = tuple(f"user:{i}" for i in range(1000))
CALLS = tuple(KEYS[(i * 7919) % len(KEYS)] for i in range(10_000))
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _ours(kind):
    def time_func(loops):
        ratewin = fastcore_module("ratewin", kind)
        windows = [
            ratewin.Window(15, 60.0),
            ratewin.Window(100, 3600.0),
            ratewin.Window(1500, 86400.0, calendar=True, utc_offset=-8 * 3600.0),
        ]
        times = tuple(START + i * 0.001 for i in range(len(CALLS)))
        total = 0.0
        for _ in range(loops):
            limiter = ratewin.RateWindows(windows, max_keys=len(KEYS))
            acquire = limiter.try_acquire
            start = perf_counter()
            for key, now in zip(CALLS, times):
                acquire(key, now)
            total += perf_counter() - start
            assert limiter.stats()["denied"] == 0
        return total

    return time_func


def _limits(loops):
    from limits import RateLimitItemPerDay, RateLimitItemPerHour, RateLimitItemPerMinute
    from limits.storage import MemoryStorage
    from limits.strategies import MovingWindowRateLimiter

    items = (RateLimitItemPerMinute(15), RateLimitItemPerHour(100), RateLimitItemPerDay(1500))
    total = 0.0
    for _ in range(loops):
        limiter = MovingWindowRateLimiter(MemoryStorage())
        hit = limiter.hit
        start = perf_counter()
        for key in CALLS:
            # Generous to the peer: three hits, no separate test() pass for
            # all-or-nothing (ours records nothing unless every window allows).
            for item in items:
                if not hit(item, key):
                    break
        total += perf_counter() - start
    return total


def _pyrate(loops):
    from pyrate_limiter import BucketFactory, Duration, InMemoryBucket, Limiter, Rate, RateItem

    rates = [Rate(15, Duration.MINUTE), Rate(100, Duration.HOUR), Rate(1500, Duration.DAY)]

    class PerKeyBuckets(BucketFactory):
        """One in-memory bucket per key: pyrate-limiter's documented routing pattern."""

        def __init__(self):
            self.buckets = {}

        def wrap_item(self, name, weight=1):
            return RateItem(name, int(perf_counter() * 1000), weight=weight)

        def get(self, item):
            bucket = self.buckets.get(item.name)
            if bucket is None:
                bucket = self.buckets[item.name] = InMemoryBucket(rates)
            return bucket

    total = 0.0
    for _ in range(loops):
        limiter = Limiter(PerKeyBuckets())
        acquire = limiter.try_acquire
        start = perf_counter()
        for key in CALLS:
            acquire(key, blocking=False)
        total += perf_counter() - start
    return total


VARIANTS = {
    "compiled": _ours("compiled"),
    "twin": _ours("twin"),
    "limits": _limits,
    "pyrate-limiter": _pyrate,
}

TARGETS = [("limits", 0.05), ("pyrate-limiter", 0.05), ("twin", 1 / 3)]
