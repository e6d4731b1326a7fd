"""RateLimiter on the reply path: per-request cost of the fairness check plus the provider acquire.

One loop = one request: ``check_fairness(user, guild)`` then
``acquire_provider(api_key, tokens=500)``, for users cycling over 1000 ids
in 100 guilds and one API key, with time advancing 1 ms per request. The
quotas are set high enough that nothing is refused: this is the hot path
every message that reaches the model takes. The compiled fastcore.ratewin
core is compared with its pure-Python twin (injected as ``windows_type``).
"""

from itertools import count, cycle, islice
from time import perf_counter

from bench.workloads._impl import fastcore_module
from shell.ratelimit import ALLOWED, RateLimiter, RateLimits

GROUP = "ratelimit-acquire"
SUBJECT = "compiled"
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
API_KEY = "AIza-benchmark-key"
REQUESTS = tuple((f"{100_000 + user}", f"{900 + user % 100}") for user in range(1000))
UNLIMITED = RateLimits(
    provider_per_minute=2**30,
    provider_per_day=2**30,
    provider_tokens_per_minute=2**30,
    user_per_minute=2**30,
    user_per_day=2**30,
    guild_per_minute=2**30,
)


def _acquire(kind):
    def time_func(loops):
        windows_type = fastcore_module("ratewin", kind).RateWindows
        clock = count(START, 0.0005).__next__  # read twice per request
        limiter = RateLimiter(UNLIMITED, clock=clock, windows_type=windows_type)
        for user, guild in REQUESTS:  # warm: every key exists, as in a running bot
            limiter.check_fairness(user, guild)
        check = limiter.check_fairness
        acquire = limiter.acquire_provider
        requests = islice(cycle(REQUESTS), loops)
        start = perf_counter()
        for user, guild in requests:
            check(user, guild)
            acquire(API_KEY, 500)
        elapsed = perf_counter() - start
        assert check(*REQUESTS[0]) is ALLOWED and limiter.stats()["provider_denied"] == 0
        return elapsed

    return time_func


VARIANTS = {
    "compiled": _acquire("compiled"),
    "twin": _acquire("twin"),
}

TARGETS = [("twin", 1.0)]
