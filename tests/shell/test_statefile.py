"""State files: atomic replacement with a backup, and every kind of damage detected on read."""

from __future__ import annotations

import logging
import os
import stat
import tracemalloc

import pytest

from fastcore import framing
from shell.statefile import Loaded, StateFile, read_with_fallback, write_atomic

SMALL = b"state one"
# Compressible and over framing's threshold: stored as deflate, not raw.
LARGE = b"".join(b"user-%05d:%d;" % (i, i % 7) for i in range(300))


def identity(data: bytes) -> bytes:
    """A parser that accepts any bytes at all, so only the framing can catch damage."""
    return data


def warnings_and_errors(caplog):
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]


# -- writing ---------------------------------------------------------------------


def test_write_then_read_returns_the_data_from_the_main_file(tmp_path):
    path = tmp_path / "state"
    write_atomic(path, SMALL)
    assert read_with_fallback(path, identity) == Loaded(SMALL, "main")
    assert not os.path.exists(f"{path}.tmp")
    assert not os.path.exists(f"{path}.bak")  # nothing to keep on a first write


def test_each_write_keeps_the_previous_file_as_the_backup(tmp_path):
    path = tmp_path / "state"
    for data in (SMALL, LARGE, b"three"):
        write_atomic(path, data)
    assert framing.unpack((tmp_path / "state").read_bytes(), max_size=10**6) == b"three"
    assert framing.unpack((tmp_path / "state.bak").read_bytes(), max_size=10**6) == LARGE


def test_files_are_framed_and_private(tmp_path):
    path = tmp_path / "state"
    size = write_atomic(path, LARGE)
    raw = path.read_bytes()
    assert size == len(raw) < len(LARGE)  # compressed
    assert raw.startswith(framing.MAGIC)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_state_file_counts_writes_and_bytes(tmp_path):
    state = StateFile(tmp_path / "state")
    state.write(SMALL)
    state.write(LARGE)
    assert (state.writes, state.write_errors) == (2, 0)
    assert state.bytes_written == len(framing.pack(SMALL, level=1)) + len(framing.pack(LARGE, level=1))
    assert state.read(identity) == Loaded(LARGE, "main")


def test_failed_write_is_counted_and_raised(tmp_path):
    state = StateFile(tmp_path / "no such directory" / "state")
    with pytest.raises(FileNotFoundError):
        state.write(SMALL)
    assert (state.writes, state.write_errors) == (0, 1)


def test_oversized_state_is_refused_before_any_file_changes(tmp_path):
    state = StateFile(tmp_path / "state", max_size=100)
    state.write(SMALL)
    with pytest.raises(ValueError, match="exceeds max_size"):
        state.write(b"x" * 101)
    assert state.read(identity) == Loaded(SMALL, "main")
    assert (state.writes, state.write_errors) == (1, 0)


class Crash(Exception):
    """Stands in for the process dying at one step of a write."""


