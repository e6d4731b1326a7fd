"""Analytics: the cost of ``emit()`` on the reply path, and SQLite transactions saved by batching.

The pyperf group ``analytics-emit`` times ``emit()`` calls inside one
``trio.run`` with the writer running against a real SQLite file in a
temporary directory. The loop yields to the scheduler every CHUNK emits so
the writer gets its turn, as it would in the bot; only the emits are timed.

- ``emit``: the bot's mix of event types and priorities (:func:`mixed_event`).
- ``emit-sampled-out``: cache hits at a 5 % sample rate, so most calls only
  count into the aggregates and never reach a queue.
- ``deque-append``: the floor, appending the same event tuple to a deque.

Reported, not gated (``TARGETS`` is empty): the stated targets are absolute,
and :func:`markdown` checks them, printed by ``python -m bench`` after the
timing table:

- :func:`EMIT_LATENCY`: the distribution of single ``emit()`` calls at
  10,000 events per second on the real clock, each call timed with
  ``perf_counter_ns``, writer running. Target: p99 <= 20 us.
- :func:`TRANSACTIONS`: commits for 10,000 events at 10,000 events per
  (simulated) second, batched (the writer as configured for the bot) vs the
  same writer with ``batch_size=1`` (one transaction per event). Target: at
  least 99 % fewer.
"""

import tempfile
from collections import deque
from pathlib import Path
from time import perf_counter, perf_counter_ns

import numpy as np
import trio
import trio.testing

from shell.analytics import Analytics, AnalyticsStore

GROUP = "analytics-emit"
SUBJECT = "emit"
CHUNK = 100  # emits between yields to the scheduler
RATE = 10_000  # events per second for EMIT_LATENCY and TRANSACTIONS
MAX_P99_US = 20.0
MIN_TRANSACTION_SAVING = 0.99


def mixed_event(i):
    """The i-th event of a bot-like mix: (type, priority, fields); 1 % are high-priority errors."""
    user = 100_000 + i % 300
    kind = i % 10
    if kind in (0, 5):
        return "message_processed", "normal", {"user_id": user, "guild_id": 900, "latency": 0.5 + (i % 13) / 10}
    if kind == 1:
        return "command_used", "normal", {"command": ("help", "ask", "persona")[i % 3], "user_id": user}
    if kind in (2, 3, 4):
        return "cache_hit", "low", {"cache": "response", "user_id": user}
    if kind == 6:
        return "cache_miss", "low", {"cache": "response", "user_id": user}
    if kind == 7:
        return "llm_call", "normal", {"provider": "gemini", "latency": 0.8, "tokens": 400 + i % 50, "status": "ok"}
    if kind == 8:
        return "rate_limited", "low", {"scope": "user-minute", "user_id": user}
    if i % 100 == 9:
        return "error", "high", {"type": "TimeoutError", "hash": "e1"}
    return "shed", "low", {"reason": "busy"}


_MIX = [mixed_event(i) for i in range(1000)]


def _analytics(directory, **settings):
    return Analytics(AnalyticsStore(Path(directory) / "analytics.db", salt="bench"), seed=1, **settings)


def _timed_emits(events, sample_rates=None):
    """A pyperf time function: emit ``events`` round-robin, timing only the emit calls."""

    def time_func(loops):
        async def main():
            with tempfile.TemporaryDirectory(prefix="triobot-bench-") as directory:
                analytics = _analytics(directory, sample_rates=sample_rates)
                emit = analytics.emit
                elapsed = 0.0
                async with trio.open_nursery() as nursery:
                    await nursery.start(analytics.run)
                    done = 0
                    while done < loops:
                        chunk = min(CHUNK, loops - done)
                        start = perf_counter()
                        for i in range(done, done + chunk):
                            event_type, priority, fields = events[i % len(events)]
                            emit(event_type, priority, **fields)
                        elapsed += perf_counter() - start
                        done += chunk
                        await trio.sleep(0)
                    nursery.cancel_scope.cancel()
                await analytics.flush()
                return elapsed

        return trio.run(main)

    return time_func


def _deque_append(loops):
    queue = deque()
    events = _MIX
    start = perf_counter()
    for i in range(loops):
        event_type, priority, fields = events[i % len(events)]
        queue.append((0.0, event_type, 1.0, fields))
    return perf_counter() - start


VARIANTS = {
    "emit": _timed_emits(_MIX),
    "emit-sampled-out": _timed_emits([("cache_hit", "low", {"cache": "response"})], {"cache_hit": 0.05}),
    "deque-append": _deque_append,
}

TARGETS = []


