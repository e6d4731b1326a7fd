"""RateLimiter: quotas and messages, write-behind I/O, loading damaged state, memory, real crashes.

Everything runs on trio's MockClock (autojump, starting at virtual time 0.0)
with WallClock(START), so POSIX time is START + trio.current_time() exactly,
except the crash tests, which SIGKILL/SIGTERM a real child process
(ratelimit_child.py) on the real clock, bounded by timeouts.
"""

from __future__ import annotations

import calendar
import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import trio
import trio.testing
from conftest import load_impl

from shell.concurrency import Coalescer
from shell.ratelimit import (
    ALLOWED,
    RateLimiter,
    RateLimits,
    StateError,
    WallClock,
    api_key_id,
)
from shell.service import Runtime, ServiceState
from shell.statefile import StateFile

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("ratelimit_child.py")

START = 1_700_000_040.0  # a multiple of 60: minute buckets start here
JUST_BEFORE_PACIFIC_MIDNIGHT = float(calendar.timegm((2026, 1, 15, 7, 59, 0)))  # 23:59 UTC-8
KEY = "AIza-test-api-key"


@pytest.fixture(params=["compiled", "pure"])
def windows_type(request):
    return load_impl("ratewin", request.param).RateWindows


def limiter_at(start=START, limits=None, **options):
    return RateLimiter(limits or RateLimits(), clock=WallClock(start), **options)


def mock_wall_clock():
    """Reads like limiter_at()'s WallClock(START), which was started at virtual time 0."""
    return START + trio.current_time()


async def load_users(path, clock=mock_wall_clock):
    """(source, users, limiter) as a freshly started limiter loads them from *path*."""
    loader = RateLimiter(RateLimits(max_users=1_000_000), state_file=StateFile(path), clock=clock)
    source = await loader.load()
    return source, loader.stats()["users"], loader


async def settled():
    """Wait for the file work in worker threads to finish.

    The autojump clock may move on while a thread works (the run loop looks
    idle), so a test that has slept past a write's due time waits for the
    write itself before looking at the file.
    """
    await trio.testing.wait_all_threads_completed()


def just_before(start, retry_after):
    """The mock time at which WallClock(start) reads the float just below start + retry_after.

    ratewin's promise: ``now + retry_after`` is the earliest POSIX time (a
    float) at which the call succeeds; any earlier one fails.
    """
    return math.nextafter(start + retry_after, 0.0) - start  # exact: the operands are within 2x


# For a Runtime on the autojump clock: a stop deadline would pass the moment
# the run loop waits for a worker thread's write, which takes real time.
NO_DEADLINE = math.inf


def records(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelno == level]


# -- quotas, scopes, messages ----------------------------------------------------


async def test_user_minute_quota_refuses_with_exact_retry_after(autojump_clock, windows_type):
    assert trio.current_time() == 0.0  # so WallClock(START)() == START + virtual time, exactly
    limiter = limiter_at(windows_type=windows_type)
    for _ in range(6):
        assert limiter.check_fairness("alice") is ALLOWED
    refused = limiter.check_fairness("alice")
    assert (refused.allowed, refused.scope) == (False, "user-minute")
    # Sliding window: 6 in minute one still weigh 6 * (1 - f) into minute two; room for one more at f = 1/6.
    assert refused.retry_after == pytest.approx(70.0, abs=1e-9)
    assert refused.message == "You are sending messages faster than 6 a minute; try again in 70 s."
    await trio.sleep_until(just_before(START, refused.retry_after))
    assert limiter.check_fairness("alice").scope == "user-minute"
    await trio.sleep_until(refused.retry_after)
    assert limiter.check_fairness("alice") is ALLOWED
    assert limiter.check_fairness("bob") is ALLOWED  # per user


