"""AMF0, the encoding of RTMP commands and metadata: just what encoders send and expect.

Decoding is bounded by the message (every value consumes at least one byte, counts are checked
against what is left) and by nesting depth, so hostile input costs no more than its own size."""

from __future__ import annotations

import struct
from typing import Any

NUMBER, BOOLEAN, STRING, OBJECT, NULL, UNDEFINED = 0, 1, 2, 3, 5, 6
ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, LONG_STRING = 8, 9, 10, 11, 12
_MAX_DEPTH = 16


class AmfError(ValueError):
    """The bytes are not AMF0 this decoder accepts."""


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise AmfError("truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def string(self, size: int) -> str:
        return self.take(size).decode("utf-8", "replace")

    def value(self, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise AmfError("nested too deep")
        marker = self.take(1)[0]
        if marker == NUMBER:
            return struct.unpack(">d", self.take(8))[0]
        if marker == BOOLEAN:
            return self.take(1)[0] != 0
        if marker == STRING:
            return self.string(self.u16())
        if marker == LONG_STRING:
            return self.string(self.u32())
        if marker in (NULL, UNDEFINED):
            return None
        if marker == OBJECT:
            return self.properties(depth)
        if marker == ECMA_ARRAY:
            self.take(4)  # an approximate count: the end marker is what counts
            return self.properties(depth)
        if marker == STRICT_ARRAY:
            return self.strict_array(depth)
        if marker == DATE:
            return struct.unpack(">dh", self.take(10))[0]
        raise AmfError(f"unsupported marker {marker}")

    def properties(self, depth: int) -> dict[str, Any]:
        props: dict[str, Any] = {}
        while True:
            name = self.string(self.u16())
            if not name and self.data[self.pos : self.pos + 1] == bytes([OBJECT_END]):
                self.pos += 1
                return props
            props[name] = self.value(depth + 1)

    def strict_array(self, depth: int) -> list[Any]:
        count = self.u32()
        if count > len(self.data) - self.pos:  # each value is at least one byte
            raise AmfError("array count beyond the message")
        return [self.value(depth + 1) for _ in range(count)]


def decode(data: bytes) -> list[Any]:
    """Every value in `data`, in order."""
    decoder = _Decoder(data)
    values = []
    while decoder.pos < len(data):
        values.append(decoder.value())
    return values


def encode(*values: Any) -> bytes:
    """AMF0 for str, int/float, bool, None (null), dict (object) and list (strict array)."""
    return b"".join(_encode(value) for value in values)


def _encode(value: Any) -> bytes:
    if isinstance(value, bool):
        return bytes([BOOLEAN, int(value)])
    if isinstance(value, int | float):
        return struct.pack(">Bd", NUMBER, value)
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            return struct.pack(">BI", LONG_STRING, len(raw)) + raw
        return struct.pack(">BH", STRING, len(raw)) + raw
    if value is None:
        return bytes([NULL])
    if isinstance(value, dict):
        body = b"".join(_name(key) + _encode(item) for key, item in value.items())
        return bytes([OBJECT]) + body + b"\x00\x00" + bytes([OBJECT_END])
    if isinstance(value, list):
        return struct.pack(">BI", STRICT_ARRAY, len(value)) + b"".join(map(_encode, value))
    raise TypeError(f"no AMF0 encoding for {type(value).__name__}")


def _name(key: str) -> bytes:
    raw = key.encode()
    return struct.pack(">H", len(raw)) + raw
