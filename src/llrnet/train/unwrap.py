"""The one DDP rule the training tasks follow for their extra forward passes."""

from __future__ import annotations

from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["unwrap_ddp"]


def unwrap_ddp(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (else ``model``).

    Rule followed by every task: exactly ONE forward per step goes through the
    wrapper (it prepares DDP's gradient all-reduce for the step's single
    ``backward``); attack passes, LLR inner passes and the other extra passes
    use the unwrapped module: their input gradients need no synchronization, and
    DDP does not support ``autograd.grad`` / double backprop through repeated
    wrapper forwards. The step's one backward still all-reduces every
    parameter's full gradient, because autograd accumulates each parameter's
    gradient once, summed over all the passes that used it.
    """
    return model.module if isinstance(model, DistributedDataParallel) else model
