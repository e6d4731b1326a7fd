"""fastcore.patterns: PatternCache on both implementations, plus a model check and twin-vs-compiled."""

from __future__ import annotations

import enum
import pickle
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import fastcore
from conftest import load_impl
from fastcore._select import pure_forced


@pytest.fixture
def mod(impl_kind):
    return load_impl("patterns", impl_kind)


def test_public_module_exports_pattern_cache():
    import fastcore.patterns

    assert fastcore.patterns.__all__ == ["PatternCache"]
    assert fastcore.patterns.PatternCache is fastcore.patterns._impl.PatternCache


def test_compile_hit_returns_the_cached_pattern(mod):
    pc = mod.PatternCache()
    first = pc.compile(r"\d+")
    assert isinstance(first, re.Pattern) and first.pattern == r"\d+" and first.flags == re.compile(r"\d+").flags
    assert pc.compile(r"\d+") is first
    assert pc.stats() == {"hits": 1, "misses": 1, "evictions": 0, "entries": 1, "maxsize": 1000}
    assert pc.maxsize == 1000 and len(pc) == 1 and "maxsize=1000" in repr(pc)


def test_least_recently_used_pattern_is_evicted(mod):
    pc = mod.PatternCache(2)
    pc.compile("a")
    pc.compile("b")
    pc.compile("a")  # b is now the least recent
    pc.compile("c")
    assert "a" in pc and "c" in pc and "b" not in pc
    assert pc.stats() == {"hits": 1, "misses": 3, "evictions": 1, "entries": 2, "maxsize": 2}


def test_contains_does_not_promote_or_count(mod):
    pc = mod.PatternCache(2)
    pc.compile("a")
    pc.compile("b")
    assert "a" in pc and ("a", 0) in pc and ("a", re.I) not in pc
    pc.compile("c")  # a is still the least recent
    assert "a" not in pc
    assert pc.stats()["hits"] == 0


def test_str_and_bytes_are_distinct(mod):
    pc = mod.PatternCache()
    text, raw = pc.compile("a."), pc.compile(b"a.")
    assert text.pattern == "a." and raw.pattern == b"a."
    assert len(pc) == 2 and "a." in pc and b"a." in pc and (b"a.", 0) in pc
    assert pc.compile(b"a.") is raw and pc.compile("a.") is text
    assert pc.search(b"a.", b"xab").group() == b"ab"


def test_flags_are_distinct_and_normalised(mod):
    class Flag(enum.IntFlag):
        IGNORE = 2

    pc = mod.PatternCache()
    plain = pc.compile("a")
    folded = pc.compile("a", re.IGNORECASE)
    assert plain is not folded and folded.flags & re.IGNORECASE
    assert pc.compile("a", 2) is folded
    assert pc.compile("a", Flag.IGNORE) is folded
    assert pc.compile("a", flags=re.I) is folded
    assert ("a", re.I) in pc and ("a", 2) in pc and ("a", re.M) not in pc
    assert len(pc) == 2
    assert pc.compile(b"a", re.I) is not folded


def test_helpers_match_re(mod):
    pc = mod.PatternCache()
    text = "ab12 cd345"
    assert pc.search(r"\d+", text).group() == "12"
    assert pc.match(r"[a-z]+", text).group() == "ab"
    assert pc.match(r"\d", text) is None
    assert pc.fullmatch(r"\w+", "abc").group() == "abc"
    assert pc.fullmatch(r"\w", "abc") is None
    assert pc.sub(r"\d", "#", text) == "ab## cd###"
    assert pc.sub(r"\d", "#", text, 2) == "ab## cd345"
    assert pc.sub(r"\d", lambda m: str(int(m.group()) + 1), "19") == "210"
    assert pc.findall(r"\d+", text) == ["12", "345"]
    assert pc.findall(r"A", "aAa", re.I) == ["a", "A", "a"]
    assert pc.stats()["entries"] == 6  # \d+ [a-z]+ \d \w+ \w (A, I)


def test_invalid_pattern_raises_and_is_not_cached(mod):
    pc = mod.PatternCache()
    for bad in ("(", "[a-", "a{2,1}", b"("):
        with pytest.raises(re.error):
            pc.compile(bad)
        assert bad not in pc
    with pytest.raises(re.error):
        pc.search("(", "x")
    assert len(pc) == 0
    assert pc.stats() == {"hits": 0, "misses": 5, "evictions": 0, "entries": 0, "maxsize": 1000}


def test_incompatible_flags_raise_and_are_not_cached(mod):
    pc = mod.PatternCache()
    with pytest.raises(ValueError):
        pc.compile("a", re.LOCALE)  # LOCALE needs a bytes pattern
    assert len(pc) == 0
    assert pc.compile(b"a", re.LOCALE).flags & re.LOCALE


@pytest.mark.parametrize("pattern", [1, None, 1.5, bytearray(b"a"), re.compile("a"), ["a"]])
def test_non_string_pattern_is_type_error(mod, pattern):
    pc = mod.PatternCache()
    with pytest.raises(TypeError):
        pc.compile(pattern)
    with pytest.raises(TypeError):
        pc.search(pattern, "a")
    with pytest.raises(TypeError):
        (pattern, 0) in pc
    assert len(pc) == 0 and pc.stats()["misses"] == 0


@pytest.mark.parametrize("flags", ["i", 1.5, None, b"\x02"])
def test_non_integer_flags_are_type_error(mod, flags):
    pc = mod.PatternCache()
    with pytest.raises(TypeError):
        pc.compile("a", flags)
    with pytest.raises(TypeError):
        ("a", flags) in pc
    assert len(pc) == 0


def test_str_subclass_pattern(mod):
    class Text(str):
        pass

    pc = mod.PatternCache()
    compiled = pc.compile(Text("a+"))
    assert compiled.match("aa") and "a+" in pc
    assert pc.compile("a+") is compiled


def test_debug_flag_bypasses_cache(mod, capsys):
    pc = mod.PatternCache()
    pc.compile("a", re.DEBUG)
    pc.compile("a", re.DEBUG)
    assert capsys.readouterr().out.count("SUCCESS") == 2  # debug output printed twice
    assert len(pc) == 0 and pc.stats()["hits"] == 0 and pc.stats()["misses"] == 0


def test_clear_keeps_statistics(mod):
    pc = mod.PatternCache()
    pc.compile("a")
    pc.compile("a")
    pc.clear()
    assert len(pc) == 0 and "a" not in pc
    assert pc.stats() == {"hits": 1, "misses": 1, "evictions": 0, "entries": 0, "maxsize": 1000}
    pc.compile("a")
    assert pc.stats()["misses"] == 2


@pytest.mark.parametrize("maxsize, exc", [(0, ValueError), (-5, ValueError), ("10", TypeError), (2.5, TypeError), (True, TypeError)])
def test_bad_maxsize(mod, maxsize, exc):
    with pytest.raises(exc):
        mod.PatternCache(maxsize)


def test_uninitialised_instance_does_not_crash(mod):
    pc = mod.PatternCache.__new__(mod.PatternCache)  # __init__ never ran
    for op in (lambda: pc.compile("a"), lambda: "a" in pc, pc.stats, pc.clear, lambda: len(pc)):
        try:
            op()
        except Exception:  # pure twin: AttributeError; compiled: a default-sized cache
            pass


def test_cannot_pickle(mod):
    with pytest.raises(TypeError):
        pickle.dumps(mod.PatternCache())


