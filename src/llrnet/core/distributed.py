"""Process-group helpers for runs under ``torchrun`` (gloo on CPU, NCCL on CUDA).
More: docs/core.md, "llrnet.core.distributed"."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from llrnet.core.devices import resolve_device


def is_distributed() -> bool:
    """True when a process group is initialized with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def init_from_env(device: str | torch.device = "cpu") -> bool:
    """Initialize the default process group if launched by ``torchrun``.

    Uses NCCL for CUDA devices and gloo otherwise. Returns True when a group
    with more than one process is active. Idempotent.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return is_distributed()


def local_device(device: str | torch.device) -> torch.device:
    """``device`` with the CUDA index set to ``LOCAL_RANK`` under torchrun.

    Raises:
        UsageError: a misspelt device, or one this machine does not have.
    """
    target = resolve_device(device)
    if target.type == "cuda" and target.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return target


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` in rank order (``[value]`` in a single process)."""
    if not is_distributed():
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered
