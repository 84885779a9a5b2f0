"""Device names given by users (``--device``, ``device:`` in a training config).
More: docs/core.md, "llrnet.core.devices"."""

from __future__ import annotations

import os

import torch

from llrnet.core.errors import UsageError

#: Device types whose availability :func:`resolve_device` checks.
_CHECKED = ("cpu", "cuda", "mps")


def parse_device(device: str | torch.device, *, what: str = "device") -> torch.device:
    """``device`` as a ``torch.device``; only the spelling is checked, not availability.

    Raises:
        UsageError: not a device name (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise UsageError(f"{what} must be a string such as 'cpu' or 'cuda:0', got {device!r}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(
            f"{what} {device!r} is not a device; use cpu, cuda, cuda:N or mps"
        ) from None
    if parsed.type not in _CHECKED:
        raise UsageError(f"{what} {device!r} is not supported; use cpu, cuda, cuda:N or mps")
    return parsed


def resolve_device(device: str | torch.device, *, what: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine.

    Raises:
        UsageError: a misspelt name, CUDA (or MPS) requested where it is not
            available, or a CUDA index beyond the visible GPUs.
    """
    parsed = parse_device(device, what=what)
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{what} {str(device)!r}: CUDA is not available on this machine; "
                             "use --device cpu")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise UsageError(f"{what} {str(device)!r}: this machine has {count} CUDA "
                             f"device(s), cuda:0 to cuda:{count - 1}")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{what} {str(device)!r}: MPS is not available on this machine")
    return parsed


def available_memory(device: str | torch.device) -> int | None:
    """Bytes a new allocation on ``device`` can take now: free memory of a CUDA
    device, ``MemAvailable`` (else physical memory) for the CPU; None when unknown."""
    parsed = parse_device(device)
    if parsed.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(parsed)[0])
    if parsed.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(nbytes: int, device: str | torch.device, what: str) -> None:
    """Refuse, before allocating, ``nbytes`` for ``what`` that ``device`` cannot hold
    (:func:`available_memory`); a device of unknown memory is not checked.

    Raises:
        UsageError: ``what needs X GiB, more than the Y GiB available on DEVICE``.
    """
    free = available_memory(device)
    if free is not None and nbytes > free:
        raise UsageError(f"{what} needs {nbytes / 2**30:.1f} GiB, more than the "
                         f"{free / 2**30:.1f} GiB available on {device}")
