from typing import Final, TypedDict

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

_BytesLike = bytes | bytearray | memoryview

MAGIC: Final[bytes]
VERSION: Final[int]
CODEC_RAW: Final[int]
CODEC_DEFLATE: Final[int]

class FrameError(ValueError): ...

def pack(
    data: _BytesLike, *, threshold: int = 1024, level: int = 6, min_saving: float = 0.1
) -> bytes: ...
def unpack(frame: _BytesLike, *, max_size: int) -> bytes: ...

class _InflaterStats(TypedDict):
    messages: int
    bytes_in: int
    bytes_out: int

class Inflater:
    def __init__(self, max_message: int) -> None: ...
    @property
    def max_message(self) -> int: ...
    @property
    def messages(self) -> int: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...
    @property
    def pending(self) -> int: ...
    @property
    def broken(self) -> bool: ...
    def feed(self, chunk: _BytesLike) -> bytes | None: ...
    def reset(self) -> None: ...
    def stats(self) -> _InflaterStats: ...
