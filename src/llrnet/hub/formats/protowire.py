"""A minimal protobuf wire-format decoder and encoder.
More: docs/hub.md, "llrnet.hub.formats.protowire"."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from llrnet.core.errors import InputError

Field = tuple[int, int, "int | bytes"]
"""(field number, wire type, value): varints and fixed ints as int, others as bytes."""


def read_varint(buf: bytes | memoryview, pos: int, *, what: str = "varint") -> tuple[int, int]:
    """Decode a LEB128 varint at ``pos``; returns (value, position after it)."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise InputError(f"truncated {what}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise InputError(f"malformed {what}: more than 10 bytes")


def write_varint(value: int) -> bytes:
    """Encode a non-negative integer (negative int64: two's complement) as LEB128."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def iter_fields(buf: bytes | memoryview, *, what: str = "message") -> Iterator[Field]:
    """Yield the fields of a serialized message in order."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos, what=what)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = read_varint(buf, pos, what=what)
        elif wire == 1:
            if pos + 8 > end:
                raise InputError(f"truncated {what}")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = read_varint(buf, pos, what=what)
            if pos + length > end:
                raise InputError(f"truncated {what}: field {number} overruns the message")
            value = bytes(buf[pos : pos + length])
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise InputError(f"truncated {what}")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise InputError(f"malformed {what}: unsupported wire type {wire}")
        yield number, wire, value


def as_int64(value: int) -> int:
    """Reinterpret a decoded varint as a signed int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def field_varint(number: int, value: int) -> bytes:
    """Encode a varint field (omitted by the caller when zero, as proto3 does)."""
    return write_varint(number << 3) + write_varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    """Encode a length-delimited field."""
    return write_varint((number << 3) | 2) + write_varint(len(value)) + value


def field_fixed32(number: int, value: int) -> bytes:
    """Encode a fixed32 field."""
    return write_varint((number << 3) | 5) + struct.pack("<I", value)
