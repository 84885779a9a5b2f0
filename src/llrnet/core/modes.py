"""A caller's module returned as given: every submodule's train/eval mode, every parameter's
``requires_grad`` and the device of its tensors are restored after llrnet ran it.
More: docs/core.md, "llrnet.core.modes"."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def _single_device(module: nn.Module) -> torch.device | None:
    """The one device of ``module``'s parameters and buffers, or None (none, or several)."""
    devices = {t.device for t in [*module.parameters(), *module.buffers()]}
    return devices.pop() if len(devices) == 1 else None


@contextmanager
def kept_as_given(module: Any) -> Iterator[None]:
    """Run the ``with`` body, then put ``module`` back as it was (also on error).

    Restored: the ``training`` flag of every submodule (a model with some
    submodules in eval mode and others in train mode comes back mixed, not all
    in its top module's mode), ``requires_grad`` of every parameter, and the
    device, when all its tensors lay on one device and the body moved them
    (``module.to`` keeps the parameter objects, so references stay valid).
    Values are not restored: the body must not change them (forward passes in
    eval mode leave batch-norm statistics alone). Anything that is not an
    ``nn.Module`` passes through untouched.
    """
    if not isinstance(module, nn.Module):
        yield
        return
    modes = [(child, child.training) for child in module.modules()]
    grads = [(parameter, parameter.requires_grad) for parameter in module.parameters()]
    device = _single_device(module)
    try:
        yield
    finally:
        if device is not None and _single_device(module) != device:
            module.to(device)
        for child, training in modes:
            child.training = training
        for parameter, requires_grad in grads:
            parameter.requires_grad_(requires_grad)
