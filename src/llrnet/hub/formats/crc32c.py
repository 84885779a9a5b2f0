"""CRC32C (Castagnoli), as TF's tensor bundles and LevelDB tables use it.
More: docs/hub.md, "llrnet.hub.formats.crc32c"."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

logger = logging.getLogger(__name__)

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8


def _make_tables() -> np.ndarray:
    tables = np.zeros((8, 256), dtype=np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_POLY if crc & 1 else 0)
        tables[0, byte] = crc
    for k in range(1, 8):
        previous = tables[k - 1]
        tables[k] = (previous >> 8) ^ tables[0][previous & 0xFF]
    return tables


_TABLES = _make_tables()
_T = [[int(v) for v in row] for row in _TABLES]


def crc32c_python(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """Pure-Python CRC32C of ``data`` continuing from ``value`` (slicing-by-8)."""
    view = memoryview(data).cast("B")
    crc = value ^ 0xFFFFFFFF
    t0, t1, t2, t3, t4, t5, t6, t7 = _T
    n8 = len(view) // 8 * 8
    if n8:
        words = np.frombuffer(view[:n8], dtype="<u4").tolist()
        for i in range(0, len(words), 2):
            lo = words[i] ^ crc
            hi = words[i + 1]
            crc = (t7[lo & 0xFF] ^ t6[(lo >> 8) & 0xFF] ^ t5[(lo >> 16) & 0xFF]
                   ^ t4[lo >> 24] ^ t3[hi & 0xFF] ^ t2[(hi >> 8) & 0xFF]
                   ^ t1[(hi >> 16) & 0xFF] ^ t0[hi >> 24])
    for byte in view[n8:]:
        crc = t0[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _load_fast() -> Callable[[bytes | bytearray | memoryview, int], int] | None:
    try:
        import google_crc32c  # deferred: optional (google-crc32c, extra fast)
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    if getattr(google_crc32c, "implementation", "c") != "c":
        return None  # its own fallback is slower than ours

    chunk = 1 << 23

    def fast(data: bytes | bytearray | memoryview, value: int = 0) -> int:
        # The C extension accepts only objects without a buffer-release hook
        # (bytes), not memoryviews or mmaps: feed those in 8 MiB copies.
        if isinstance(data, bytes):
            return int(google_crc32c.extend(value, data))
        view = memoryview(data).cast("B")
        for start in range(0, len(view), chunk):
            value = int(google_crc32c.extend(value, bytes(view[start : start + chunk])))
        return value

    return fast


_FAST = _load_fast()
HAVE_FAST = _FAST is not None
"""True when the C implementation of ``google-crc32c`` is used."""


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """CRC32C of ``data`` (uint32), continuing a running ``value`` (0 to start)."""
    if _FAST is not None:
        return _FAST(data, value)
    return crc32c_python(data, value)


def mask(crc: int) -> int:
    """TF/LevelDB masked CRC: rotate right by 15 bits, add a constant (mod 2^32)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
