"""Device names given by users (``--device``, ``device:`` in a training config).
More: docs/core.md, "llrnet.core.devices"."""

from __future__ import annotations

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