async def test_daily_quotas_reset_at_midnight_pacific(autojump_clock, windows_type):
    limits = RateLimits(user_per_day=2, provider_per_day=1)
    limiter = limiter_at(JUST_BEFORE_PACIFIC_MIDNIGHT, limits, windows_type=windows_type)
    assert limiter.check_fairness(7, 9) is ALLOWED
    assert limiter.check_fairness(7, 9) is ALLOWED
    refused = limiter.check_fairness(7, 9)
    assert refused.scope == "user-day"
    assert refused.retry_after == pytest.approx(60.0, abs=1e-6)  # 08:00 UTC is midnight UTC-8
    assert refused.message == "You have reached your daily limit of 2 messages; try again in 60 s."
    assert limiter.acquire_provider(KEY) is ALLOWED
    provider = limiter.acquire_provider(KEY)
    assert provider.scope == "provider-day"
    assert provider.message == "The bot has used its daily quota with the model provider; it resets in 60 s."
    await trio.sleep_until(just_before(JUST_BEFORE_PACIFIC_MIDNIGHT, refused.retry_after))
    assert not limiter.check_fairness(7, 9).allowed
    await trio.sleep_until(max(refused.retry_after, provider.retry_after))
    assert limiter.check_fairness(7, 9) is ALLOWED
    assert limiter.acquire_provider(KEY) is ALLOWED


async def test_provider_quotas_name_the_quota_that_refused(autojump_clock):
    limiter = limiter_at(limits=RateLimits(provider_per_minute=2, provider_tokens_per_minute=1000))
    assert limiter.acquire_provider(KEY, tokens=600) is ALLOWED
    tokens = limiter.acquire_provider(KEY, tokens=600)
    assert tokens.scope == "provider-tokens"
    assert tokens.message.startswith(
        "The bot has used its per-minute token budget with the model provider; try again in"
    )
    assert limiter.acquire_provider(KEY, tokens=100) is ALLOWED
    requests = limiter.acquire_provider(KEY, tokens=100)
    assert requests.scope == "provider-minute"
    wait = math.ceil(requests.retry_after)
    assert requests.message == f"The bot has hit its per-minute limit with the model provider; try again in {wait} s."
    too_long = limiter.acquire_provider(KEY, tokens=1001)
    assert (too_long.allowed, too_long.retry_after, too_long.scope) == (False, math.inf, "provider-tokens")
    assert "too long" in too_long.message
    assert limiter.usage(KEY) == {
        "provider-minute": (2.0, 2), "provider-day": (2.0, 1500), "provider-tokens": (700.0, 1000),
    }  # fmt: skip


async def test_the_longer_quota_is_named_when_several_refuse(autojump_clock):
    limiter = limiter_at(limits=RateLimits(user_per_minute=1, user_per_day=1))
    limiter.check_fairness("carol")
    refused = limiter.check_fairness("carol")
    assert refused.scope == "user-day"  # the minute quota refuses too, but the day is the longer wait
    # START is 14:14 on the clock UTC-8.
    assert refused.message == "You have reached your daily limit of 1 message; try again in 9 h 46 min."


async def test_guild_refusal_gives_the_users_message_back(autojump_clock):
    limiter = limiter_at(limits=RateLimits(guild_per_minute=2))
    assert limiter.check_fairness("a", "guild") is ALLOWED
    assert limiter.check_fairness("b", "guild") is ALLOWED
    refused = limiter.check_fairness("c", "guild")
    assert refused.scope == "guild-minute"
    assert refused.message.startswith("This server is sending the bot more than 2 messages a minute; try again in")
    assert limiter.usage(user_id="c")["user-minute"] == (0.0, 6)
    assert limiter.check_fairness("c") is ALLOWED  # a DM: no guild quota
    assert limiter.stats()["fairness_denied"] == 1


