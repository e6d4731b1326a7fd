"""Tests for fastcore.framing: frames (pack/unpack) and the zlib-stream Inflater.

Every behavioural test runs on the compiled module and on its pure-Python
twin; cross-implementation tests check that frames and outcomes agree.
"""

from __future__ import annotations

import math
import random
import tracemalloc
import zlib
from array import array
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import load_impl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import fastcore.framing

SYNC_FLUSH_SUFFIX = b"\x00\x00\xff\xff"
MB = 1_000_000


@pytest.fixture
def mod(impl_kind):
    return load_impl("framing", impl_kind)


@pytest.fixture
def both(impl_kind):
    """(module under test, the other implementation) for cross-checks."""
    other = "pure" if impl_kind == "compiled" else "compiled"
    return load_impl("framing", impl_kind), load_impl("framing", other)


def impls():
    return [load_impl("framing", kind) for kind in ("compiled", "pure")]


# -- helpers ----------------------------------------------------------------------

VOCAB = (
    "the a to and of i you it is that in for on with this be are was have not but what can do "
    "bot model prompt reply message channel server token hello thanks please yes no maybe today "
    "python error run test build deploy discord chat user admin role emoji"
).split()


def chat_text(size: int, seed: int = 1) -> bytes:
    """English-looking chat text from a fixed vocabulary (compresses about 2.5x)."""
    rng = random.Random(seed)
    parts, total = [], 0
    while total < size:
        sentence = " ".join(rng.choice(VOCAB) for _ in range(rng.randint(4, 14)))
        sentence = sentence.capitalize() + rng.choice(".!?") + " "
        parts.append(sentence)
        total += len(sentence)
    return "".join(parts).encode()[:size]


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def make_frame(
    codec: int, declared: int, crc: int, payload: bytes, *, magic=b"\xfa\xce", version=1
) -> bytes:
    return magic + bytes((version, codec)) + varint(declared) + crc.to_bytes(4, "little") + payload


def raw_deflate(data: bytes, level: int = 6) -> bytes:
    return zlib.compress(data, level, -15)


def parse_header(frame: bytes):
    """(codec, declared length, crc, payload) of a well-formed frame."""
    pos, declared, shift = 4, 0, 0
    while True:
        byte = frame[pos]
        pos += 1
        declared |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    crc = int.from_bytes(frame[pos : pos + 4], "little")
    return frame[3], declared, crc, frame[pos + 4 :]


def outcome(module, call, *args, **kwargs):
    """("ok", result) or ("FrameError", message) for one call."""
    try:
        return "ok", call(*args, **kwargs)
    except module.FrameError as exc:
        return "FrameError", str(exc)


def same_zlib() -> bool:
    compiled, pure = impls()
    return compiled._ZLIB_RUNTIME_VERSION == pure._ZLIB_RUNTIME_VERSION


@st.composite
def payloads(draw):
    """(data, threshold): random, text, zero or mixed data, often sized near the threshold."""
    threshold = draw(st.sampled_from([0, 1, 16, 64, 1024]))
    size = draw(st.integers(max(0, threshold - 3), threshold + 3) | st.integers(0, 6000))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["random", "text", "zeros", "mixed"]))
    rng = random.Random(seed)
    if kind == "random":
        data = rng.randbytes(size)
    elif kind == "text":
        data = chat_text(size, seed)
    elif kind == "zeros":
        data = bytes(size)
    else:
        half = size // 2
        data = rng.randbytes(half) + chat_text(size - half, seed)
    return data, threshold


# -- the public module ------------------------------------------------------------


def test_public_module_exports_one_implementation():
    names = {"pack", "unpack", "Inflater", "FrameError"} | {
        "MAGIC", "VERSION", "CODEC_RAW", "CODEC_DEFLATE"
    }
    assert set(fastcore.framing.__all__) == names
    impl = fastcore.framing._impl
    for name in names:
        assert getattr(fastcore.framing, name) is getattr(impl, name)
    assert issubclass(fastcore.framing.FrameError, ValueError)


def test_constants(mod):
    assert (mod.MAGIC, mod.VERSION, mod.CODEC_RAW, mod.CODEC_DEFLATE) == (b"\xfa\xce", 1, 0, 1)