def EMIT_LATENCY(seconds: float = 3.0) -> dict:  # noqa: N802
    """Per-call ``emit()`` latency at RATE events/s on the real clock, writer running.

    Every 10 ms, RATE / 100 events of :func:`mixed_event` are emitted, each
    call timed alone with ``perf_counter_ns``. Returns the percentiles in
    microseconds, plus the events emitted, rows written, commits and drops.
    """

    async def main():
        with tempfile.TemporaryDirectory(prefix="triobot-bench-") as directory:
            analytics = _analytics(directory)
            emit = analytics.emit
            per_tick = RATE // 100
            ticks = int(seconds * 100)
            samples = np.empty(ticks * per_tick, dtype=np.int64)
            async with trio.open_nursery() as nursery:
                await nursery.start(analytics.run)
                next_tick = trio.current_time()
                n = 0
                for _ in range(ticks):
                    for _ in range(per_tick):
                        event_type, priority, fields = _MIX[n % len(_MIX)]
                        start = perf_counter_ns()
                        emit(event_type, priority, **fields)
                        samples[n] = perf_counter_ns() - start
                        n += 1
                    next_tick += 0.01
                    await trio.sleep_until(next_tick)
                nursery.cancel_scope.cancel()
            await analytics.flush()
            stats = analytics.stats()
            p50, p99, p999 = np.percentile(samples, (50, 99, 99.9)) / 1000
            return {
                "events": n,
                "p50_us": float(p50),
                "p99_us": float(p99),
                "p99.9_us": float(p999),
                "max_us": float(samples.max() / 1000),
                "rows": stats["rows_written"],
                "commits": stats["commits"],
                "dropped": sum(stats["dropped"].values()),
            }

    return trio.run(main)


def TRANSACTIONS(events: int = RATE) -> dict[str, int]:  # noqa: N802
    """Commits for *events* events at RATE per simulated second: batched vs one per event.

    Real SQLite writes in a temporary directory, on trio's MockClock; the
    count includes the final flush and the aggregate windows.
    """
    counts = {}
    for mode, batch_size in (("batched", 500), ("per-event", 1)):

        async def main(batch_size=batch_size):
            with tempfile.TemporaryDirectory(prefix="triobot-bench-") as directory:
                analytics = _analytics(directory, batch_size=batch_size, max_queued=events)
                async with trio.open_nursery() as nursery:
                    await nursery.start(analytics.run)
                    per_ms = RATE // 1000
                    for n in range(0, events, per_ms):
                        for i in range(n, min(n + per_ms, events)):
                            event_type, priority, fields = _MIX[i % len(_MIX)]
                            analytics.emit(event_type, priority, **fields)
                        await trio.sleep(0.001)
                    nursery.cancel_scope.cancel()
                await analytics.flush()
                stats = analytics.stats()
                assert stats["rows_written"] == events - stats["sampled_out"], "events were lost"
                return stats["commits"], stats["rows_written"]

        counts[mode], counts["rows"] = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0.001))
    counts["events"] = events
    return counts


def markdown() -> str:
    """Both tables: emit() latency at 10,000 events/s, and transactions per 10,000 events."""
    latency = EMIT_LATENCY()
    met_latency = "yes" if latency["p99_us"] <= MAX_P99_US else "**MISSED**"
    tx = TRANSACTIONS()
    saving = 1 - tx["batched"] / tx["per-event"]
    met_tx = "yes" if saving >= MIN_TRANSACTION_SAVING else "**MISSED**"
    return "\n".join(
        [
            f"Analytics emit() per call at {RATE:,} events/s for {latency['events'] / RATE:.0f} s "
            f"(real clock, writer running, mixed events; {latency['rows']:,} rows in {latency['commits']} "
            f"transactions, {latency['dropped']} dropped):",
            "",
            "| p50 | p99 | p99.9 | max | target | met |",
            "|---|---|---|---|---|---|",
            f"| {latency['p50_us']:.2f} us | {latency['p99_us']:.2f} us | {latency['p99.9_us']:.2f} us "
            f"| {latency['max_us']:.0f} us | p99 <= {MAX_P99_US:.0f} us | {met_latency} |",
            "",
            f"SQLite transactions for {tx['events']:,} events at {RATE:,} events/s "
            f"({tx['rows']:,} stored after sampling; real SQLite, MockClock time):",
            "",
            "| writer mode | transactions | saving vs one per event | target | met |",
            "|---|---|---|---|---|",
            f"| batched (500 events / 1 s / 100 ms high) | {tx['batched']:,} | {saving:.2%} "
            f"| >= {MIN_TRANSACTION_SAVING:.0%} | {met_tx} |",
            f"| one transaction per event (batch_size=1) | {tx['per-event']:,} | — | — | |",
        ]
    )
