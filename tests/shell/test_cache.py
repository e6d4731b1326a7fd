"""ResponseCache: keys, storage, expiry, bypass, warming, concurrency, corruption.

Every cache test runs on both fastcore implementations (the ``impl`` fixture
injects the compiled or the pure LRU and framing modules). Time-dependent
tests run on trio's MockClock; the thread tests prove overlap with a barrier
and counters, never with timing.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from conftest import load_impl
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.data import chat_text
from shell.cache import (
    DEFAULT_WARM_PROMPTS,
    EMPTY_HISTORY_DIGEST,
    CacheKeyParts,
    ResponseCache,
    WarmPlan,
    cache_key,
    digest_history,
    normalize_prompt,
)
from shell.concurrency import Overloaded
from shell.service import Runtime, ServiceState
from shell.timers import TimerWheel

PROVIDER, MODEL, PERSONA = "gemini", "gemini-2.0-flash", "You are a friendly Discord bot."
LONG_REPLY = chat_text(4096).decode()  # chat-like text, compresses well
HUGE_REPLY = chat_text(100_000).decode()  # above the 64 KB thread threshold
THREAD_WAIT = 10.0  # a real-time bound for a thread waiting on a barrier; reached only on failure


def ask(prompt: str = "tell me about trio", **changes) -> CacheKeyParts:
    return dataclasses.replace(CacheKeyParts(prompt, PROVIDER, MODEL, PERSONA), **changes)


@pytest.fixture
def impl(impl_kind):
    return SimpleNamespace(lru=load_impl("lru", impl_kind), framing=load_impl("framing", impl_kind))


@pytest.fixture
def make_cache(impl):
    """``make_cache(**settings) -> (cache, its LRUCache)``, on the implementation under test."""

    def make(*, framing=None, **settings):
        made = []

        def lru_type(*args, **kwargs):
            made.append(impl.lru.LRUCache(*args, **kwargs))
            return made[-1]

        cache = ResponseCache(lru_type=lru_type, framing=framing or impl.framing, **settings)
        return cache, made[0]

    return make


def frame_of(lru, parts):
    return lru.peek(cache_key(parts)).frame


# --------------------------------------------------------------------------- hit, miss, expiry


async def test_miss_then_hit(make_cache):
    cache, _ = make_cache()
    assert await cache.get(ask()) is None
    assert await cache.put(ask(), "Trio is a structured concurrency library.")
    assert await cache.get(ask()) == "Trio is a structured concurrency library."
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["hit_rate"]) == (1, 1, 0.5)
    assert stats["lookup_count"] == 2
    assert stats["entries"] == 1


async def test_an_empty_reply_is_a_hit_not_a_miss(make_cache):
    cache, _ = make_cache()
    await cache.put(ask(), "")
    assert await cache.get(ask()) == ""
    assert cache.stats()["hits"] == 1


async def test_entries_expire_after_ttl_on_the_mock_clock(make_cache, autojump_clock):
    cache, _ = make_cache(ttl=300)
    await cache.put(ask(), "first")
    await trio.sleep(299.5)
    assert await cache.get(ask()) == "first"
    await trio.sleep(0.5)
    assert await cache.get(ask()) is None
    stats = cache.stats()
    assert (stats["expirations"], stats["entries"], stats["raw_bytes"], stats["stored_bytes"]) == (1, 0, 0, 0)


async def test_expire_drops_expired_entries_without_a_lookup(make_cache, autojump_clock):
    cache, _ = make_cache(ttl=60)
    await cache.put(ask("one"), "1")
    await trio.sleep(30)
    await cache.put(ask("two"), "2")
    await trio.sleep(30)
    assert cache.expire() == 1
    assert (cache.stats()["entries"], cache.stats()["raw_bytes"]) == (1, 1)
    await trio.sleep(30)
    assert cache.expire() == 1
    assert cache.stats()["entries"] == 0


async def test_overwrite_keeps_one_entry_and_exact_byte_counts(make_cache):
    cache, lru = make_cache()
    await cache.put(ask(), "short answer")
    await cache.put(ask(), LONG_REPLY)
    stats = cache.stats()
    assert stats["entries"] == 1
    assert stats["raw_bytes"] == len(LONG_REPLY.encode())
    assert stats["stored_bytes"] == len(frame_of(lru, ask()))
    assert await cache.get(ask()) == LONG_REPLY


async def test_clear_empties_the_cache_and_keeps_counters(make_cache):
    cache, _ = make_cache()
    await cache.put(ask(), "x")
    await cache.get(ask())
    await cache.clear()
    assert await cache.get(ask()) is None
    stats = cache.stats()
    assert (stats["entries"], stats["raw_bytes"], stats["stored_bytes"], stats["hits"]) == (0, 0, 0, 1)


async def test_defaults_use_the_public_fastcore_modules():
    cache = ResponseCache()
    assert (cache.name, cache.depends_on, cache.warming) == ("cache", (), None)
    await cache.put(ask(), LONG_REPLY)
    assert await cache.get(ask()) == LONG_REPLY
    assert 0 < cache.stats()["stored_bytes"] < cache.stats()["raw_bytes"]


# --------------------------------------------------------------------------- storage


async def test_long_replies_are_stored_compressed(make_cache, impl):
    cache, lru = make_cache()
    await cache.put(ask(), LONG_REPLY)
    stats = cache.stats()
    assert stats["raw_bytes"] == len(LONG_REPLY.encode()) == 4096
    assert stats["stored_bytes"] < stats["raw_bytes"] / 2
    assert frame_of(lru, ask())[3] == impl.framing.CODEC_DEFLATE
    assert await cache.get(ask()) == LONG_REPLY


@pytest.mark.parametrize(("size", "compressed"), [(20, False), (1023, False), (1024, True)])
async def test_replies_from_1_kb_up_are_compressed_shorter_ones_raw(make_cache, impl, size, compressed):
    cache, lru = make_cache()
    reply = LONG_REPLY[:size]
    await cache.put(ask(), reply)
    frame = frame_of(lru, ask())
    codec = impl.framing.CODEC_DEFLATE if compressed else impl.framing.CODEC_RAW
    assert frame[3] == codec
    stats = cache.stats()
    assert stats["stored_bytes"] == len(frame)
    assert (stats["stored_bytes"] < size) is compressed
    assert await cache.get(ask()) == reply


async def test_non_ascii_replies_count_utf8_bytes(make_cache):
    cache, _ = make_cache()
    await cache.put(ask(), "héllo ✓")
    assert cache.stats()["raw_bytes"] == len("héllo ✓".encode())
    assert await cache.get(ask()) == "héllo ✓"


async def test_maxbytes_evicts_least_recently_used_frames(make_cache):
    reply = "a short reply of about forty bytes......"
    cache, lru = make_cache()
    await cache.put(ask("probe"), reply)
    frame_size = cache.stats()["stored_bytes"]
    cache, lru = make_cache(maxbytes=3 * frame_size)
    for prompt in ("one", "two", "three"):
        await cache.put(ask(prompt), reply)
    assert await cache.get(ask("one")) == reply  # now "two" is the least recent
    await cache.put(ask("four"), reply)
    stats = cache.stats()
    assert stats["evictions"] == 1
    assert stats["stored_bytes"] == 3 * frame_size
    assert stats["raw_bytes"] == 3 * len(reply)
    assert await cache.get(ask("two")) is None
    for prompt in ("one", "three", "four"):
        assert await cache.get(ask(prompt)) == reply


async def test_maxsize_bounds_entries(make_cache):
    cache, _ = make_cache(maxsize=2)
    for prompt in ("one", "two", "three"):
        await cache.put(ask(prompt), prompt)
    assert (cache.stats()["entries"], cache.stats()["evictions"]) == (2, 1)
    assert await cache.get(ask("one")) is None


async def test_a_reply_larger_than_maxbytes_is_not_stored(make_cache):
    cache, _ = make_cache(maxbytes=100)
    assert not await cache.put(ask(), "x" * 200 + "unique tail that keeps it big " * 3)
    assert await cache.put(ask("small"), "fits")
    stats = cache.stats()
    assert (stats["oversized"], stats["entries"]) == (1, 1)


async def test_put_rejects_a_non_string_reply(make_cache):
    cache, _ = make_cache()
    with pytest.raises(TypeError, match="reply must be a str"):
        await cache.put(ask(), b"bytes")
    assert cache.stats()["entries"] == 0


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "variant", ["Tell me about Trio", "  tell   me\tabout\n trio ", "TELL ME ABOUT TRIO", "ｔｅｌｌ ｍｅ ａｂｏｕｔ ｔｒｉｏ"]
)
async def test_case_width_and_whitespace_do_not_change_the_key(make_cache, variant):
    cache, _ = make_cache()
    await cache.put(ask("tell me about trio"), "reply")
    assert cache_key(ask(variant)) == cache_key(ask("tell me about trio"))
    assert await cache.get(ask(variant)) == "reply"


@pytest.mark.parametrize(
    "changes",
    [
        {"prompt": "tell me about asyncio"},
        {"provider": "openai"},
        {"model": "gemini-1.5-pro"},
        {"persona": "You are a pirate."},
        {"history_digest": digest_history([("user", "hi"), ("model", "hello!")])},
        {"attachment_digests": ("sha256:abc",)},
    ],
    ids=lambda changes: next(iter(changes)),
)
async def test_each_field_changes_the_key(make_cache, changes):
    cache, _ = make_cache()
    await cache.put(ask(), "reply")
    assert cache_key(ask(**changes)) != cache_key(ask())
    assert await cache.get(ask(**changes)) is None
    assert await cache.get(ask()) == "reply"


def test_attachment_order_and_count_change_the_key():
    keys = {
        cache_key(ask(attachment_digests=digests))
        for digests in [(), ("a",), ("a", "b"), ("b", "a"), ("a", "a"), ("ab",), ("a", ""), ("",)]
    }
    assert len(keys) == 8


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"provider": "a|b", "model": "c"}, {"provider": "a", "model": "b|c"}),
        ({"provider": "ab", "model": "c"}, {"provider": "a", "model": "bc"}),
        ({"model": "m", "persona": ""}, {"model": "", "persona": "m"}),
        ({"history_digest": "x", "attachment_digests": ()}, {"history_digest": "", "attachment_digests": ("x",)}),
        ({"prompt": "hi", "provider": "gemini"}, {"prompt": "higemini", "provider": ""}),
        ({"attachment_digests": ("a\x00b",)}, {"attachment_digests": ("a", "b")}),
    ],
)
def test_field_encoding_is_unambiguous(one, other):
    assert cache_key(ask(**one)) != cache_key(ask(**other))


_FIELD_TEXT = st.text(alphabet="ab|:\x00é", max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    text=_FIELD_TEXT,
    cuts=st.lists(st.integers(0, 12), min_size=6, max_size=6),
    other_cuts=st.lists(st.integers(0, 12), min_size=6, max_size=6),
)
def test_moving_field_boundaries_always_changes_the_key(text, cuts, other_cuts):
    """Split one string into fields two ways: keys are equal exactly when the fields are."""

    def fields(points):
        points = sorted(min(point, len(text)) for point in points)
        pieces = [text[start:end] for start, end in zip([0, *points], [*points, len(text)])]
        prompt, provider, model, persona, history, *attachments = pieces
        return CacheKeyParts(prompt, provider, model, persona, history, attachments)

    one, other = fields(cuts), fields(other_cuts)
    assert (cache_key(one) == cache_key(other)) == (one == other)


def test_empty_history_digest_is_the_digest_of_no_turns():
    assert digest_history([]) == EMPTY_HISTORY_DIGEST
    assert CacheKeyParts("p", PROVIDER, MODEL, PERSONA).history_digest == EMPTY_HISTORY_DIGEST
    assert digest_history([("user", "ab"), ("model", "c")]) != digest_history([("user", "a"), ("model", "bc")])
    assert digest_history([("user", "why?")]) != digest_history([("model", "why?")])


def test_normalize_prompt():
    assert normalize_prompt("  Hello\u00a0 WORLD\n") == "hello world"
    assert normalize_prompt("Straße") == "strasse"
    with pytest.raises(TypeError):
        normalize_prompt(None)


def test_key_parts_check_their_fields():
    with pytest.raises(TypeError, match="provider must be a str"):
        CacheKeyParts("p", None, MODEL, PERSONA)
    with pytest.raises(TypeError, match="single string"):
        CacheKeyParts("p", PROVIDER, MODEL, PERSONA, attachment_digests="abc")
    with pytest.raises(TypeError, match="only str"):
        CacheKeyParts("p", PROVIDER, MODEL, PERSONA, attachment_digests=["a", 1])
    parts = CacheKeyParts("p", PROVIDER, MODEL, PERSONA, attachment_digests=["a", "b"])
    assert parts.attachment_digests == ("a", "b")
    assert hash(parts) == hash(CacheKeyParts("p", PROVIDER, MODEL, PERSONA, attachment_digests=("a", "b")))
    with pytest.raises(TypeError, match="pairs of str"):
        digest_history([("user", 3)])


# --------------------------------------------------------------------------- bypass


@pytest.mark.parametrize(
    ("prompt", "settings_", "bypass"),
    [
        ("hello", {}, False),
        ("/help", {}, True),
        ("  /reset", {}, True),
        ("what does /help do", {}, False),
        ("hello", {"is_command": True}, True),
        ("hello", {"temperature": 0.7}, False),
        ("hello", {"temperature": 1.0}, False),
        ("hello", {"temperature": 1.01}, True),
        ("hello", {"temperature": 2}, True),
    ],
)
async def test_bypass_rules(make_cache, prompt, settings_, bypass):
    cache, _ = make_cache()
    assert cache.should_bypass(prompt, **settings_) is bypass
    assert cache.stats()["bypasses"] == int(bypass)


async def test_bypass_temperature_is_configurable(make_cache):
    cache, _ = make_cache(bypass_temperature=0.5)
    assert cache.should_bypass("hello", temperature=0.6)
    assert not cache.should_bypass("hello", temperature=0.5)
    assert cache.stats()["bypasses"] == 1


async def test_bypass_rejects_bad_input(make_cache):
    cache, _ = make_cache()
    with pytest.raises(ValueError):
        cache.should_bypass("hello", temperature=float("nan"))
    with pytest.raises(ValueError):
        cache.should_bypass("hello", temperature=-0.1)
    with pytest.raises(TypeError):
        cache.should_bypass(None)
    assert cache.stats()["bypasses"] == 0


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ({"maxsize": 0}, ValueError),
        ({"maxbytes": -1}, ValueError),
        ({"ttl": -5}, ValueError),
        ({"ttl": float("nan")}, ValueError),
        ({"bypass_temperature": float("nan")}, ValueError),
        ({"bypass_temperature": "1"}, TypeError),
        ({"compress_threshold": -1}, ValueError),
        ({"thread_threshold": 1.5}, TypeError),
        ({"expire_every": 0}, ValueError),
        ({"restart": "sometimes"}, ValueError),
    ],
)
def test_bad_settings_are_rejected(make_cache, setting, error):
    with pytest.raises(error):
        make_cache(**setting)


# --------------------------------------------------------------------------- warming


class FakeProvider:
    """``answer(prompt)`` for warming: records prompts, fails on chosen calls."""

    def __init__(self, fail_on: dict[int, Exception] | None = None) -> None:
        self.asked: list[str] = []
        self.fail_on = fail_on or {}

    async def answer(self, prompt: str) -> str:
        self.asked.append(prompt)
        await trio.sleep(1)  # an upstream call takes time (on the mock clock)
        failure = self.fail_on.get(len(self.asked))
        if failure is not None:
            raise failure
        return f"warm answer to {prompt}"


def warm_plan(provider: FakeProvider, **changes) -> WarmPlan:
    return WarmPlan(provider.answer, provider=PROVIDER, model=MODEL, persona=PERSONA, **changes)


async def test_warm_entries_hit_for_a_fresh_user(make_cache, autojump_clock):
    cache, _ = make_cache()
    provider = FakeProvider()
    assert await cache.warm(warm_plan(provider)) == len(DEFAULT_WARM_PROMPTS)
    assert provider.asked == list(DEFAULT_WARM_PROMPTS)
    assert cache.stats()["warmed"] == 6
    # Exactly what the bot builds for a first-time user asking "Hello":
    fresh_user = CacheKeyParts(
        "Hello", PROVIDER, MODEL, PERSONA, history_digest=digest_history([]), attachment_digests=[]
    )
    assert await cache.get(fresh_user) == "warm answer to hello"
    assert await cache.get(ask("  Tell me a JOKE ")) == "warm answer to tell me a joke"
    assert cache.stats()["hits"] == 2


async def test_warm_entries_do_not_hit_with_other_history_or_persona(make_cache, autojump_clock):
    cache, _ = make_cache()
    await cache.warm(warm_plan(FakeProvider()))
    midway = digest_history([("user", "tell me a joke"), ("model", "Why did the chicken...")])
    assert await cache.get(ask("how are you", history_digest=midway)) is None
    assert await cache.get(ask("how are you", persona="You are a pirate.")) is None
    assert await cache.get(ask("how are you", attachment_digests=["img"])) is None
    assert cache.stats()["hits"] == 0


async def test_warming_skips_prompts_already_cached(make_cache, autojump_clock):
    cache, _ = make_cache()
    await cache.put(ask("hello"), "a real user's answer")
    provider = FakeProvider()
    assert await cache.warm(warm_plan(provider)) == 5
    assert "hello" not in provider.asked
    assert await cache.get(ask("hello")) == "a real user's answer"
    assert await cache.warm(warm_plan(provider)) == 0
    assert len(provider.asked) == 5


async def test_warming_stops_at_the_first_quota_error(make_cache, autojump_clock, caplog):
    cache, _ = make_cache()
    provider = FakeProvider(fail_on={3: Overloaded("429 from upstream", retry_after=30)})
    assert await cache.warm(warm_plan(provider)) == 2
    assert provider.asked == list(DEFAULT_WARM_PROMPTS[:3])
    assert cache.stats()["warmed"] == 2
    assert "cache warming stopped at prompt 3 of 6" in caplog.text


async def test_warming_honours_a_custom_quota_test(make_cache, autojump_clock):
    class QuotaExhausted(Exception):
        pass

    cache, _ = make_cache()
    provider = FakeProvider(fail_on={1: QuotaExhausted()})
    plan = warm_plan(provider, is_quota_error=lambda exc: isinstance(exc, QuotaExhausted))
    assert await cache.warm(plan) == 0
    assert provider.asked == ["hello"]


async def test_warming_skips_a_prompt_whose_answer_fails_otherwise(make_cache, autojump_clock, caplog):
    cache, _ = make_cache()
    provider = FakeProvider(fail_on={2: RuntimeError("provider bug")})
    assert await cache.warm(warm_plan(provider)) == 5
    assert len(provider.asked) == 6
    assert await cache.get(ask("hi")) is None
    assert "answering 'hi' failed" in caplog.text


async def test_warming_skips_command_prompts(make_cache, autojump_clock):
    cache, _ = make_cache()
    provider = FakeProvider()
    assert await cache.warm(warm_plan(provider, prompts=["/help", "hello"])) == 1
    assert provider.asked == ["hello"]


def test_warm_plan_checks_its_fields():
    provider = FakeProvider()
    with pytest.raises(TypeError):
        warm_plan(provider, prompts="hello")
    with pytest.raises(TypeError):
        WarmPlan(provider.answer, provider=None, model=MODEL, persona=PERSONA)
    with pytest.raises(TypeError):
        WarmPlan("not callable", provider=PROVIDER, model=MODEL, persona=PERSONA)


async def test_service_warms_in_the_background_and_expires_on_the_wheel(make_cache, autojump_clock):
    wheel = TimerWheel()
    provider = FakeProvider()
    cache, _ = make_cache(ttl=300, timers=wheel, expire_every=60, warming=warm_plan(provider))
    assert cache.depends_on == ("timers",)
    runtime = Runtime([wheel, cache], handle_signals=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runtime.run)
        await runtime.wait_state("cache", ServiceState.READY)
        assert cache.stats()["warmed"] == 0  # ready before warming, which takes 6 s here
        await trio.sleep(10)
        assert cache.stats()["warmed"] == cache.stats()["entries"] == 6
        await trio.sleep(400)  # past the TTL and an expiry tick; no lookup in between
        stats = cache.stats()
        assert (stats["entries"], stats["expirations"], stats["lookup_count"]) == (0, 6, 0)
        assert wheel.stats.runs >= 1
        runtime.request_stop()
    assert wheel.stats.jobs == 0  # the expiry job left with the service


# --------------------------------------------------------------------------- concurrency


class InstrumentedFraming:
    """A framing module whose unpack counts concurrent callers and can block them."""

    def __init__(self, real, *, barrier: threading.Barrier | None = None) -> None:
        self.pack = real.pack
        self.FrameError = real.FrameError
        self._real_unpack = real.unpack
        self._barrier = barrier
        self._guard = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.threads: list[threading.Thread] = []
        self.release = threading.Event()
        self.release.set()
        self.entered: trio.Event | None = None

    def unpack(self, frame, *, max_size):
        with self._guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.threads.append(threading.current_thread())
        try:
            if self.entered is not None:
                trio.from_thread.run_sync(self.entered.set)
            if self._barrier is not None:
                self._barrier.wait()  # returns only once both lookups are in here together
            assert self.release.wait(THREAD_WAIT)
            return self._real_unpack(frame, max_size=max_size)
        finally:
            with self._guard:
                self.active -= 1


async def test_concurrent_lookups_of_a_large_entry_unpack_together_in_threads(make_cache, impl):
    framing = InstrumentedFraming(impl.framing, barrier=threading.Barrier(2, timeout=THREAD_WAIT))
    cache, _ = make_cache(framing=framing)
    await cache.put(ask(), HUGE_REPLY)
    results = []

    async def lookup():
        results.append(await cache.get(ask()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lookup)
        nursery.start_soon(lookup)
    assert results == [HUGE_REPLY, HUGE_REPLY]
    assert framing.max_active == 2
    assert all(thread is not threading.main_thread() for thread in framing.threads)
    assert cache.stats()["hits"] == 2


async def test_small_entries_are_unpacked_on_the_event_loop(make_cache, impl):
    framing = InstrumentedFraming(impl.framing)
    cache, _ = make_cache(framing=framing)
    await cache.put(ask(), LONG_REPLY)
    assert await cache.get(ask()) == LONG_REPLY
    assert framing.threads == [threading.main_thread()]


async def test_a_store_waits_for_lookups_in_flight(make_cache, impl):
    framing = InstrumentedFraming(impl.framing)
    cache, _ = make_cache(framing=framing)
    await cache.put(ask(), HUGE_REPLY)
    framing.release.clear()
    framing.entered = trio.Event()
    seen = []

    async def lookup():
        seen.append(await cache.get(ask()))

    async def store():
        await cache.put(ask(), "newer reply")
        seen.append("stored")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lookup)
        await framing.entered.wait()  # the lookup holds the read lock, inside its thread
        nursery.start_soon(store)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == []  # the store waits for the write lock
        framing.release.set()
    assert seen == [HUGE_REPLY, "stored"]
    framing.entered = None
    assert await cache.get(ask()) == "newer reply"


async def test_a_corrupt_frame_is_a_miss_dropped_and_counted(make_cache, caplog):
    cache, lru = make_cache()
    await cache.put(ask(), LONG_REPLY)
    await cache.put(ask("other"), "other reply")
    key = cache_key(ask())
    stored = lru.peek(key)
    corrupt = bytearray(stored.frame)
    corrupt[-1] ^= 0xFF
    lru.set(key, stored._replace(frame=bytes(corrupt)), size=len(corrupt))
    with caplog.at_level(logging.WARNING, logger="shell.cache"):
        assert await cache.get(ask()) is None
    stats = cache.stats()
    assert (stats["corrupt"], stats["misses"], stats["hits"], stats["entries"]) == (1, 1, 0, 1)
    assert stats["raw_bytes"] == len("other reply")
    assert f"corrupt entry {key} dropped" in caplog.text
    assert await cache.get(ask()) is None
    assert cache.stats()["corrupt"] == 1  # dropped: the second lookup is a plain miss
    assert await cache.put(ask(), LONG_REPLY)
    assert await cache.get(ask()) == LONG_REPLY


async def test_a_corrupt_large_frame_found_in_a_thread_is_a_miss(make_cache):
    cache, lru = make_cache()
    await cache.put(ask(), HUGE_REPLY)
    key = cache_key(ask())
    stored = lru.peek(key)
    lru.set(key, stored._replace(frame=stored.frame[:-10]), size=len(stored.frame) - 10)
    assert await cache.get(ask()) is None
    assert (cache.stats()["corrupt"], cache.stats()["entries"], cache.stats()["raw_bytes"]) == (1, 0, 0)


# --------------------------------------------------------------------------- statistics


async def test_stats_before_any_use(make_cache):
    cache, _ = make_cache()
    assert cache.stats() == {
        "hits": 0,
        "misses": 0,
        "hit_rate": 0.0,
        "bypasses": 0,
        "corrupt": 0,
        "oversized": 0,
        "warmed": 0,
        "evictions": 0,
        "expirations": 0,
        "entries": 0,
        "raw_bytes": 0,
        "stored_bytes": 0,
        "lookup_count": 0,
        "lookup_mean_us": 0.0,
        "lookup_p50_us": 0.0,
        "lookup_p99_us": 0.0,
        "lookup_max_us": 0.0,
    }


async def test_hit_rate_and_latency_are_measured(make_cache):
    cache, _ = make_cache()
    await cache.put(ask(), "r")
    for _ in range(3):
        await cache.get(ask())
    await cache.get(ask("unknown"))
    stats = cache.stats()
    assert stats["hit_rate"] == 0.75
    assert stats["lookup_count"] == 4
    assert 0 < stats["lookup_p50_us"] <= stats["lookup_p99_us"] <= stats["lookup_max_us"]
    assert 0 < stats["lookup_mean_us"] <= stats["lookup_max_us"]