# -- pack / unpack round trips ----------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    case=payloads(),
    level=st.sampled_from([-1, 0, 1, 6, 9]),
    min_saving=st.sampled_from([0, 0.0, 0.1, 0.5, 0.99]),
)
def test_round_trip_and_cross_implementation(case, level, min_saving):
    data, threshold = case
    compiled, pure = impls()
    options = {"threshold": threshold, "level": level, "min_saving": min_saving}
    frames = [m.pack(data, **options) for m in (compiled, pure)]
    for frame in frames:
        for module in (compiled, pure):  # each frame unpacks with both implementations
            assert module.unpack(frame, max_size=len(data)) == data
        codec, declared, crc, payload = parse_header(frame)
        assert declared == len(data)
        assert crc == zlib.crc32(data)
        # The raw/deflate choice follows the rule, checked against zlib itself.
        limit = len(data) - math.ceil(len(data) * min_saving)
        worth_it = len(data) >= threshold and len(raw_deflate(data, level)) <= limit
        assert codec == (1 if worth_it else 0)
        assert payload == (raw_deflate(data, level) if worth_it else data)
    if same_zlib():
        assert frames[0] == frames[1]


def test_round_trip_bytes_like_inputs(mod):
    text = chat_text(3000)
    for data in (text, bytearray(text), memoryview(text), memoryview(bytearray(text))[10:2010]):
        frame = mod.pack(data)
        assert type(frame) is bytes
        assert mod.unpack(frame, max_size=len(text)) == bytes(data)
        assert type(mod.unpack(bytearray(frame), max_size=len(text))) is bytes
        assert mod.unpack(memoryview(frame), max_size=len(text)) == bytes(data)
    # A contiguous memoryview of another format packs its raw bytes.
    words = array("I", range(1000))
    assert mod.unpack(mod.pack(memoryview(words)), max_size=4000) == words.tobytes()
    two_d = memoryview(bytes(range(256)) * 4).cast("B", (32, 32))
    assert mod.unpack(mod.pack(two_d), max_size=1024) == two_d.tobytes()


def test_empty_data(mod):
    frame = mod.pack(b"")
    assert frame == b"\xfa\xce\x01\x00\x00\x00\x00\x00\x00"
    assert mod.unpack(frame, max_size=0) == b""
    # threshold=0 tries to compress nothing; deflate's 2 bytes do not save anything.
    assert mod.pack(b"", threshold=0, min_saving=0) == frame


def test_large_payloads_use_the_unlocked_path(both):
    mod, other = both
    text = chat_text(600_000, seed=7)  # above the compiled module's no-GIL threshold
    frame = mod.pack(text)
    assert frame[3] == 1
    assert other.unpack(frame, max_size=len(text)) == text
    assert mod.unpack(frame, max_size=len(text)) == text
    noise = random.Random(3).randbytes(300_000)
    frame = mod.pack(noise)
    assert frame[3] == 0
    assert mod.unpack(frame, max_size=len(noise)) == noise


def test_level_changes_between_calls(mod):
    """The compiled module reuses one deflate context across levels."""
    text = chat_text(5000, seed=5)
    for level in (1, 9, 0, 6, -1, 3, 3, 8, 1):
        frame = mod.pack(text, level=level)
        assert parse_header(frame)[3] == (raw_deflate(text, level) if level != 0 else text)
        assert mod.unpack(frame, max_size=len(text)) == text


def test_failed_calls_leave_no_state_behind(mod):
    """Calls that stop midway (raw fallback, bad payloads) do not disturb the next call
    (the compiled module reuses one deflate and one inflate context)."""
    text = chat_text(4000, seed=9)
    good = mod.pack(text)
    payload, crc = raw_deflate(text), zlib.crc32(text)
    failing = [
        make_frame(1, len(text), crc, payload[: len(payload) // 2]),  # truncated stream
        make_frame(1, 100, crc, payload),  # stops at the declared size
        make_frame(1, len(text), crc, b"\x05" + payload[1:]),  # corrupt
    ]
    noise = random.Random(1).randbytes(4000)
    for bad in failing:
        assert mod.pack(noise)[3] == mod.CODEC_RAW  # deflate ran out of room midway
        assert mod.pack(text, min_saving=0.9)[3] == mod.CODEC_RAW
        with pytest.raises(mod.FrameError):
            mod.unpack(bad, max_size=10_000)
        assert mod.pack(text) == good
        assert mod.unpack(good, max_size=len(text)) == text


def test_threads_share_the_module_safely(mod):
    texts = [chat_text(size, seed=size) for size in (100, 3000, 20_000, 300_000)]
    expected = [mod.pack(text) for text in texts]

    def work(offset):
        for round_ in range(12):
            index = (offset + round_) % len(texts)
            assert mod.pack(texts[index]) == expected[index]
            assert mod.unpack(expected[index], max_size=len(texts[index])) == texts[index]
        return True

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(4)))