async def test_only_real_upstream_calls_spend_provider_quota(autojump_clock):
    """The reply path: fairness per message; the provider only for the one real call."""
    limiter = limiter_at()
    cache: dict[str, str] = {}
    upstream_calls = 0

    async def ask_model(question):
        nonlocal upstream_calls
        assert limiter.acquire_provider(KEY, tokens=100) is ALLOWED
        upstream_calls += 1
        await trio.sleep(1.0)  # the provider thinking
        limiter.record_tokens(KEY, estimated=100, actual=40)
        cache[question] = "42"
        return "42"

    async def reply(user, question):
        decision = limiter.check_fairness(user, "guild")
        assert decision.allowed
        if question in cache:
            return cache[question]
        return await coalescer.run(question, ask_model, question)

    async with Coalescer() as coalescer:
        async with trio.open_nursery() as nursery:
            for user in range(5):  # five ask at once: one call, four coalesced followers
                nursery.start_soon(reply, f"user{user}", "meaning of life?")
        for user in range(5, 8):  # later askers: cache hits
            assert await reply(f"user{user}", "meaning of life?") == "42"
    assert upstream_calls == 1
    assert limiter.usage(KEY) == {
        "provider-minute": (1.0, 15), "provider-day": (1.0, 1500), "provider-tokens": (40.0, 1_000_000),
    }  # fmt: skip
    assert limiter.usage(guild_id="guild") == {"guild-minute": (8.0, 30)}
    assert all(limiter.usage(user_id=f"user{u}")["user-minute"] == (1.0, 6) for u in range(8))


async def test_refund_and_token_settlement(autojump_clock):
    limiter = limiter_at(limits=RateLimits(provider_tokens_per_minute=1000))
    assert limiter.acquire_provider(KEY, tokens=100) is ALLOWED
    limiter.refund_provider(KEY, tokens=100)  # the call never happened
    assert limiter.usage(KEY) == {
        "provider-minute": (0.0, 15), "provider-day": (0.0, 1500), "provider-tokens": (0.0, 1000),
    }  # fmt: skip
    limiter.acquire_provider(KEY, tokens=100)
    limiter.record_tokens(KEY, estimated=100, actual=300)
    assert limiter.usage(KEY)["provider-tokens"] == (300.0, 1000)
    limiter.record_tokens(KEY, estimated=300, actual=250)
    assert limiter.usage(KEY)["provider-tokens"] == (250.0, 1000)
    limiter.acquire_provider(KEY, tokens=700)
    limiter.record_tokens(KEY, estimated=700, actual=5000)  # far more than the window holds
    assert limiter.usage(KEY)["provider-tokens"] == (1000.0, 1000)
    assert limiter.acquire_provider(KEY, tokens=1).scope == "provider-tokens"


async def test_bad_arguments_are_refused_and_change_nothing(autojump_clock):
    limiter = limiter_at()
    limiter.check_fairness("alice", "guild")
    limiter.acquire_provider(KEY, tokens=5)
    before = (limiter.snapshot(), limiter.stats())
    for call, error in [
        (lambda: limiter.check_fairness(1.5), TypeError),
        (lambda: limiter.check_fairness(True), TypeError),
        (lambda: limiter.check_fairness("alice", b"guild"), TypeError),
        (lambda: limiter.acquire_provider(KEY, tokens=-1), ValueError),
        (lambda: limiter.acquire_provider(KEY, tokens=2.0), TypeError),
        (lambda: limiter.acquire_provider(b"key"), TypeError),
        (lambda: limiter.acquire_provider(""), ValueError),
        (lambda: limiter.record_tokens(KEY, estimated=5, actual=-5), ValueError),
        (lambda: limiter.refund_provider(KEY, tokens=None), TypeError),
    ]:
        with pytest.raises(error):
            call()
    assert (limiter.snapshot(), limiter.stats()) == before


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"user_per_minute": 0}, ValueError),
        ({"guild_per_minute": True}, TypeError),
        ({"max_users": 2**31}, ValueError),
        ({"provider_per_day": 10.0}, TypeError),
        ({"day_utc_offset": 2 * 86400.0}, ValueError),
        ({"day_utc_offset": math.nan}, ValueError),
        ({"day_utc_offset": "-8"}, TypeError),
    ],
)
def test_bad_limits_are_refused(options, error):
    with pytest.raises(error):
        RateLimits(**options)


@pytest.mark.parametrize("interval", [0, -1, math.inf, math.nan])
def test_bad_write_interval_is_refused(interval):
    with pytest.raises(ValueError):
        RateLimiter(write_interval=interval)


