"""Pure-Python twin of :mod:`fastcore._framing_c` (same API, same frames).

Frame layout (all implementations, version 1)::

    magic (2 bytes, MAGIC) | version (1 byte) | codec (1 byte: 0 raw, 1 deflate)
    | original length (unsigned LEB128 varint, minimal encoding, <= 64 bits)
    | CRC32 of the original data (4 bytes, little endian) | payload

The deflate payload is a raw deflate stream (no zlib header or adler32: the
frame's CRC32 already covers integrity).
"""

from __future__ import annotations

import math
import sys
import zlib

__all__ = [
    "CODEC_DEFLATE",
    "CODEC_RAW",
    "MAGIC",
    "VERSION",
    "FrameError",
    "Inflater",
    "pack",
    "unpack",
]

MAGIC = b"\xfa\xce"
VERSION = 1
CODEC_RAW = 0
CODEC_DEFLATE = 1
# The zlib actually linked: frames are byte-identical across implementations
# only when both use the same zlib (the tests check that).
_ZLIB_RUNTIME_VERSION = zlib.ZLIB_RUNTIME_VERSION

# Deflate cannot expand data by more than 1032:1 (a 258-byte match costs at
# least 2 bits), so a declared length above payload * 1032 is a lie that can
# be rejected before allocating anything.
_MAX_DEFLATE_RATIO = 1032
# Discord's zlib-stream: every message ends with an empty stored block.
_SYNC_FLUSH_SUFFIX = b"\x00\x00\xff\xff"
_RAW_PREFIX = MAGIC + bytes((VERSION, CODEC_RAW))
_DEFLATE_PREFIX = MAGIC + bytes((VERSION, CODEC_DEFLATE))

_zlib_compress = zlib.compress
_crc32 = zlib.crc32


class FrameError(ValueError):
    """A frame or a zlib stream is truncated, corrupt, oversized or unsupported."""


def _bytes_view(obj, name):
    """Return *obj* as something with byte-sized ``len()`` and indexing.

    Raises TypeError for anything but bytes, bytearray or a C-contiguous
    memoryview, ValueError for a released memoryview.
    """
    if isinstance(obj, (bytes, bytearray)):
        return obj
    if isinstance(obj, memoryview):
        if not obj.c_contiguous:
            raise TypeError(f"{name} must be a C-contiguous memoryview")
        if obj.format != "B" or obj.ndim != 1:
            obj = obj.cast("B")
        return obj
    raise TypeError(f"{name} must be bytes, bytearray or memoryview, not {type(obj).__name__}")