# -- raw vs deflate ---------------------------------------------------------------


def test_incompressible_data_stays_raw(mod):
    noise = random.Random(42).randbytes(5000)
    frame = mod.pack(noise)
    assert frame[3] == mod.CODEC_RAW
    assert frame.endswith(noise)
    assert len(frame) == len(noise) + 2 + 1 + 1 + 2 + 4


def test_text_above_threshold_compresses(mod):
    text = chat_text(4096)
    frame = mod.pack(text)
    assert frame[3] == mod.CODEC_DEFLATE
    assert len(frame) < len(text) * 0.6


def test_threshold_boundary(mod):
    text = chat_text(2000)
    assert mod.pack(text[:1023])[3] == mod.CODEC_RAW
    assert mod.pack(text[:1024])[3] == mod.CODEC_DEFLATE
    assert mod.pack(text, threshold=2001)[3] == mod.CODEC_RAW
    assert mod.pack(text, threshold=10**30)[3] == mod.CODEC_RAW  # huge thresholds are fine
    assert mod.pack(text[:200], threshold=0)[3] == mod.CODEC_DEFLATE


def test_min_saving_boundary_is_inclusive(mod):
    """A compressed payload exactly at the allowed size is kept; one byte more is not."""
    text = chat_text(3000, seed=11)
    size, compressed = len(text), len(raw_deflate(text))
    exactly = (size - compressed - 0.5) / size  # ceil(size * exactly) == size - compressed
    assert size - math.ceil(size * exactly) == compressed
    assert mod.pack(text, min_saving=exactly)[3] == mod.CODEC_DEFLATE
    short_by_one = (size - compressed + 0.5) / size
    assert mod.pack(text, min_saving=short_by_one)[3] == mod.CODEC_RAW
    assert mod.pack(text, min_saving=0.99)[3] == mod.CODEC_RAW
    assert mod.pack(text, level=0, min_saving=0)[3] == mod.CODEC_RAW  # stored blocks never save


# -- argument validation ----------------------------------------------------------


@pytest.mark.parametrize("data", ["text", 12, None, [1, 2], array("b", b"abc")])
def test_pack_rejects_non_bytes(mod, data):
    with pytest.raises(TypeError):
        mod.pack(data)


def test_non_contiguous_memoryview_is_a_type_error(mod):
    view = memoryview(b"abcdefgh")[::2]
    with pytest.raises(TypeError):
        mod.pack(view)
    with pytest.raises(TypeError):
        mod.unpack(view, max_size=10)
    with pytest.raises(TypeError):
        mod.Inflater(10).feed(view)


def test_released_memoryview_is_a_value_error(mod):
    view = memoryview(b"abc")
    view.release()
    with pytest.raises(ValueError):
        mod.pack(view)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"threshold": -1}, ValueError),
        ({"threshold": 1.5}, TypeError),
        ({"threshold": True}, TypeError),
        ({"threshold": "1"}, TypeError),
        ({"threshold": None}, TypeError),
        ({"level": 10}, ValueError),
        ({"level": -2}, ValueError),
        ({"level": 2**70}, ValueError),
        ({"level": 6.0}, TypeError),
        ({"level": False}, TypeError),
        ({"min_saving": 1.0}, ValueError),
        ({"min_saving": 1}, ValueError),
        ({"min_saving": -0.1}, ValueError),
        ({"min_saving": math.nan}, ValueError),
        ({"min_saving": math.inf}, ValueError),
        ({"min_saving": 10**400}, ValueError),
        ({"min_saving": "0.1"}, TypeError),
        ({"min_saving": True}, TypeError),
        ({"min_saving": None}, TypeError),
    ],
)
def test_pack_rejects_bad_arguments(mod, kwargs, error):
    with pytest.raises(error):
        mod.pack(b"data", **kwargs)


def test_pack_arguments_are_keyword_only(mod):
    with pytest.raises(TypeError):
        mod.pack(b"data", 10)


@pytest.mark.parametrize(
    ("max_size", "error"),
    [(-1, ValueError), (1.0, TypeError), (True, TypeError), (None, TypeError)],
)
def test_unpack_rejects_bad_max_size(mod, max_size, error):
    with pytest.raises(error):
        mod.unpack(mod.pack(b"x"), max_size=max_size)


def test_unpack_requires_keyword_max_size(mod):
    frame = mod.pack(b"x")
    with pytest.raises(TypeError):
        mod.unpack(frame)
    with pytest.raises(TypeError):
        mod.unpack(frame, 10)
    assert mod.unpack(frame, max_size=2**100) == b"x"  # huge limits are fine


