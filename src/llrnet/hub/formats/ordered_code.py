"""TF's OrderedCode keys for the slices of partitioned variables.
More: docs/hub.md, "llrnet.hub.formats.ordered_code"."""

from __future__ import annotations

from collections.abc import Sequence

_HEADER_BITS = (
    (0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0),
    (0xFE, 0), (0xFF, 0), (0xFF, 0x80), (0xFF, 0xC0),
)


def num_increasing(value: int) -> bytes:
    """``WriteNumIncreasing``: a length byte, then the big-endian bytes of ``value``."""
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return bytes([len(body)]) + body


def string(value: bytes) -> bytes:
    """``WriteString``: 0x00 -> 00 ff, 0xff -> ff 00, terminated by 00 01."""
    out = bytearray()
    for byte in value:
        if byte == 0x00:
            out += b"\x00\xff"
        elif byte == 0xFF:
            out += b"\xff\x00"
        else:
            out.append(byte)
    return bytes(out) + b"\x00\x01"


def signed_num_increasing(value: int) -> bytes:
    """``WriteSignedNumIncreasing`` of an int64."""
    x = ~value if value < 0 else value
    if x < 64:
        return bytes([(_HEADER_BITS[1][0] ^ value) & 0xFF])
    length = (x.bit_length() + 1 + 6) // 7  # smallest L with x < 2^(7L - 1)
    raw = bytearray(value.to_bytes(10, "big", signed=True))
    begin = 10 - length
    raw[begin] ^= _HEADER_BITS[length][0]
    raw[begin + 1] ^= _HEADER_BITS[length][1]
    return bytes(raw[begin:])


def slice_key(name: str, extents: Sequence[tuple[int, int]]) -> bytes:
    """The index key of one slice of a partitioned variable."""
    key = num_increasing(0) + string(name.encode("utf-8")) + num_increasing(len(extents))
    for start, length in extents:
        key += signed_num_increasing(start) + signed_num_increasing(length)
    return key


def describe(extents: Sequence[tuple[int, int]]) -> str:
    """``"0,2:-"`` style text (TF's slice spec) of ``extents``."""
    return ":".join("-" if length == -1 else f"{start},{length}" for start, length in extents)