def test_wait_spelling_in_messages():
    # At 00:10:30 UTC-8, 23 h 49 min 30 s remain: waits are rounded up, never down.
    limiter = RateLimiter(RateLimits(user_per_day=1), clock=lambda: JUST_BEFORE_PACIFIC_MIDNIGHT + 60 + 630)
    limiter.check_fairness("u")
    assert limiter.check_fairness("u").message.endswith("try again in 23 h 50 min.")
    limiter = RateLimiter(RateLimits(user_per_day=1), clock=lambda: JUST_BEFORE_PACIFIC_MIDNIGHT - 600)
    limiter.check_fairness("u")
    assert limiter.check_fairness("u").message.endswith("try again in 11 min.")


async def test_wall_clock_follows_trio_time(autojump_clock):
    clock = WallClock(START)
    assert clock() == START
    await trio.sleep(12.5)
    assert clock() == START + 12.5
    real = WallClock()
    assert abs(real() - time.time()) < 5.0


# -- state -------------------------------------------------------------------------


def test_api_keys_never_reach_the_state():
    limiter = RateLimiter(clock=lambda: START)
    limiter.acquire_provider(KEY, tokens=10)
    assert KEY.encode() not in limiter.snapshot()
    assert api_key_id(KEY).encode() in limiter.snapshot()
    assert api_key_id(KEY) == api_key_id(KEY) != api_key_id(KEY + "2")


@pytest.mark.parametrize(("writer", "reader"), [("compiled", "pure"), ("pure", "compiled")])
def test_state_moves_between_implementations(writer, reader):
    source = RateLimiter(clock=lambda: START, windows_type=load_impl("ratewin", writer).RateWindows)
    source.check_fairness("alice", "guild")
    source.acquire_provider(KEY, tokens=123)
    target = RateLimiter(clock=lambda: START + 1, windows_type=load_impl("ratewin", reader).RateWindows)
    target.restore(source.snapshot())
    assert target.usage(KEY, user_id="alice", guild_id="guild") == source.usage(KEY, user_id="alice", guild_id="guild")
    assert target.snapshot() == source.snapshot()


def test_restore_refuses_damaged_state_and_changes_nothing():
    source = RateLimiter(clock=lambda: START)
    source.check_fairness("alice", "guild")
    source.acquire_provider(KEY, tokens=123)
    data = source.snapshot()
    target = RateLimiter(clock=lambda: START)
    target.check_fairness("bob")
    before = target.snapshot()
    for length in range(len(data)):
        with pytest.raises(ValueError):
            target.restore(data[:length])
    with pytest.raises(StateError, match="trailing"):
        target.restore(data + b"\0")
    with pytest.raises(ValueError, match="different windows"):
        RateLimiter(RateLimits(user_per_minute=7)).restore(data)
    assert target.snapshot() == before


# -- write-behind --------------------------------------------------------------------


async def test_write_behind_waits_one_interval_and_idles_while_clean(autojump_clock, tmp_path):
    state = StateFile(tmp_path / "state")
    limiter = limiter_at(state_file=state)
    async with trio.open_nursery() as nursery:
        await nursery.start(limiter.run)
        await trio.sleep(100.0)
        assert state.writes == 0  # nothing changed: nothing written
        limiter.check_fairness("alice")
        await trio.sleep(4.99)
        assert (state.writes, limiter.dirty) == (0, True)
        await trio.sleep(0.02)
        await settled()
        assert (state.writes, limiter.dirty) == (1, False)
        await trio.sleep(100.0)
        assert state.writes == 1
        nursery.cancel_scope.cancel()
    assert (await load_users(state.path))[:2] == ("main", 1)


