"""Rate-limit state writes: write-behind vs write-through, 1000 requests at 1000 requests/s.

One loop = 1000 requests (fairness check plus provider acquire), one every
simulated millisecond on trio's MockClock, then the final flush, with a real
StateFile (temp file, fsync, rename, directory fsync) in a temporary
directory:

- ``write-behind``: the RateLimiter service as the bot runs it: one snapshot
  at most every 5 s while anything changed, plus the final flush.
- ``write-through``: the same limiter flushed after every request, i.e. one
  durable write per change.

What matters is the number of writes, not their time (which depends on how
fast this disk fsyncs), so this is not a pyperf group: ``python -m bench``
prints :func:`markdown` after the timing table. :func:`WRITE_COUNTS` also
takes longer runs (10 simulated seconds = 10,000 requests). The target (``MIN_WRITE_SAVING``): write-behind makes at
least 99.9 % fewer writes than write-through.
"""

import tempfile
from pathlib import Path
from time import perf_counter

import trio
import trio.testing

from shell.ratelimit import RateLimiter, RateLimits
from shell.statefile import StateFile

API_KEY = "AIza-benchmark-key"
RATE = 1000  # requests per simulated second
LIMITS = RateLimits(
    provider_per_minute=2**20,
    provider_per_day=2**20,
    user_per_minute=2**20,
    user_per_day=2**20,
    guild_per_minute=2**20,
)
MIN_WRITE_SAVING = 0.999


async def _traffic(limiter, requests, after_each):
    """*requests* requests at RATE per simulated second; ``after_each()`` after each one."""
    for request in range(requests):
        limiter.check_fairness(f"{100_000 + request % 1000}", f"{900 + request % 100}")
        limiter.acquire_provider(API_KEY, 500)
        await after_each()
        await trio.sleep(1 / RATE)


class _CountingStore(StateFile):
    """A StateFile that counts writes without touching the disk (for WRITE_COUNTS)."""

    def write(self, data):
        self.writes += 1
        self.bytes_written += len(data)


def _run(write_through, requests, directory, on_disk=True):
    """(seconds, writes) for one run of *requests* requests and the final flush."""
    store = StateFile if on_disk else _CountingStore
    state = store(Path(directory) / "ratelimit.state")
    limiter = RateLimiter(LIMITS, state_file=state)

    async def nothing():
        pass

    async def main():
        async with trio.open_nursery() as nursery:
            if not write_through:
                await nursery.start(limiter.run)
            start = perf_counter()
            await _traffic(limiter, requests, limiter.flush if write_through else nothing)
            nursery.cancel_scope.cancel()
        await limiter.flush()  # what the runtime does at shutdown
        assert not limiter.dirty
        return perf_counter() - start

    elapsed = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.001))
    return elapsed, state.writes


def WRITE_COUNTS(requests: int = 10 * RATE, *, on_disk: bool = False) -> dict[str, int]:  # noqa: N802
    """State writes each variant makes for *requests* requests at RATE per simulated second.

    The count depends on the write policy, not on the disk, so by default the
    writes are counted without being made (10,000 real write-through writes
    take about 40 s); ``on_disk=True`` makes them for real.
    """
    counts = {}
    for name, write_through in (("write-behind", False), ("write-through", True)):
        with tempfile.TemporaryDirectory(prefix="triobot-bench-") as directory:
            counts[name] = _run(write_through, requests, directory, on_disk)[1]
    return counts


def markdown(requests: int = RATE) -> str:
    """The write-count table for *requests* requests at RATE per second, made on disk."""
    counts = WRITE_COUNTS(requests, on_disk=True)
    behind, through = counts["write-behind"], counts["write-through"]
    saving = 1 - behind / through
    met = "yes" if saving >= MIN_WRITE_SAVING else "**MISSED**"
    return "\n".join(
        [
            f"State file writes for {requests} requests at {RATE} requests/s (real fsync'd writes, MockClock time):",
            "",
            "| policy | writes | saving vs write-through | target | met |",
            "|---|---|---|---|---|",
            f"| write-behind (5 s) | {behind} | {saving:.2%} | >= {MIN_WRITE_SAVING:.1%} | {met} |",
            f"| write-through | {through} | — | — | |",
        ]
    )
