"""Reading this process's resident set size (RSS), without psutil.

:func:`read_rss` returns bytes, read from the best source the platform has:

- ``"statm"`` (Linux): ``/proc/self/statm``, resident pages times the page
  size. The *current* RSS: it falls when memory goes back to the OS.
- ``"maxrss"`` (macOS, the BSDs, Linux without /proc):
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the *peak* RSS since the
  process started. It never falls, so a monitor fed by it sees growth but
  never recovery: an alert never re-arms and the trend never reads
  "falling". The unit differs by platform (bytes on macOS, KiB elsewhere);
  this module converts it to bytes.
- ``"windows"``: ``GetProcessMemoryInfo`` through ctypes, the working set
  size, which is the current RSS.

:data:`RSS_SOURCE` names the source in use; :data:`RSS_IS_PEAK` says whether
readings are peaks. Each read is one small system call or procfs read
(microseconds), cheap enough for the event loop.
"""

from __future__ import annotations

import os
import sys

STATM_PATH = "/proc/self/statm"


def parse_statm(text: str, page_size: int) -> int:
    """Resident bytes from the text of ``/proc/<pid>/statm``.

    The fields are sizes in pages: total, resident, shared, text, lib, data,
    dirty. Raises :class:`ValueError` if the text has no resident field.

    >>> parse_statm("5000 1200 300 10 0 900 0\\n", 4096)
    4915200
    """
    fields = text.split()
    if len(fields) < 2:
        raise ValueError(f"statm text has no resident field: {text!r}")
    return int(fields[1]) * page_size


def read_statm_rss() -> int:
    """Current RSS in bytes from ``/proc/self/statm`` (Linux). Raises :class:`OSError` without /proc."""
    with open(STATM_PATH, encoding="ascii") as statm:
        return parse_statm(statm.read(), os.sysconf("SC_PAGE_SIZE"))


def read_maxrss() -> int:
    """Peak RSS in bytes since the process started, from ``getrusage`` (POSIX).

    ``ru_maxrss`` is in bytes on macOS and in KiB on Linux and the BSDs.
    Raises :class:`ImportError` where there is no :mod:`resource` (Windows).
    """
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def read_windows_rss() -> int:
    """Current working-set size in bytes from ``GetProcessMemoryInfo`` (Windows only).

    Raises :class:`OSError` if the call fails.
    """
    import ctypes
    from ctypes import wintypes

    class ProcessMemoryCounters(ctypes.Structure):
        _fields_ = [
            ("cb", wintypes.DWORD),
            ("PageFaultCount", wintypes.DWORD),
            ("PeakWorkingSetSize", ctypes.c_size_t),
            ("WorkingSetSize", ctypes.c_size_t),
            ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
            ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
            ("PagefileUsage", ctypes.c_size_t),
            ("PeakPagefileUsage", ctypes.c_size_t),
        ]

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    kernel32.K32GetProcessMemoryInfo.argtypes = [wintypes.HANDLE, ctypes.c_void_p, wintypes.DWORD]
    kernel32.K32GetProcessMemoryInfo.restype = wintypes.BOOL
    counters = ProcessMemoryCounters()
    counters.cb = ctypes.sizeof(counters)
    if not kernel32.K32GetProcessMemoryInfo(kernel32.GetCurrentProcess(), ctypes.byref(counters), counters.cb):
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
    return int(counters.WorkingSetSize)


def _pick_source() -> str:
    if sys.platform == "win32":
        return "windows"
    if os.path.exists(STATM_PATH):
        return "statm"
    return "maxrss"


RSS_SOURCE = _pick_source()
RSS_IS_PEAK = RSS_SOURCE == "maxrss"

_READERS = {"statm": read_statm_rss, "maxrss": read_maxrss, "windows": read_windows_rss}


def read_rss() -> int:
    """This process's RSS in bytes, from :data:`RSS_SOURCE` (see the module docs).

    Never awaits. Raises :class:`OSError` if the source cannot be read.
    """
    return _READERS[RSS_SOURCE]()
