"""Durable state files: atomic replacement, one backup, corruption detected on read.

A state file holds one framed snapshot (:func:`fastcore.framing.pack`: magic,
length and CRC32), so a truncated or damaged file is always detected, even
when the inner format would accept a prefix. Next to ``NAME`` live:

- ``NAME.bak``: the previous good snapshot, kept by every write;
- ``NAME.tmp``: the snapshot being written (a leftover one is harmless);
- ``NAME.corrupt``: a main file that failed to load, moved aside by the reader
  so that the next write cannot rotate it over the good backup.

:func:`write_atomic` writes the temporary file, fsyncs it, renames the main
file to the backup, renames the temporary file to the main file and fsyncs
the directory. A crash at any instant leaves either the main file or (between
the two renames) the backup holding a complete, good snapshot, and
:func:`read_with_fallback` looks in both. A power loss may undo the renames
after the last directory fsync, never leave a half-written main file.

Everything here blocks: async callers run it through
``trio.to_thread.run_sync``. One writer per path (the temporary name is
fixed); :class:`StateFile` serialises the writes made through it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from fastcore import framing

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_SIZE", "Loaded", "StateFile", "read_with_fallback", "write_atomic"]

DEFAULT_MAX_SIZE = 256 * 1024 * 1024  # largest snapshot a reader accepts (bytes, unframed)
FRAME_OVERHEAD = 64  # more than a frame header takes (magic, version, codec, varint length, CRC)
COMPRESSION_LEVEL = 1  # state is rewritten often: favour speed; counters compress well anyway

T = TypeVar("T")


class Loaded(NamedTuple, Generic[T]):
    """What :func:`read_with_fallback` found.

    ``source`` is ``"main"`` or ``"backup"`` (``value`` is the parsed state),
    ``"missing"`` (neither file exists: a first start; ``value`` is None) or
    ``"fresh"`` (files exist but none parses: start from a fresh state;
    ``value`` is None).
    """

    value: T | None
    source: str


def backup_path(path: str | os.PathLike[str]) -> str:
    return os.fspath(path) + ".bak"


def _temp_path(path: str | os.PathLike[str]) -> str:
    return os.fspath(path) + ".tmp"


def _corrupt_path(path: str | os.PathLike[str]) -> str:
    return os.fspath(path) + ".corrupt"


def write_atomic(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> int:
    """Replace the state file at *path* with *data*, durably; keep the old one as ``.bak``.

    Returns the number of bytes written (the framed size). Raises
    :class:`OSError` if any step fails; the main file or the backup still
    holds the last good snapshot then, and a leftover ``.tmp`` is overwritten
    by the next write. Not safe against another process writing the same path.
    """
    path = os.fspath(path)
    frame = framing.pack(data, level=COMPRESSION_LEVEL)
    temp = _temp_path(path)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(frame)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(path, backup_path(path))
    except FileNotFoundError:
        pass  # the first write: nothing to keep yet
    os.replace(temp, path)
    _fsync_directory(os.path.dirname(os.path.abspath(path)))
    return len(frame)


def _fsync_directory(directory: str) -> None:
    """Make the renames in *directory* durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_frame(path: str, max_size: int) -> bytes:
    """The unframed bytes stored at *path*: FileNotFoundError, OSError or FrameError.

    Reads no more than a frame of *max_size* bytes can take, so a huge file
    costs no more memory than a good one (it fails to unframe).
    """
    with open(path, "rb") as file:
        frame = file.read(max_size + FRAME_OVERHEAD)
    return framing.unpack(frame, max_size=max_size)


def read_with_fallback(
    path: str | os.PathLike[str], parse: Callable[[bytes], T], *, max_size: int = DEFAULT_MAX_SIZE
) -> Loaded[T]:
    """Load the state at *path* with ``parse``, falling back to the backup.

    ``parse`` gets the unframed bytes; any exception it raises means the file
    is unusable. A main file that exists but cannot be read, unframed or
    parsed is logged as a WARNING and moved aside to ``NAME.corrupt``, and the
    backup is tried; a missing main file with a backup present (a write
    interrupted between its two renames) is a WARNING too. If no file parses,
    that is logged as an ERROR and ``Loaded(None, "fresh")`` comes back; if
    neither file exists, ``Loaded(None, "missing")``, silently. Never raises
    for a bad file; a bad ``max_size`` raises TypeError or ValueError.
    """
    _check_max_size(max_size)
    path = os.fspath(path)
    backup = backup_path(path)
    try:
        return Loaded(parse(_read_frame(path, max_size)), "main")
    except FileNotFoundError:
        main_problem = None
    except Exception as error:
        main_problem = f"{type(error).__name__}: {error}"
        _move_aside(path)
    try:
        value = parse(_read_frame(backup, max_size))
    except FileNotFoundError:
        if main_problem is None:
            return Loaded(None, "missing")
        logger.error("state file %s is unusable (%s) and there is no backup; starting fresh", path, main_problem)
        return Loaded(None, "fresh")
    except Exception as error:
        backup_problem = f"{type(error).__name__}: {error}"
        logger.error(
            "state file %s is unusable (%s) and so is its backup (%s); starting fresh",
            path, main_problem or "missing", backup_problem,
        )  # fmt: skip
        return Loaded(None, "fresh")
    if main_problem is None:
        logger.warning("state file %s is missing (a write was interrupted); loaded its backup", path)
    else:
        logger.warning("state file %s is unusable (%s); loaded its backup", path, main_problem)
    return Loaded(value, "backup")


def _check_max_size(max_size: object) -> None:
    # Checked up front: a bad argument must not be mistaken for a bad file.
    if isinstance(max_size, bool) or not isinstance(max_size, int):
        raise TypeError(f"max_size must be an int, not {type(max_size).__name__}")
    if max_size <= 0:
        raise ValueError(f"max_size must be > 0, not {max_size!r}")


def _move_aside(path: str) -> None:
    """Rename an unusable main file to ``.corrupt`` (kept for inspection); log if that fails."""
    try:
        os.replace(path, _corrupt_path(path))
    except OSError as error:
        logger.error("could not move unusable state file %s aside: %s", path, error)


class StateFile:
    """One state file: :func:`write_atomic` and :func:`read_with_fallback` with counters.

    ``writes`` counts completed writes, ``write_errors`` failed ones and
    ``bytes_written`` the framed bytes of the completed ones. Methods block
    (use ``trio.to_thread.run_sync`` from async code); writes through one
    instance are serialised by a lock, so they may come from several threads.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        _check_max_size(max_size)
        self.path = os.fspath(path)
        self.backup_path = backup_path(self.path)
        self.max_size = max_size
        self.writes = 0
        self.write_errors = 0
        self.bytes_written = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<StateFile {self.path!r} writes={self.writes}>"

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Replace the file with *data* (see :func:`write_atomic`).

        Raises OSError (counted in ``write_errors``) if the write fails, and
        ValueError, before touching any file, if *data* is larger than
        ``max_size``: a snapshot the reader would refuse never replaces a good one.
        """
        size = memoryview(data).nbytes
        if size > self.max_size:
            raise ValueError(f"state of {size} bytes exceeds max_size {self.max_size}")
        with self._lock:
            try:
                framed = write_atomic(self.path, data)
            except OSError:
                self.write_errors += 1
                raise
            self.writes += 1
            self.bytes_written += framed

    def read(self, parse: Callable[[bytes], T]) -> Loaded[T]:
        """Load with fallback (see :func:`read_with_fallback`)."""
        return read_with_fallback(self.path, parse, max_size=self.max_size)