@pytest.mark.parametrize("frame", ["text", 5, None, [0xFA, 0xCE]])
def test_unpack_rejects_non_bytes(mod, frame):
    with pytest.raises(TypeError):
        mod.unpack(frame, max_size=10)


# -- FrameError cases -------------------------------------------------------------


def sample_frames(mod):
    """A raw frame, a deflate frame with a 2-byte varint, an empty frame."""
    raw = mod.pack(b"hello, frames")
    deflated = mod.pack(chat_text(1500, seed=3))
    assert raw[3] == 0 and deflated[3] == 1
    return [raw, deflated, mod.pack(b"")]


def test_frame_error_is_a_value_error(mod):
    assert issubclass(mod.FrameError, ValueError)


def test_truncation_at_every_position(mod):
    for frame in sample_frames(mod):
        for cut in range(len(frame)):
            with pytest.raises(mod.FrameError):
                mod.unpack(frame[:cut], max_size=10_000)


def test_every_single_bit_flip_is_detected(mod):
    """A flipped bit raises FrameError, or (padding and unused bits of a deflate
    stream carry no information) still yields exactly the original data."""
    text = chat_text(1500, seed=3)
    raw, deflated = mod.pack(b"hello, frames"), mod.pack(text)
    header_size = len(deflated) - len(parse_header(deflated)[3])
    harmless = 0
    for frame, data in ((raw, b"hello, frames"), (deflated, text)):
        for index in range(len(frame)):
            for bit in range(8):
                damaged = bytearray(frame)
                damaged[index] ^= 1 << bit
                try:
                    result = mod.unpack(bytes(damaged), max_size=10_000)
                except mod.FrameError:
                    continue
                assert frame is deflated and index >= header_size
                assert result == data
                harmless += 1
    assert harmless < 10


def test_header_errors(mod):
    data = b"payload"
    crc = zlib.crc32(data)
    cases = {
        "bad magic": make_frame(0, len(data), crc, data, magic=b"\xfa\xcf"),
        "unsupported frame version 2": make_frame(0, len(data), crc, data, version=2),
        "unsupported frame version 0": make_frame(0, len(data), crc, data, version=0),
        "unknown codec 2": make_frame(2, len(data), crc, data),
        "unknown codec 255": make_frame(255, len(data), crc, data),
    }
    for expected, frame in cases.items():
        with pytest.raises(mod.FrameError, match=expected):
            mod.unpack(frame, max_size=100)
    with pytest.raises(mod.FrameError, match="bad magic"):
        mod.unpack(b"PK\x03\x04", max_size=100)


def test_crc_mismatch(mod):
    data = b"payload"
    with pytest.raises(mod.FrameError, match="CRC mismatch"):
        mod.unpack(make_frame(0, len(data), zlib.crc32(data) ^ 1, data), max_size=100)
    text = chat_text(2000)
    with pytest.raises(mod.FrameError, match="CRC mismatch"):
        bad_crc = zlib.crc32(text) ^ 0x80000000
        mod.unpack(make_frame(1, len(text), bad_crc, raw_deflate(text)), max_size=10_000)


def test_trailing_bytes(mod):
    for frame in sample_frames(mod):
        with pytest.raises(mod.FrameError, match="trailing bytes"):
            mod.unpack(frame + b"\x00", max_size=10_000)


def test_declared_length_over_max_size(mod):
    text = chat_text(2000)
    for frame in (mod.pack(text), mod.pack(text, threshold=10**6)):
        assert mod.unpack(frame, max_size=2000) == text
        with pytest.raises(mod.FrameError, match="exceeds max_size"):
            mod.unpack(frame, max_size=1999)


def test_decompressed_size_differs_from_declared(mod):
    text = chat_text(2000)
    payload, crc = raw_deflate(text), zlib.crc32(text)
    with pytest.raises(mod.FrameError, match="more than the declared 1999"):
        mod.unpack(make_frame(1, 1999, crc, payload), max_size=10_000)
    with pytest.raises(mod.FrameError, match="inflates to 2000 bytes, declared 2001"):
        mod.unpack(make_frame(1, 2001, crc, payload), max_size=10_000)
    with pytest.raises(mod.FrameError, match="more than the declared 0"):
        mod.unpack(make_frame(1, 0, 0, payload), max_size=10_000)


