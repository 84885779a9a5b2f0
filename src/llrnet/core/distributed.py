"""Process-group helpers for runs under ``torchrun`` (gloo on CPU, NCCL on CUDA).
More: docs/core.md, "llrnet.core.distributed"."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from llrnet.core.devices import resolve_device
from llrnet.core.errors import UsageError


def is_distributed() -> bool:
    """True when a process group is initialized with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


BACKEND_VARIABLE = "LLRNET_DIST_BACKEND"
"""Environment variable that overrides the process group's backend (``gloo`` or ``nccl``)."""


def backend_for(device: str | torch.device) -> str:
    """The process group backend for ``device``: NCCL for CUDA, gloo otherwise, unless
    :data:`BACKEND_VARIABLE` names one (``gloo`` lets several processes share one GPU,
    which NCCL refuses).

    Raises:
        UsageError: the variable names another backend.
    """
    chosen = os.environ.get(BACKEND_VARIABLE, "").strip().lower()
    if chosen:
        if chosen not in ("gloo", "nccl"):
            raise UsageError(f"{BACKEND_VARIABLE}={chosen!r}: use gloo or nccl")
        return chosen
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(device: str | torch.device = "cpu") -> bool:
    """Initialize the default process group if launched by ``torchrun``.

    Uses :func:`backend_for` (NCCL for CUDA devices, gloo otherwise). Returns True
    when a group with more than one process is active. Idempotent.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(device))
    return is_distributed()


def local_device(device: str | torch.device) -> torch.device:
    """``device`` with the CUDA index set to ``LOCAL_RANK`` under torchrun; with the
    gloo backend (:func:`backend_for`) ranks beyond the GPU count share them
    (``LOCAL_RANK`` modulo the count).

    Raises:
        UsageError: a misspelt device, one this machine does not have, or more
            NCCL processes than GPUs.
    """
    target = resolve_device(device)
    if target.type == "cuda" and target.index is None and "LOCAL_RANK" in os.environ:
        local = int(os.environ["LOCAL_RANK"])
        count = torch.cuda.device_count()
        if local >= count:
            if backend_for(target) != "gloo":
                raise UsageError(f"process {local} of this node has no GPU of its own "
                                 f"({count} visible); run at most {count} processes per "
                                 f"node, or set {BACKEND_VARIABLE}=gloo to share them")
            local %= count
        return torch.device("cuda", local)
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
