"""Building blocks shared by the architectures: TF-"SAME" convolutions and pooling.
More: docs/models.md, "llrnet.models.layers"."""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from llrnet.core.contracts import check_scale
from llrnet.core.errors import UsageError

Padding = Literal["same", "symmetric"]


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF "SAME" padding ``(before, after)`` for one spatial dimension of ``size``."""
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    if top == bottom and left == right and value == 0.0:
        return x  # symmetric: handled by the caller's built-in padding
    return F.pad(x, (left, right, top, bottom), value=value)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` whose padding follows TF "SAME" for any input size.

    Input [N, C_in, H, W] -> output [N, C_out, ceil(H / s), ceil(W / s)].
    Symmetric cases use the fast built-in padding; asymmetric ones an explicit
    ``F.pad`` (zeros) first.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, bias=bias)
        self._k = kernel_size
        self._s = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self._k, self._s)
        left, right = same_padding(x.shape[-1], self._k, self._s)
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, self._s, (top, left))
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self._s, 0)


class MaxPool2dSame(nn.Module):
    """Max-pool with TF "SAME" padding (padded cells never win: they are -inf)."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size, self.stride)
        left, right = same_padding(x.shape[-1], self.kernel_size, self.stride)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


class _Softplus(torch.autograd.Function):
    """``log(1 + e^x)`` as ``max(x, 0) + log(1 + e^-|x|)``; the gradient ``sigmoid(x)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp_min(0.0).add_(x.abs().neg_().exp_().add_(1.0).log_())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        # Differentiable torch ops: LLR's gradient of a gradient goes through here.
        return grad * torch.sigmoid(x)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))`` elementwise, any shape; the same function as ``F.softplus``.

    float32 and float64 go through :class:`_Softplus`:
    ``max(x, 0) + log(1 + exp(-|x|))`` with the exact gradient ``sigmoid(x)``
    (twice differentiable, for LLR). PyTorch's own CPU kernel evaluates
    ``log1p``, whose AVX-512 path is about 3x slower than ``exp`` + ``log`` on an
    AMD EPYC (Zen 4): 9.5 against 2.7 ns per element on one thread
    (``benchmarks/softplus.py``; docs/design.md, "Softplus"). Rounding
    ``1 + e^-|x|`` costs at most half an ulp of 1 (6e-8 in float32), so the
    result stays within float32 rounding of the true value, as ``F.softplus``
    does. bf16 and float16 use ``F.softplus``, which computes them in float32.
    """
    if x.dtype not in (torch.float32, torch.float64):
        return F.softplus(x)
    return cast(torch.Tensor, _Softplus.apply(x))


SOFTPLUS_LINEAR_ABOVE = 20.0
"""Where :func:`softplus_inference` returns ``x`` itself: ``log(1 + e^20)`` is 20 in
float32 (the difference, 2e-9, is below half an ulp of 20)."""


def softplus_inference(x: torch.Tensor) -> torch.Tensor:
    """:func:`softplus` for forwards without gradients, any shape, float32 or float64:
    ``max(log(1 + e^min(x, 20)), x)`` in four in-place passes after one copy (the
    gradient form needs seven). Within float32 rounding of the true value, like
    :func:`softplus`: rounding ``1 + e^x`` costs at most half an ulp of 1 (6e-8) in
    absolute terms, and above 20 the result is ``x``. Where autograd records (grad
    enabled and ``x`` requires it) and for other dtypes it is :func:`softplus`.
    """
    if x.dtype not in (torch.float32, torch.float64) or (
            x.requires_grad and torch.is_grad_enabled()):
        return softplus(x)
    out = x.clamp_max(SOFTPLUS_LINEAR_ABOVE).exp_().add_(1.0).log_()
    return torch.maximum(out, x, out=out)



def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    bias: bool = False,
    padding: Padding = "same",
) -> nn.Conv2d:
    """A convolution padded TF-style (``"same"``) or PyTorch-style (``"symmetric"``)."""
    if padding == "same":
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, bias=bias)
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=bias
    )


def max_pool(kernel_size: int, stride: int, padding: Padding = "same") -> nn.Module:
    """Max-pool padded TF-style (``"same"``) or PyTorch-style (``"symmetric"``)."""
    if padding == "same":
        return MaxPool2dSame(kernel_size, stride)
    return nn.MaxPool2d(kernel_size, stride, padding=kernel_size // 2)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean/std as buffers (saved in weights).

    Input [N, C, H, W] in [0, 1]; output the same shape.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise UsageError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized ``x``; InputError for values on another scale (0-255, or
        normalized twice: :func:`llrnet.core.contracts.check_scale`)."""
        return (check_scale(x) - self.mean) / self.std


class ScaleToSymmetric(nn.Module):
    """``2x - 1``: maps [0, 1] images to [-1, 1] (the LLR ImageNet modules' input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 - 1.0