def test_declared_length_impossible_for_the_payload(mod):
    """Deflate expands at most 1032x: a bigger claim is rejected before allocating."""
    payload = raw_deflate(b"x")
    with pytest.raises(mod.FrameError, match="cannot inflate"):
        mod.unpack(make_frame(1, 1032 * len(payload) + 1, 0, payload), max_size=10**12)
    tracemalloc.start()
    try:
        with pytest.raises(mod.FrameError, match="cannot inflate"):
            mod.unpack(make_frame(1, 10**11, 0, payload), max_size=10**12)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_deflate_codec_accepts_any_valid_raw_deflate_stream(mod):
    text = chat_text(3000)
    for level in (0, 1, 9):
        frame = make_frame(1, len(text), zlib.crc32(text), raw_deflate(text, level))
        assert mod.unpack(frame, max_size=len(text)) == text
    assert mod.unpack(make_frame(1, 0, 0, raw_deflate(b"")), max_size=0) == b""


def test_corrupt_deflate_payload(mod):
    with pytest.raises(mod.FrameError, match="corrupt deflate payload"):
        mod.unpack(make_frame(1, 10, 0, b"\xff" * 20), max_size=100)


def test_truncated_deflate_stream(mod):
    text = chat_text(2000)
    payload = raw_deflate(text)
    for cut in (1, len(payload) // 2, len(payload) - 1):
        with pytest.raises(mod.FrameError):
            mod.unpack(make_frame(1, len(text), zlib.crc32(text), payload[:cut]), max_size=10_000)
    with pytest.raises(mod.FrameError, match="ends early"):
        mod.unpack(make_frame(1, len(text), zlib.crc32(text), payload[:-1]), max_size=10_000)


def test_varint_errors(mod):
    header = b"\xfa\xce\x01\x00"
    crc = b"\x00\x00\x00\x00"
    with pytest.raises(mod.FrameError, match="overflows 64 bits"):
        mod.unpack(header + b"\xff" * 10 + b"\x01" + crc, max_size=100)  # 11 bytes
    with pytest.raises(mod.FrameError, match="overflows 64 bits"):
        mod.unpack(header + b"\xff" * 9 + b"\x02" + crc, max_size=100)  # 2**64
    with pytest.raises(mod.FrameError, match="overflows 64 bits"):
        mod.unpack(header + b"\x80" * 20, max_size=100)
    with pytest.raises(mod.FrameError, match="exceeds max_size"):
        mod.unpack(header + b"\xff" * 9 + b"\x01" + crc, max_size=2**70)  # 2**64 - 1 is valid
    with pytest.raises(mod.FrameError, match="not minimally encoded"):
        mod.unpack(header + b"\x80\x00" + crc, max_size=100)
    with pytest.raises(mod.FrameError, match="length missing"):
        mod.unpack(header + b"\x80\x80", max_size=100)
    # A well-formed multi-byte length.
    data = bytes(300)
    frame = header + varint(300) + zlib.crc32(data).to_bytes(4, "little") + data
    assert mod.unpack(frame, max_size=300) == data


def test_error_messages_match_across_implementations():
    compiled, pure = impls()
    text = chat_text(2000)
    payload, crc = raw_deflate(text), zlib.crc32(text)
    frames = [
        b"",
        b"\xfa",
        b"\xfa\xce\x01",
        make_frame(0, 3, 0, b"abc", version=9),
        make_frame(1, 1999, crc, payload),
        make_frame(1, 2001, crc, payload),
        make_frame(1, 2000, crc, payload + b"xy"),
        make_frame(1, 2000, crc, payload[:-3]),
        make_frame(1, 2000, crc ^ 5, payload),
        make_frame(0, 2000, crc, text[:-1]),
        make_frame(0, 2000, crc, text + b"z"),
        make_frame(1, 10**9, crc, payload),
    ]
    for frame in frames:
        results = [outcome(m, m.unpack, frame, max_size=10**8) for m in (compiled, pure)]
        assert results[0] == results[1]
        assert results[0][0] == "FrameError"


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(0, 3000),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete", "truncate", "extend"]),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_frames_fail_the_same_way(seed, size, edits):
    """Both implementations agree on a mutated frame: same data, or FrameError, same reason."""
    compiled, pure = impls()
    data = chat_text(size, seed) if seed % 2 else random.Random(seed).randbytes(size)
    frame = bytearray(pure.pack(data, threshold=64))
    for op, where, value in edits:
        where %= len(frame) + 1
        if op == "set" and where < len(frame):
            frame[where] = value
        elif op == "insert":
            frame.insert(where, value)
        elif op == "delete" and where < len(frame):
            del frame[where]
        elif op == "truncate":
            del frame[where:]
        elif op == "extend":
            frame += bytes([value]) * (where % 7 + 1)
    results = [outcome(m, m.unpack, bytes(frame), max_size=4000) for m in (compiled, pure)]
    (kind_c, detail_c), (kind_p, detail_p) = results
    assert kind_c == kind_p
    if kind_c == "ok":
        assert detail_c == detail_p
    elif not (detail_c.startswith("corrupt") or detail_p.startswith("corrupt")):
        # zlib's own error texts differ between the zlib module and the C API.
        assert detail_c == detail_p


# -- decompression bombs ----------------------------------------------------------


@pytest.fixture(scope="module")
def zeros_50mb_deflated():
    """50 MB of zeros as raw deflate (level 1: quick to build, still 200:1)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    block = bytes(MB)
    return b"".join(compressor.compress(block) for _ in range(50)) + compressor.flush()


def peak_allocation(call) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_bomb_declared_huge_is_rejected_unallocated(mod, zeros_50mb_deflated):
    frame = make_frame(1, 50 * MB, 0, zeros_50mb_deflated)

    def attempt():
        with pytest.raises(mod.FrameError, match="exceeds max_size"):
            mod.unpack(frame, max_size=MB)

    assert peak_allocation(attempt) < 64 * 1024


def test_bomb_declared_small_is_rejected_cheaply(mod, zeros_50mb_deflated):
    frame = make_frame(1, 10, zlib.crc32(bytes(10)), zeros_50mb_deflated)

    def attempt():
        with pytest.raises(mod.FrameError, match="more than the declared 10"):
            mod.unpack(frame, max_size=MB)

    # Nothing near the 50 MB: the twin's zlib context (about 40 KB) is traced, and
    # zlib.decompressobj copies the compressed input it did not use (unconsumed_tail).
    assert peak_allocation(attempt) < 64 * 1024 + len(zeros_50mb_deflated)


def test_bomb_declared_at_max_size_allocates_at_most_max_size(mod, zeros_50mb_deflated):
    frame = make_frame(1, MB, zlib.crc32(bytes(MB)), zeros_50mb_deflated)

    def attempt():
        with pytest.raises(mod.FrameError, match=f"more than the declared {MB}"):
            mod.unpack(frame, max_size=MB)

    # Compiled: exactly MB (one bytes object). Twin: zlib's output blocks, then their join.
    limit = MB + 64 * 1024 if mod.__name__.endswith("_c") else 3 * MB
    assert peak_allocation(attempt) < limit


# -- Inflater ---------------------------------------------------------------------


class Sender:
    """The peer: one zlib stream (with header), every message ends with Z_SYNC_FLUSH."""

    def __init__(self, level=6):
        self.compressor = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS)

    def wire(self, message: bytes) -> bytes:
        data = self.compressor.compress(message) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(SYNC_FLUSH_SUFFIX)
        return data


def split(data: bytes, cuts) -> list[bytes]:
    """Non-empty chunks of data, cut at the given positions (mod len)."""
    points = sorted({cut % len(data) for cut in cuts} - {0})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def json_message(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    words = chat_text(size, seed).decode().split()
    body = ", ".join(f'"{w}{rng.randint(0, 99)}": {rng.randint(0, 10**6)}' for w in words)
    return ("{" + body + "}").encode()[:size]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    messages=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 5000)), min_size=1, max_size=6
    ),
    cuts=st.lists(st.lists(st.integers(0, 10**6), max_size=6), min_size=6, max_size=6),
    level=st.sampled_from([0, 1, 6, 9]),
    chunk_type=st.sampled_from([bytes, bytearray, memoryview]),
)
def test_inflater_reassembles_messages_split_anywhere(impl_kind, messages, cuts, level, chunk_type):
    mod = load_impl("framing", impl_kind)
    sender = Sender(level)
    inflater = mod.Inflater(10_000)
    wire_total = 0
    for (seed, size), message_cuts in zip(messages, cuts):
        message = json_message(seed, size)
        wire = sender.wire(message)
        wire_total += len(wire)
        chunks = split(wire, message_cuts)
        for chunk in chunks[:-1]:
            assert inflater.feed(chunk_type(chunk)) is None
        assert inflater.pending == len(wire) - len(chunks[-1])
        assert inflater.feed(chunk_type(chunks[-1])) == message
        assert inflater.pending == 0
    assert inflater.stats() == {
        "messages": len(messages),
        "bytes_in": wire_total,
        "bytes_out": sum(len(json_message(seed, size)) for seed, size in messages),
    }
    counters = (inflater.messages, inflater.bytes_in, inflater.bytes_out)
    assert counters == tuple(inflater.stats().values())


def test_inflater_empty_chunk_and_empty_message(mod):
    sender = Sender()
    inflater = mod.Inflater(100)
    assert inflater.feed(b"") is None
    assert inflater.feed(sender.wire(b"")) == b""
    assert inflater.feed(sender.wire(b"after")) == b"after"
    assert inflater.messages == 2


def test_inflater_message_size_cap_is_inclusive(mod):
    sender = Sender()
    inflater = mod.Inflater(1000)
    assert inflater.feed(sender.wire(b"a" * 1000)) == b"a" * 1000
    with pytest.raises(mod.FrameError, match="more than max_message"):
        inflater.feed(sender.wire(b"a" * 1001))
    assert inflater.broken


def test_inflater_oversize_message_is_capped(mod):
    sender = Sender()
    inflater = mod.Inflater(4096)
    assert inflater.feed(sender.wire(b"small")) == b"small"
    with pytest.raises(mod.FrameError, match="more than max_message"):
        inflater.feed(sender.wire(b"spam " * 10_000))  # 50 KB inflated from ~100 bytes
    assert inflater.broken
    assert inflater.stats() == {"messages": 1, "bytes_in": inflater.bytes_in, "bytes_out": 5}


def test_inflater_bomb_allocates_at_most_the_cap(mod):
    compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS)
    block = bytes(MB)
    wire = b"".join(compressor.compress(block) for _ in range(50))
    wire += compressor.flush(zlib.Z_SYNC_FLUSH)
    inflater = mod.Inflater(MB)

    def attempt():
        with pytest.raises(mod.FrameError, match="more than max_message"):
            inflater.feed(wire)

    # Compiled: one bytes object grown up to the cap. Twin: zlib's output blocks, then their join.
    limit = MB + 64 * 1024 if mod.__name__.endswith("_c") else 3 * MB
    assert peak_allocation(attempt) < limit


def test_inflater_caps_buffered_compressed_bytes(mod):
    inflater = mod.Inflater(1000)
    assert inflater.feed(b"\x78\x9c" + b"\x01" * 997) is None
    assert inflater.feed(b"\x01") is None  # exactly max_message bytes buffered
    assert inflater.pending == 1000
    with pytest.raises(mod.FrameError, match="compressed message exceeds max_message"):
        inflater.feed(b"\x01")
    assert inflater.pending == 0
    with pytest.raises(mod.FrameError, match="compressed message exceeds max_message"):
        mod.Inflater(10).feed(b"x" * 11)


def test_inflater_garbage_stream(mod):
    inflater = mod.Inflater(1000)
    with pytest.raises(mod.FrameError, match="corrupt zlib stream"):
        inflater.feed(b"garbage!" + SYNC_FLUSH_SUFFIX)
    assert inflater.broken
    # A valid stream whose later message was damaged.
    sender = Sender()
    inflater = mod.Inflater(10_000)
    assert inflater.feed(sender.wire(b"first")) == b"first"
    damaged = bytearray(sender.wire(chat_text(3000)))
    damaged[5] ^= 0xFF
    damaged[6] ^= 0xFF
    with pytest.raises(mod.FrameError):
        inflater.feed(bytes(damaged))
    assert inflater.broken


def test_inflater_broken_until_reset(mod):
    inflater = mod.Inflater(1000)
    with pytest.raises(mod.FrameError):
        inflater.feed(b"garbage!" + SYNC_FLUSH_SUFFIX)
    for chunk in (b"", b"x", Sender().wire(b"hello")):
        with pytest.raises(mod.FrameError, match=r"broken .*reset\(\)"):
            inflater.feed(chunk)
    inflater.reset()
    assert not inflater.broken
    sender = Sender()
    assert inflater.feed(sender.wire(b"hello again")) == b"hello again"
    assert inflater.feed(sender.wire(b"and more")) == b"and more"


def test_inflater_reset_drops_the_partial_message(mod):
    sender = Sender()
    inflater = mod.Inflater(10_000)
    wire = sender.wire(chat_text(2000))
    assert inflater.feed(wire[:100]) is None
    inflater.reset()
    assert inflater.pending == 0
    fresh_wire = Sender().wire(b"new connection")
    assert inflater.feed(fresh_wire) == b"new connection"
    assert inflater.messages == 1
    assert inflater.bytes_in == 100 + len(fresh_wire)  # statistics survive reset()


def test_inflater_data_after_end_of_stream(mod):
    compressor = zlib.compressobj()
    inflater = mod.Inflater(1000)
    finished = compressor.compress(b"bye") + compressor.flush(zlib.Z_FINISH)
    # Z_FINISH does not end with the sync-flush suffix: append an empty stored block after the end.
    with pytest.raises(mod.FrameError, match="after the end of the zlib stream"):
        inflater.feed(finished + b"\x00" + SYNC_FLUSH_SUFFIX)


def test_inflater_stats_are_read_only(mod):
    inflater = mod.Inflater(100)
    for name in ("messages", "bytes_in", "bytes_out", "max_message", "pending", "broken"):
        with pytest.raises(AttributeError):
            setattr(inflater, name, 5)
    assert inflater.max_message == 100
    assert "max_message=100" in repr(inflater)


@pytest.mark.parametrize(
    ("max_message", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (2**80, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        ("10", TypeError),
    ],
)
def test_inflater_rejects_bad_max_message(mod, max_message, error):
    with pytest.raises(error):
        mod.Inflater(max_message)


@pytest.mark.parametrize("chunk", ["text", 3, None])
def test_inflater_rejects_non_bytes_chunks(mod, chunk):
    inflater = mod.Inflater(100)
    with pytest.raises(TypeError):
        inflater.feed(chunk)
    assert not inflater.broken


# -- Inflater: compiled vs twin vs model, operation by operation ----------------------

MAX_MESSAGE = 3000
message_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=1500).map(
    str.encode
)


class InflaterMachine(RuleBasedStateMachine):
    """Feeds the same chunks to both implementations and checks them against a model.

    The model knows the peer's messages while the stream is in sync (no
    garbage fed since the last reset). Message text never contains the bytes
    00 or ff, so the sync-flush suffix only appears where the peer flushed.
    """

    def __init__(self):
        super().__init__()
        self.modules = impls()
        self.inflaters = [m.Inflater(MAX_MESSAGE) for m in self.modules]
        self.sender = Sender()
        self.in_sync = True
        self.broken = False
        self.pending = 0

    def feed_all(self, chunk):
        results = [outcome(m, inf.feed, chunk) for m, inf in zip(self.modules, self.inflaters)]
        kinds = [kind for kind, _ in results]
        assert kinds[0] == kinds[1], results
        if kinds[0] == "ok":
            assert results[0][1] == results[1][1]
        return results[0]

    @rule(message=message_text, cuts=st.lists(st.integers(0, 10**6), max_size=5))
    def send(self, message, cuts):
        wire = self.sender.wire(message)
        chunks = split(wire, cuts)
        for index, chunk in enumerate(chunks):
            kind, result = self.feed_all(chunk)
            if not self.in_sync:
                self.broken = kind == "FrameError" or self.inflaters[0].broken
                continue
            last = index == len(chunks) - 1
            if self.broken:
                assert kind == "FrameError" and "reset()" in result
            elif self.pending + len(chunk) > MAX_MESSAGE:
                assert kind == "FrameError" and "compressed message exceeds" in result
                self.broken, self.pending = True, 0
            elif last and len(message) > MAX_MESSAGE:
                assert kind == "FrameError" and "inflates to more than" in result
                self.broken, self.pending = True, 0
            elif last:
                assert (kind, result) == ("ok", message)
                self.pending = 0
            else:
                assert (kind, result) == ("ok", None)
                self.pending += len(chunk)

    @rule(message=st.integers(MAX_MESSAGE + 1, 3 * MAX_MESSAGE))
    def send_oversize(self, message):
        self.send(b"x" * message, [])

    @rule(garbage=st.binary(min_size=1, max_size=40), suffix=st.booleans())
    def feed_garbage(self, garbage, suffix):
        self.feed_all(garbage + SYNC_FLUSH_SUFFIX if suffix else garbage)
        self.in_sync = False
        self.broken = self.inflaters[0].broken

    @rule()
    def feed_empty(self):
        kind, result = self.feed_all(b"")
        assert kind == ("FrameError" if self.broken else "ok")

    @rule()
    def reset(self):
        for inflater in self.inflaters:
            inflater.reset()
        self.sender = Sender()
        self.in_sync, self.broken, self.pending = True, False, 0

    @invariant()
    def implementations_agree(self):
        compiled, pure = self.inflaters
        assert compiled.stats() == pure.stats()
        assert compiled.broken == pure.broken
        assert compiled.pending == pure.pending
        if self.in_sync:
            assert compiled.broken == self.broken
            assert compiled.pending == self.pending


TestInflaterMachine = InflaterMachine.TestCase
TestInflaterMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