async def test_ten_thousand_acquisitions_in_ten_seconds_make_at_most_three_writes(autojump_clock, tmp_path):
    state = StateFile(tmp_path / "state")
    limiter = limiter_at(state_file=state)
    runtime = Runtime([limiter], handle_signals=False, stop_deadline=NO_DEADLINE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await runtime.wait_state("ratelimit", ServiceState.READY)
        for user in range(10_000):
            assert limiter.check_fairness(f"u{user}") is ALLOWED
            await trio.sleep(0.001)
        runtime.request_stop()  # the final flush is counted too
    print(f"\n10,000 acquisitions over 10 simulated seconds: {state.writes} writes (final flush included)")
    assert 1 <= state.writes <= 3
    assert (await load_users(state.path))[:2] == ("main", 10_000)


class WriteWithInterference(StateFile):
    """A StateFile that makes one more change while its first write is under way."""

    def __init__(self, path, limiter_box):
        super().__init__(path)
        self.limiter_box = limiter_box

    def write(self, data):
        if self.writes == 0:
            trio.from_thread.run_sync(self.limiter_box[0].check_fairness, "late")
        super().write(data)


async def test_a_change_during_a_write_is_not_lost(autojump_clock, tmp_path):
    box = []
    state = WriteWithInterference(tmp_path / "state", box)
    limiter = limiter_at(state_file=state)
    box.append(limiter)
    async with trio.open_nursery() as nursery:
        await nursery.start(limiter.run)
        limiter.check_fairness("early")
        await trio.sleep_until(6.0)  # the first write is due at 5.0
        await settled()
        # It holds "early" only; "late" came in during it and is still pending.
        assert (state.writes, limiter.dirty) == (1, True)
        source, users, loader = await load_users(state.path)
        assert (users, loader.usage(user_id="late")["user-minute"]) == (1, (0.0, 6))
        await trio.sleep_until(12.0)
        await settled()
        assert (state.writes, limiter.dirty) == (2, False)  # written behind without any new change
        nursery.cancel_scope.cancel()
    source, users, loader = await load_users(state.path)
    assert users == 2 and loader.usage(user_id="late")["user-minute"][0] > 0


@pytest.mark.parametrize("dirty", [True, False], ids=["dirty", "clean"])
async def test_stopping_flushes_once_when_dirty_and_never_when_clean(autojump_clock, tmp_path, dirty):
    state = StateFile(tmp_path / "state")
    limiter = limiter_at(state_file=state)
    runtime = Runtime([limiter], handle_signals=False, stop_deadline=NO_DEADLINE)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await runtime.wait_state("ratelimit", ServiceState.READY)
        limiter.check_fairness("alice")
        await trio.sleep(6.0)
        await settled()
        assert state.writes == 1
        if dirty:
            limiter.check_fairness("bob")
        runtime.request_stop()
    assert state.writes == (2 if dirty else 1)
    assert not limiter.dirty
    assert (await load_users(state.path))[1] == (2 if dirty else 1)


async def test_a_failed_write_is_logged_and_retried(autojump_clock, tmp_path, caplog):
    directory = tmp_path / "not yet"
    state = StateFile(directory / "state")
    limiter = limiter_at(state_file=state)
    async with trio.open_nursery() as nursery:
        await nursery.start(limiter.run)
        limiter.check_fairness("alice")
        await trio.sleep_until(6.0)
        await settled()
        assert (state.writes, state.write_errors, limiter.dirty) == (0, 1, True)
        assert any("retrying later" in message for message in records(caplog, logging.ERROR))
        directory.mkdir()
        await trio.sleep_until(12.0)
        await settled()
        assert (state.writes, limiter.dirty) == (1, False)
        nursery.cancel_scope.cancel()
    assert limiter.stats()["write_errors"] == 1


async def test_flush_raises_when_the_write_fails(autojump_clock, tmp_path):
    limiter = limiter_at(state_file=StateFile(tmp_path / "missing" / "state"))
    limiter.check_fairness("alice")
    with pytest.raises(OSError):
        await limiter.flush()
    assert limiter.dirty


# -- loading ---------------------------------------------------------------------------


async def saved_twice(path):
    """A state file whose backup holds alice and whose main file holds alice and bob."""
    limiter = limiter_at(state_file=StateFile(path))
    limiter.check_fairness("alice")
    await limiter.flush()
    limiter.check_fairness("bob")
    await limiter.flush()


async def test_startup_with_a_corrupt_main_file_uses_the_backup_with_a_warning(autojump_clock, tmp_path, caplog):
    path = tmp_path / "state"
    await saved_twice(path)
    path.write_bytes(path.read_bytes()[:-1])
    limiter = limiter_at(state_file=StateFile(path))
    async with trio.open_nursery() as nursery:
        await nursery.start(limiter.run)  # loads before reporting ready
        assert limiter.stats()["users"] == 1
        assert limiter.usage(user_id="alice")["user-minute"] == (1.0, 6)
        assert not limiter.dirty
        nursery.cancel_scope.cancel()
    [warning] = records(caplog, logging.WARNING)
    assert "is unusable" in warning and "loaded its backup" in warning
    assert records(caplog, logging.ERROR) == []


async def test_startup_with_both_files_corrupt_starts_fresh_with_an_error(autojump_clock, tmp_path, caplog):
    path = tmp_path / "state"
    await saved_twice(path)
    path.write_bytes(b"\0" * 100)
    backup = tmp_path / "state.bak"
    backup.write_bytes(backup.read_bytes()[:10])
    limiter = limiter_at(state_file=StateFile(path))
    assert await limiter.load() == "fresh"
    assert limiter.stats()["users"] == 0
    [error] = records(caplog, logging.ERROR)
    assert "starting fresh" in error


async def test_state_saved_under_other_limits_is_not_loaded(autojump_clock, tmp_path, caplog):
    path = tmp_path / "state"
    await saved_twice(path)
    limiter = limiter_at(limits=RateLimits(user_per_minute=10), state_file=StateFile(path))
    assert await limiter.load() == "fresh"
    assert "different windows" in records(caplog, logging.ERROR)[0]


async def test_a_restarted_run_keeps_the_newer_counters_in_memory(autojump_clock, tmp_path):
    path = tmp_path / "state"
    await saved_twice(path)
    limiter = limiter_at(state_file=StateFile(path))
    for _ in range(2):  # the second run is what a restart policy would start
        async with trio.open_nursery() as nursery:
            await nursery.start(limiter.run)
            limiter.check_fairness("carol")
            nursery.cancel_scope.cancel()
    assert limiter.stats()["users"] == 3
    assert limiter.usage(user_id="carol")["user-minute"] == (2.0, 6)  # not reloaded from the file


async def test_a_state_file_truncated_at_any_byte_is_detected(autojump_clock, tmp_path):
    path = tmp_path / "state"
    writer = limiter_at(state_file=StateFile(path))
    writer.check_fairness("alice", "guild")
    writer.acquire_provider(KEY, tokens=77)
    await writer.flush()
    whole = path.read_bytes()
    for length in range(len(whole)):
        path.write_bytes(whole[:length])
        reader = limiter_at(state_file=StateFile(path))
        assert await reader.load() == "fresh", length
        assert reader.stats()["users"] == 0
    path.write_bytes(whole)
    reader = limiter_at(state_file=StateFile(path))
    assert await reader.load() == "main"
    assert reader.usage(KEY)["provider-tokens"] == (77.0, 1_000_000)


# -- memory ------------------------------------------------------------------------------


def traced_growth(action):
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = action()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return after - before


def test_memory_of_the_provider_limiter_and_of_100000_users():
    """The default implementation (compiled when built): targets 1 MB and 50 MB."""
    limits = RateLimits()
    snowflake = 1_100_000_000_000_000_000  # Discord-sized ids, converted to str inside

    def provider_only():
        limiter = RateLimiter(limits, clock=lambda: START)
        for key in range(limits.max_api_keys):
            assert limiter.acquire_provider(f"AIza-{key:035d}", tokens=1000) is ALLOWED
        return limiter

    def users():
        limiter = RateLimiter(limits, clock=lambda: START)
        for user in range(100_000):  # ten users in each of 10,000 guilds: nobody refused
            assert limiter.check_fairness(snowflake + user, snowflake + user % 10_000) is ALLOWED
        return limiter

    provider_bytes = traced_growth(provider_only)
    user_bytes = traced_growth(users)
    print(
        f"\nRateLimiter memory ({type(RateLimiter()._users).__module__}): whole limiter with "
        f"{limits.max_api_keys} API keys, no users: {provider_bytes / 1e3:.1f} kB; 100,000 users in "
        f"10,000 guilds: {user_bytes / 1e6:.2f} MB ({user_bytes / 100_000:.0f} B/user, id strings included)"
    )
    assert provider_bytes < 1_000_000
    assert user_bytes < 50_000_000


# -- real crashes ----------------------------------------------------------------------------

KILLS = 20
CRASH_TEST_BUDGET = 60.0  # seconds of real time for the whole SIGKILL test, a hard stop


def start_child(path, out):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(out, "wb") as stdout, open(f"{out}.err", "wb") as stderr:
        return subprocess.Popen([sys.executable, str(CHILD), str(path)], stdout=stdout, stderr=stderr, env=env)


def child_lines(out):
    """{"ready": [...], "acquired": [...], "written": [...], "final": [...]} from the child's output."""
    lines = {"ready": [], "acquired": [], "written": [], "final": []}
    for line in Path(out).read_text().split("\n")[:-1]:  # complete lines only
        word, _, number = line.partition(" ")
        lines[word].append(int(number))
    return lines


def wait_until_ready(proc, out, timeout=20.0):
    give_up = time.monotonic() + timeout
    while not Path(out).read_text().startswith("ready"):
        assert proc.poll() is None, Path(f"{out}.err").read_text()
        assert time.monotonic() < give_up, "child never got ready"
        time.sleep(0.01)


def check_state(path, written_at_least, acquired_at_most):
    """Load *path* as a restarting child would and check what it holds; return the user count."""
    source, users, loader = trio.run(load_users, path, time.time)  # the child's clock: real time
    assert source in ("main", "backup") or (source == "missing" and written_at_least == 0)
    assert written_at_least <= users <= acquired_at_most
    # A consistent snapshot: users u0 .. u<users-1>, acquired in that order. (The
    # rolling estimate of a message from the previous minute is below 1, not 0.)
    if users:
        assert loader.usage(user_id=f"u{users - 1}")["user-minute"][0] > 0.0
    assert loader.usage(user_id=f"u{users}")["user-minute"][0] == 0.0
    assert not os.path.exists(f"{path}.corrupt")
    return source, users


def test_sigkill_at_random_moments_never_loses_a_completed_write(tmp_path):
    rng = random.Random(20261130)
    path = tmp_path / "ratelimit.state"
    give_up = time.monotonic() + CRASH_TEST_BUDGET
    users = 0
    sources = []
    for kill in range(KILLS):
        assert time.monotonic() < give_up, f"only {kill} kills within {CRASH_TEST_BUDGET} s"
        out = tmp_path / f"child{kill}.out"
        proc = start_child(path, out)
        try:
            wait_until_ready(proc, out)
            time.sleep(rng.uniform(0.05, 0.7))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lines = child_lines(out)
        assert lines["ready"] == [users]  # it resumed from exactly what the last check loaded
        written = max(lines["written"], default=users)
        acquired = max(lines["acquired"], default=users)
        source, users = check_state(path, written, acquired)
        sources.append((source, acquired - users))
    print(f"\nafter {KILLS} SIGKILLs, loaded from: {[source for source, _ in sources]}")
    print(f"acquisitions not yet written at each kill: {[lost for _, lost in sources]}")
    assert users > 0


def test_sigterm_loses_nothing(tmp_path):
    path = tmp_path / "ratelimit.state"
    out = tmp_path / "child.out"
    proc = start_child(path, out)
    try:
        wait_until_ready(proc, out)
        give_up = time.monotonic() + 20
        while len(child_lines(out)["written"]) < 2:  # mid-run, past a few writes
            assert time.monotonic() < give_up and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, Path(f"{out}.err").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = child_lines(out)
    [final] = lines["final"]
    assert final == lines["acquired"][-1] > 0
    assert check_state(path, final, final) == ("main", final)