def test_str_and_bytes_keys_never_compare_under_python_bb(impl_kind):
    # hash("a") == hash(b"a"): a naive key would compare str with bytes, which
    # -bb turns into an error.
    if impl_kind == "compiled" and pure_forced():
        pytest.skip("TRIOBOT_PURE is set: compiled modules not under test")
    module = {"compiled": "fastcore._patterns_c", "pure": "fastcore._patterns_py"}[impl_kind]
    code = (
        f"import re, {module} as m\n"
        "pc = m.PatternCache()\n"
        "for p in ('a', b'a', 'ab', b'ab'):\n"
        "    for f in (0, 2):\n"
        "        pc.compile(p, f); pc.compile(p, f)\n"
        "assert len(pc) == 8 and pc.stats()['hits'] == 8, pc.stats()\n"
        "assert ('a', 2) in pc and (b'a', 2) in pc and b'ab' in pc\n"
    )
    root = str(Path(fastcore.__file__).resolve().parent.parent)
    subprocess.run([sys.executable, "-bb", "-c", code], check=True, cwd=root, env={"PYTHONPATH": root})


# -- stateful: model vs pure vs compiled -----------------------------------------------


def _implementations():
    impls = [load_impl("patterns", "pure")]
    if not pure_forced():
        impls.append(load_impl("patterns", "compiled"))
    return impls


PATTERNS = st.sampled_from(["a", "b+", r"\d", "(", b"a", b"b+", b"[", "a|b"])
FLAGS = st.sampled_from([0, re.I, re.M, 2])


def _outcome(fn):
    try:
        compiled = fn()
    except Exception as exc:  # the type is what must agree
        return ("raise", type(exc))
    return ("ok", compiled.pattern, compiled.flags) if isinstance(compiled, re.Pattern) else ("ok", compiled)


class PatternMachine(RuleBasedStateMachine):
    """Model (an OrderedDict over (type, pattern, flags)), twin and compiled cache in lockstep."""

    @initialize(maxsize=st.integers(1, 4))
    def setup(self, maxsize):
        self.maxsize = maxsize
        self.model = OrderedDict()
        self.stats = {"hits": 0, "misses": 0, "evictions": 0}
        self.caches = [impl.PatternCache(maxsize) for impl in _implementations()]

    def _model_compile(self, pattern, flags):
        key = (type(pattern), pattern, int(flags))
        if key in self.model:
            self.model.move_to_end(key)
            self.stats["hits"] += 1
            return self.model[key]
        self.stats["misses"] += 1
        compiled = re.compile(pattern, flags)
        self.model[key] = compiled
        if len(self.model) > self.maxsize:
            self.model.popitem(last=False)
            self.stats["evictions"] += 1
        return compiled

    @rule(pattern=PATTERNS, flags=FLAGS)
    def compile(self, pattern, flags):
        expected = _outcome(lambda: self._model_compile(pattern, flags))
        for pc in self.caches:
            assert _outcome(lambda pc=pc: pc.compile(pattern, flags)) == expected

    @rule(pattern=PATTERNS, flags=FLAGS)
    def search(self, pattern, flags):
        text = "xAb1b" if isinstance(pattern, str) else b"xAb1b"
        outcome = _outcome(lambda: self._model_compile(pattern, flags))
        expected = outcome if outcome[0] == "raise" else ("ok", re.search(pattern, text, flags))
        for pc in self.caches:
            found = _outcome(lambda pc=pc: pc.search(pattern, text, flags))
            if expected[0] == "ok":
                assert found[0] == "ok" and (found[1] and found[1].span()) == (expected[1] and expected[1].span())
            else:
                assert found == expected

    @rule()
    def clear(self):
        self.model.clear()
        for pc in self.caches:
            pc.clear()

    @invariant()
    def agree(self):
        if not hasattr(self, "model"):
            return
        expected = dict(self.stats, entries=len(self.model), maxsize=self.maxsize)
        candidates = [(p, f) for p in ["a", "b+", r"\d", b"a", b"b+", "a|b"] for f in (0, re.I, re.M)]
        for pc in self.caches:
            assert pc.stats() == expected
            assert len(pc) == len(self.model)
            for pattern, flags in candidates:
                assert ((pattern, flags) in pc) == ((type(pattern), pattern, int(flags)) in self.model)


TestPatternMachine = PatternMachine.TestCase
TestPatternMachine.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
