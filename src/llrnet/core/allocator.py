"""glibc malloc settings for llrnet's own processes: keep freed tensor memory for reuse. Two
``mallopt`` calls made by the CLI and the demo's workers, never on import.
More: docs/core.md, "llrnet.core.allocator"."""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

#: ``mallopt`` parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: Blocks up to this size come from the heap: glibc's ceiling for the threshold on
#: 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``); larger values are refused.
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of the heap kept for reuse before any is returned.
TRIM_THRESHOLD = 2**30

_applied: bool | None = None


def user_settings() -> list[str]:
    """The environment variables through which the user configures glibc's malloc."""
    names = [name for name in os.environ if name.startswith("MALLOC_")]
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        names.append("GLIBC_TUNABLES")
    return sorted(names)


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); True if set.

    Does nothing (False) where the user configured malloc (:func:`user_settings`),
    on other systems than Linux, or where the C library has no working
    ``mallopt`` (musl accepts the call and ignores it: False).
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or user_settings():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    logger.debug("malloc: mmap threshold %d, trim threshold %d: %s", MMAP_THRESHOLD,
                 TRIM_THRESHOLD, "set" if _applied else "not supported")
    return _applied
