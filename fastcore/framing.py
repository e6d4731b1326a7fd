"""Self-describing frames for stored payloads, and a zlib-stream inflater.

``pack(data, *, threshold=1024, level=6, min_saving=0.1) -> bytes`` wraps
bytes-like *data* (bytes, bytearray, C-contiguous memoryview) in a frame::

    MAGIC (2 bytes) | VERSION (1) | codec (1: CODEC_RAW or CODEC_DEFLATE)
    | original length (unsigned LEB128 varint) | CRC32 of the data (4, little endian)
    | payload

The payload is raw deflate (no zlib header: the CRC32 covers integrity) when
``len(data) >= threshold`` and compression saves at least ``min_saving`` of
the size, else the data itself. Frames from the compiled module and its twin
are interchangeable.

``unpack(frame, *, max_size) -> bytes`` returns the data; it never allocates
more than about *max_size* bytes for it, so decompression bombs are rejected
cheaply.

``Inflater(max_message)`` inflates a zlib-stream transport (Discord gateway
``compress=zlib-stream``: one zlib stream per connection, every message ends
with a Z_SYNC_FLUSH ``00 00 ff ff``). ``feed(chunk)`` returns the inflated
message once the buffered chunks end with that suffix, else None;
``reset()`` starts a fresh stream; ``stats()`` returns ``{"messages",
"bytes_in", "bytes_out"}`` (also attributes; cumulative across resets);
``pending`` and ``broken`` are properties.

Errors: ``FrameError`` (a ``ValueError``) for any truncated, corrupt,
oversized or unsupported input: for ``unpack`` a short frame (anywhere,
including inside the varint or the deflate stream), bad magic, unsupported
version, unknown codec, over-long/non-minimal varint, declared length above
*max_size*, decompressed size different from the declared one, trailing
bytes, CRC mismatch; for ``Inflater.feed`` a corrupt stream, a message
inflating to more than *max_message* bytes, or more than *max_message*
compressed bytes buffered without the suffix. After such an error the
Inflater is broken: every ``feed`` raises FrameError until ``reset()``.
``TypeError`` for non-bytes-like data or wrongly typed arguments,
``ValueError`` for out-of-range arguments (``threshold``/``max_size`` < 0,
``level`` outside 0..9 and -1, ``min_saving`` outside [0, 1),
``max_message`` < 1).
"""

from fastcore._select import load

_impl = load("framing")

pack = _impl.pack
unpack = _impl.unpack
Inflater = _impl.Inflater
FrameError = _impl.FrameError
MAGIC = _impl.MAGIC
VERSION = _impl.VERSION
CODEC_RAW = _impl.CODEC_RAW
CODEC_DEFLATE = _impl.CODEC_DEFLATE

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
