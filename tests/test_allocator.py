"""llrnet.core.allocator: freed tensor memory is reused instead of faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llrnet.core import allocator

# The first large block of a fresh process: glibc maps it (above the 128 KiB
# starting threshold) unless the thresholds were raised, in which case it comes from
# the heap, and freeing it leaves the heap as large as it was (kept for reuse).
PROBE = """
import ctypes, sys, torch
from llrnet.core.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = [ctypes.c_long]
t = torch.ones(5 * 2**20)  # 20 MB
top = libc.sbrk(0)
in_heap = t.data_ptr() < top and top - t.data_ptr() < 2**30
del t
print(applied, in_heap, libc.sbrk(0) == top)
"""


def _probe(mode: str) -> list[bool]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    return [word == "True" for word in out]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_serves_tensors_from_the_heap_and_keeps_them() -> None:
    applied, in_heap, kept = _probe("tuned")
    if not applied:
        pytest.skip("this C library has no working mallopt (not glibc)")
    assert in_heap and kept
    _, in_heap, _ = _probe("default")
    assert not in_heap  # glibc's defaults map it: the probe tells the two apart


def test_user_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_applied", None)
    for name in [n for n in os.environ if n.startswith("MALLOC_")] + ["GLIBC_TUNABLES"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert allocator.user_settings() == ["MALLOC_ARENA_MAX"]
    assert allocator.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1")
    assert allocator.user_settings() == ["GLIBC_TUNABLES"]
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.rtld.optional_static_tls=1")
    assert allocator.user_settings() == []
