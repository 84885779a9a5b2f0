"""CRC32C (Castagnoli), as TF's tensor bundles and LevelDB tables use it.
More: docs/hub.md, "llrnet.hub.formats.crc32c"."""

from __future__ import annotations

import google_crc32c

_MASK_DELTA = 0xA282EAD8
_CHUNK = 1 << 23


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C of ``data`` (uint32), continuing a running ``value`` (0 to start).

    Computed by ``google-crc32c`` (its C extension, or its own pure-Python
    fallback where no wheel fits).
    """
    # The C extension takes bytes, not memoryviews or mmaps: feed those in 8 MiB copies.
    if isinstance(data, bytes):
        return int(google_crc32c.extend(value, data))
    view = memoryview(data).cast("B")
    for start in range(0, len(view), _CHUNK):
        value = int(google_crc32c.extend(value, bytes(view[start : start + _CHUNK])))
    return value


def mask(crc: int) -> int:
    """TF/LevelDB masked CRC: rotate right by 15 bits, add a constant (mod 2^32)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
