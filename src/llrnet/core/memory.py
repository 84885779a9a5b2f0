"""Memory-safe batching: a working batch size that halves on ``torch.OutOfMemoryError``,
and the batch size that fits in a device's free memory."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import torch

from llrnet.core.checks import check_count
from llrnet.core.errors import UsageError

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["BatchLimit", "batch_for_memory", "is_out_of_memory", "map_batches",
           "release_cached_memory"]


def is_out_of_memory(error: BaseException) -> bool:
    """True for ``torch.OutOfMemoryError`` (CUDA's, or the same class raised by a model)."""
    return isinstance(error, torch.OutOfMemoryError)


def release_cached_memory(device: torch.device | None) -> None:
    """Return the CUDA caching allocator's free blocks after an OOM (nothing elsewhere)."""
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


class BatchLimit:
    """The most items handed to one call, halved after each out-of-memory error, down to 1.

    ``initial`` is the starting size, ``size`` the current one; ``what`` names
    the batch in the log line that each halving writes once (warning level).
    A limit is kept for as long as its owner runs, so a size that failed once
    is not tried again.
    """

    def __init__(self, size: int, what: str, device: torch.device | None = None) -> None:
        self.initial = check_count(size, "batch size")
        self.size = self.initial
        self.what = what
        self.device = device

    @property
    def halved(self) -> bool:
        """True once an out-of-memory error has lowered the size."""
        return self.size < self.initial

    def halve(self) -> None:
        """Halve :attr:`size` (rounding down, at least 1), free CUDA's cache and log it.

        Call it after leaving the ``except`` block of the error, so that the failed
        call's tensors are already released.
        """
        before = self.size
        self.size = max(1, before // 2)
        release_cached_memory(self.device)
        logger.warning("%s: out of memory at %d; continuing at %d for the rest of the run",
                       self.what, before, self.size)


def map_batches(fn: Callable[[int, int], T], total: int, limit: BatchLimit) -> list[T]:
    """``fn(start, stop)`` over consecutive slices ``[start, stop)`` of ``range(total)``,
    each at most ``limit.size`` long; on ``torch.OutOfMemoryError`` the limit halves
    and the failed slice is retried, so every item is processed exactly once.

    Raises:
        torch.OutOfMemoryError: a slice of one item does not fit.
    """
    out: list[T] = []
    start = 0
    while start < total:
        stop = min(total, start + limit.size)
        failed = False
        try:
            out.append(fn(start, stop))
        except torch.OutOfMemoryError:
            if stop - start == 1:
                raise
            failed = True  # halve outside the handler: the traceback holds the call's tensors
        if failed:
            limit.size = min(limit.size, stop - start)
            limit.halve()
            continue
        start = stop
    return out


def batch_for_memory(free_bytes: int, per_image_bytes: int, *, fraction: float = 0.5,
                     cap: int = 1024) -> int:
    """The batch size to start from: the largest power of two whose images take at
    most ``fraction`` of ``free_bytes``, between 1 and ``cap``.

    ``per_image_bytes`` is one image's measured working memory (bytes, > 0);
    ``fraction`` in (0, 1] leaves the rest for the allocator's fragmentation and
    for what the measurement missed. A power of two keeps the result stable when
    the free memory moves a little between runs.

    Example: 40 GiB free, 300 MiB per image, fraction 0.5 -> 68 fit -> 64.
    """
    if per_image_bytes <= 0:
        raise UsageError(f"per_image_bytes must be > 0, got {per_image_bytes}")
    if not 0.0 < fraction <= 1.0:
        raise UsageError(f"fraction must be in (0, 1], got {fraction}")
    fit = int(max(0, free_bytes) * fraction) // per_image_bytes
    fit = max(1, min(int(cap), fit))
    return 1 << (fit.bit_length() - 1)