@pytest.mark.parametrize("step", ["write", "fsync", "rotate", "install", "fsync-dir"])
def test_a_crash_at_any_step_of_a_write_leaves_a_good_state(tmp_path, monkeypatch, step):
    """Whatever step dies, the reader finds the old state or the new one, whole."""
    path = tmp_path / "state"
    write_atomic(path, SMALL)
    write_atomic(path, b"old state")
    real = {name: getattr(os, name) for name in ("write", "fsync", "replace")}
    calls = {"fsync": 0, "replace": 0}

    def write(fd, data):
        if step == "write":
            real["write"](fd, bytes(data)[: len(data) // 2])  # a torn write, then death
            raise Crash
        return real["write"](fd, data)

    def fsync(fd):
        calls["fsync"] += 1
        if (step, calls["fsync"]) in (("fsync", 1), ("fsync-dir", 2)):
            raise Crash
        return real["fsync"](fd)

    def replace(source, target):
        calls["replace"] += 1
        if (step, calls["replace"]) in (("rotate", 1), ("install", 2)):
            raise Crash
        return real["replace"](source, target)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Crash):
        write_atomic(path, b"new state")
    monkeypatch.undo()
    expected = b"new state" if step == "fsync-dir" else b"old state"
    loaded = read_with_fallback(path, identity)
    assert loaded.value == expected
    assert loaded.source == ("backup" if step == "install" else "main")
    write_atomic(path, b"next")  # a leftover temporary file does not get in the way
    assert read_with_fallback(path, identity) == Loaded(b"next", "main")


# -- reading ---------------------------------------------------------------------


def test_no_files_is_a_quiet_first_start(tmp_path, caplog):
    assert read_with_fallback(tmp_path / "state", identity) == Loaded(None, "missing")
    assert warnings_and_errors(caplog) == []


def test_corrupt_main_file_falls_back_to_the_backup_with_a_warning(tmp_path, caplog):
    path = tmp_path / "state"
    write_atomic(path, SMALL)
    write_atomic(path, LARGE)
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 0x01
    path.write_bytes(damaged)
    caplog.set_level(logging.WARNING)
    assert read_with_fallback(path, identity) == Loaded(SMALL, "backup")
    [(level, message)] = warnings_and_errors(caplog)
    assert level == logging.WARNING and "is unusable" in message and "loaded its backup" in message
    # Moved aside, so the next write cannot rotate it over the good backup.
    assert (tmp_path / "state.corrupt").read_bytes() == bytes(damaged)
    assert not path.exists()
    write_atomic(path, b"next")
    assert framing.unpack((tmp_path / "state.bak").read_bytes(), max_size=100) == SMALL


def test_missing_main_file_with_a_backup_uses_the_backup_with_a_warning(tmp_path, caplog):
    path = tmp_path / "state"
    write_atomic(path, SMALL)
    write_atomic(path, LARGE)
    os.replace(path, tmp_path / "elsewhere")
    caplog.set_level(logging.WARNING)
    assert read_with_fallback(path, identity) == Loaded(SMALL, "backup")
    [(level, message)] = warnings_and_errors(caplog)
    assert level == logging.WARNING and "write was interrupted" in message


def test_parse_failure_counts_as_corruption(tmp_path, caplog):
    path = tmp_path / "state"
    write_atomic(path, b"good")
    write_atomic(path, b"bad")

    def parse(data):
        if data == b"bad":
            raise ValueError("not a state")
        return data

    caplog.set_level(logging.WARNING)
    assert read_with_fallback(path, parse) == Loaded(b"good", "backup")
    assert "ValueError: not a state" in warnings_and_errors(caplog)[0][1]


def test_both_files_corrupt_start_fresh_with_an_error(tmp_path, caplog):
    path = tmp_path / "state"
    write_atomic(path, SMALL)
    write_atomic(path, LARGE)
    path.write_bytes(b"garbage")
    (tmp_path / "state.bak").write_bytes(path.read_bytes()[:3])
    caplog.set_level(logging.WARNING)
    assert read_with_fallback(path, identity) == Loaded(None, "fresh")
    [(level, message)] = warnings_and_errors(caplog)
    assert level == logging.ERROR and "starting fresh" in message


def test_corrupt_main_file_and_no_backup_start_fresh_with_an_error(tmp_path, caplog):
    path = tmp_path / "state"
    path.write_bytes(b"garbage")
    caplog.set_level(logging.WARNING)
    assert read_with_fallback(path, identity) == Loaded(None, "fresh")
    [(level, message)] = warnings_and_errors(caplog)
    assert level == logging.ERROR and "no backup" in message


@pytest.mark.parametrize("data", [SMALL, LARGE], ids=["raw", "deflate"])
def test_truncation_at_every_byte_is_detected(tmp_path, data):
    path = tmp_path / "state"
    write_atomic(path, data)
    frame = path.read_bytes()
    for length in range(len(frame)):
        path.write_bytes(frame[:length])
        assert read_with_fallback(path, identity) == Loaded(None, "fresh"), length
    path.write_bytes(frame)
    assert read_with_fallback(path, identity) == Loaded(data, "main")


@pytest.mark.parametrize("data", [SMALL, LARGE], ids=["raw", "deflate"])
def test_a_flipped_byte_anywhere_never_yields_wrong_data(tmp_path, data):
    """Detected, or harmless: a few deflate bits do not affect the output (padding,
    unused code lengths), and the CRC proves the data came out intact."""
    path = tmp_path / "state"
    write_atomic(path, data)
    frame = path.read_bytes()
    harmless = 0
    for position in range(len(frame)):
        damaged = bytearray(frame)
        damaged[position] ^= 0xFF
        path.write_bytes(damaged)
        loaded = read_with_fallback(path, identity)
        assert loaded in (Loaded(None, "fresh"), Loaded(data, "main")), position
        harmless += loaded.source == "main"
    assert harmless <= len(frame) // 100


def test_a_state_larger_than_max_size_is_refused(tmp_path):
    path = tmp_path / "state"
    write_atomic(path, LARGE)
    assert read_with_fallback(path, identity, max_size=len(LARGE) - 1).source == "fresh"


def test_a_huge_file_is_not_read_whole(tmp_path):
    path = tmp_path / "state"
    write_atomic(path, SMALL)
    write_atomic(path, SMALL)
    with open(path, "ab") as file:
        file.write(b"\0" * 10_000_000)
    tracemalloc.start()
    try:
        loaded = read_with_fallback(path, identity, max_size=100)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded == Loaded(SMALL, "backup")
    assert peak < 100_000


@pytest.mark.parametrize(
    ("max_size", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_bad_max_size_is_an_argument_error_not_a_bad_file(tmp_path, max_size, error):
    path = tmp_path / "state"
    write_atomic(path, SMALL)
    with pytest.raises(error):
        read_with_fallback(path, identity, max_size=max_size)
    with pytest.raises(error):
        StateFile(path, max_size=max_size)
    assert read_with_fallback(path, identity) == Loaded(SMALL, "main")  # untouched