def _size_arg(value, name):
    """Validate a non-negative int size; values beyond sys.maxsize are clamped."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return min(value, sys.maxsize)


def _level_arg(value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"level must be an int, not {type(value).__name__}")
    if not -1 <= value <= 9:
        raise ValueError(f"level must be in 0..9 or -1 (default), got {value}")
    return value


def _fraction_arg(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"min_saving must be a float, not {type(value).__name__}")
    if isinstance(value, int):
        # The only int in [0, 1); avoids float() overflowing on huge ints.
        if value != 0:
            raise ValueError(f"min_saving must be in [0, 1), got {value}")
        return 0.0
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise ValueError(f"min_saving must be in [0, 1), got {value}")
    return value


def _varint(value):
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def pack(data, *, threshold=1024, level=6, min_saving=0.1):
    """Return *data* wrapped in a self-describing frame.

    The payload is deflated when ``len(data) >= threshold`` and the
    compressed form is at least ``min_saving`` (a fraction of the original
    size) smaller; otherwise it is stored raw.

    Raises TypeError if *data* is not bytes, bytearray or a C-contiguous
    memoryview, or an argument has the wrong type; ValueError if
    ``threshold < 0``, *level* is outside 0..9 (or -1) or *min_saving* is
    outside [0, 1).
    """
    view = _bytes_view(data, "data")
    threshold = _size_arg(threshold, "threshold")
    level = _level_arg(level)
    min_saving = _fraction_arg(min_saving)
    size = len(view)
    tail = _varint(size) + _crc32(view).to_bytes(4, "little")
    if size >= threshold:
        # Keep the compressed form only if it saves at least min_saving * size.
        limit = size - math.ceil(size * min_saving)
        compressed = _zlib_compress(view, level, -15)
        if len(compressed) <= limit:
            return b"".join((_DEFLATE_PREFIX, tail, compressed))
    return b"".join((_RAW_PREFIX, tail, view))


def unpack(frame, *, max_size):
    """Return the original data of *frame* (as made by :func:`pack`).

    Never allocates more than about *max_size* bytes for the result.

    Raises FrameError (a ValueError) if the frame is truncated anywhere, has
    a bad magic, an unsupported version, an unknown codec, a length varint
    that is not minimal or overflows 64 bits, a declared length above
    *max_size*, a corrupt deflate payload, a decompressed size different from
    the declared one, trailing bytes after the payload, or a CRC mismatch.
    TypeError / ValueError for a bad *frame* type or *max_size*.
    """
    view = _bytes_view(frame, "frame")
    max_size = _size_arg(max_size, "max_size")
    size = len(view)
    if size < 2:
        raise FrameError("truncated frame: magic missing")
    if view[0] != MAGIC[0] or view[1] != MAGIC[1]:
        raise FrameError(f"bad magic {bytes(view[:2])!r}, expected {MAGIC!r}")
    if size < 3:
        raise FrameError("truncated frame: version missing")
    if view[2] != VERSION:
        raise FrameError(
            f"unsupported frame version {view[2]} (this build reads version {VERSION})"
        )
    if size < 4:
        raise FrameError("truncated frame: codec missing")
    codec = view[3]
    if codec != CODEC_RAW and codec != CODEC_DEFLATE:
        raise FrameError(f"unknown codec {codec}")

    declared = 0
    shift = 0
    pos = 4
    while True:
        if pos >= size:
            raise FrameError("truncated frame: length missing")
        byte = view[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise FrameError("length varint overflows 64 bits")
        declared |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and shift:
                raise FrameError("length varint is not minimally encoded")
            break
        shift += 7
    if size - pos < 4:
        raise FrameError("truncated frame: checksum missing")
    expected_crc = view[pos] | view[pos + 1] << 8 | view[pos + 2] << 16 | view[pos + 3] << 24
    pos += 4
    if declared > max_size:
        raise FrameError(f"declared length {declared} exceeds max_size {max_size}")

    payload = memoryview(view)[pos:]
    payload_size = size - pos
    if codec == CODEC_RAW:
        if payload_size < declared:
            raise FrameError(f"truncated frame: payload has {payload_size} of {declared} bytes")
        if payload_size > declared:
            raise FrameError(f"{payload_size - declared} trailing bytes after the payload")
        data = bytes(payload)
    else:
        data = _inflate_payload(payload, payload_size, declared)
    actual_crc = _crc32(data)
    if actual_crc != expected_crc:
        raise FrameError(
            f"CRC mismatch: frame says {expected_crc:#010x}, data has {actual_crc:#010x}"
        )
    return data


def _inflate_payload(payload, payload_size, declared):
    if declared > payload_size * _MAX_DEFLATE_RATIO:
        raise FrameError(
            f"a {payload_size}-byte deflate payload cannot inflate to the declared {declared} bytes"
        )
    inflater = zlib.decompressobj(-15)
    try:
        # One byte over the declared size is enough to detect a liar (or a bomb).
        data = inflater.decompress(payload, declared + 1)
    except zlib.error as exc:
        raise FrameError(f"corrupt deflate payload: {exc}") from None
    if len(data) > declared:
        raise FrameError(f"deflate payload inflates to more than the declared {declared} bytes")
    if not inflater.eof:
        raise FrameError("truncated frame: deflate stream ends early")
    if inflater.unused_data:
        raise FrameError(f"{len(inflater.unused_data)} trailing bytes after the deflate stream")
    if len(data) != declared:
        raise FrameError(f"deflate payload inflates to {len(data)} bytes, declared {declared}")
    return data


class Inflater:
    """Inflate a zlib-stream transport (Discord gateway ``compress=zlib-stream``).

    One Inflater per connection: the whole connection is one zlib stream
    (with its zlib header) and the sender ends every message with
    Z_SYNC_FLUSH, so each message ends with ``00 00 ff ff``.

    ``feed(chunk)`` buffers *chunk* and returns the inflated message once the
    buffered bytes end with that suffix, else None. A message inflating to
    more than *max_message* bytes, more than *max_message* buffered
    compressed bytes, or a corrupt stream raise FrameError and break the
    inflater: every later ``feed`` raises FrameError until ``reset()``
    (which starts a fresh stream, for a new connection). Statistics
    (``messages``, ``bytes_in``, ``bytes_out``) are cumulative across resets.
    """

    __slots__ = (
        "_broken",
        "_bytes_in",
        "_bytes_out",
        "_inflater",
        "_max_message",
        "_messages",
        "_pending",
    )

    def __init__(self, max_message):
        if isinstance(max_message, bool) or not isinstance(max_message, int):
            raise TypeError(f"max_message must be an int, not {type(max_message).__name__}")
        if not 1 <= max_message <= sys.maxsize:
            raise ValueError(f"max_message must be in 1..{sys.maxsize}, got {max_message}")
        self._max_message = max_message
        self._messages = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._inflater = zlib.decompressobj(zlib.MAX_WBITS)
        self._pending = bytearray()
        self._broken = None

    @property
    def max_message(self):
        return self._max_message

    @property
    def messages(self):
        """Messages returned by :meth:`feed`."""
        return self._messages

    @property
    def bytes_in(self):
        """Compressed bytes accepted by :meth:`feed`."""
        return self._bytes_in

    @property
    def bytes_out(self):
        """Inflated bytes returned by :meth:`feed`."""
        return self._bytes_out

    @property
    def pending(self):
        """Compressed bytes buffered for the message being received."""
        return len(self._pending)

    @property
    def broken(self):
        """True after a FrameError, until :meth:`reset`."""
        return self._broken is not None

    def feed(self, chunk):
        """Buffer *chunk*; return the inflated message when it is complete, else None.

        Raises TypeError for a bad chunk type, FrameError as described in the
        class docstring.
        """
        chunk = _bytes_view(chunk, "chunk")
        if self._broken is not None:
            raise FrameError(f"inflater is broken ({self._broken}): reset() it and reconnect")
        size = len(chunk)
        if not size:
            return None
        pending = self._pending
        if len(pending) + size > self._max_message:
            self._fail(f"compressed message exceeds max_message ({self._max_message} bytes)")
        self._bytes_in += size
        if not pending and chunk[-4:] == _SYNC_FLUSH_SUFFIX:
            return self._inflate_message(chunk)
        pending += chunk
        if pending[-4:] != _SYNC_FLUSH_SUFFIX:
            return None
        try:
            return self._inflate_message(pending)
        finally:
            pending.clear()

    def reset(self):
        """Start a fresh stream (a new connection): clear the buffer and the broken state."""
        self._inflater = zlib.decompressobj(zlib.MAX_WBITS)
        self._pending.clear()
        self._broken = None

    def stats(self):
        """Return ``{"messages", "bytes_in", "bytes_out"}`` (cumulative)."""
        return {
            "messages": self._messages,
            "bytes_in": self._bytes_in,
            "bytes_out": self._bytes_out,
        }

    def _inflate_message(self, data):
        inflater = self._inflater
        try:
            # Asking for one byte over the cap tells "too big" from "exactly the cap".
            message = inflater.decompress(data, self._max_message + 1)
        except zlib.error as exc:
            self._fail(f"corrupt zlib stream: {exc}")
        if len(message) > self._max_message:
            self._fail(f"message inflates to more than max_message ({self._max_message} bytes)")
        if inflater.unused_data:
            self._fail("data after the end of the zlib stream")
        self._messages += 1
        self._bytes_out += len(message)
        return message

    def _fail(self, reason):
        self._broken = reason
        self._pending.clear()
        raise FrameError(reason)

    def __repr__(self):
        if self._broken is not None:
            state = f"broken: {self._broken}"
        else:
            state = f"pending={len(self._pending)}"
        return f"<Inflater max_message={self._max_message} messages={self._messages} {state}>"
