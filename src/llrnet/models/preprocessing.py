"""The submission's preprocessing, with TF1 semantics, as a module.
More: docs/models.md, "llrnet.models.preprocessing"."""

from __future__ import annotations

import torch
from torch import nn

from llrnet.core.contracts import check_scale
from llrnet.core.errors import UsageError


def tf1_resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TF1 ``resize_bilinear(align_corners=False)`` of [N, C, H, W] to [N, C, *size].

    Differentiable in ``x``; works on any device and float dtype.
    """
    out_h, out_w = size
    x = _resize_axis(x, out_h, dim=2)
    return _resize_axis(x, out_w, dim=3)


def _resize_axis(x: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    in_size = x.shape[dim]
    if in_size == out_size:
        return x
    scale = in_size / out_size
    src = torch.arange(out_size, device=x.device, dtype=torch.float64) * scale
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = (src - lo.to(torch.float64)).to(x.dtype)
    shape = [1] * x.dim()
    shape[dim] = out_size
    frac = frac.view(shape)
    return x.index_select(dim, lo) * (1 - frac) + x.index_select(dim, hi) * frac


def tf1_central_crop(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """TF1 ``central_crop`` of [N, C, H, W]: keep ``fraction`` of each side."""
    if not 0.0 < fraction <= 1.0:
        raise UsageError(f"central crop fraction must be in (0, 1], got {fraction}")
    h, w = x.shape[-2:]
    top = int((h - h * fraction) / 2)
    left = int((w - w * fraction) / 2)
    return x[..., top : h - top, left : w - left]


class CropResizeScale(nn.Module):
    """[N, C, H, W] in [0, 1] -> cropped, resized back to H x W, mapped to [-1, 1].

    Args:
        crop_fraction: central crop kept per side (0.875 in the submission).
        enabled: if False the input is returned unchanged (no crop, no resize,
            no ``2x - 1``), for callers that preprocess themselves.
    """

    def __init__(self, crop_fraction: float = 0.875, enabled: bool = True) -> None:
        super().__init__()
        self.crop_fraction = crop_fraction
        self.enabled = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] in [0, 1] -> the same shape in [-1, 1].

        Raises:
            InputError: values on another scale (0-255, or already normalized;
                :func:`llrnet.core.contracts.check_scale`).
        """
        check_scale(x)
        if not self.enabled:
            return x
        h, w = x.shape[-2:]
        x = tf1_resize_bilinear(tf1_central_crop(x, self.crop_fraction), (h, w))
        return (x - 0.5) * 2.0

    def extra_repr(self) -> str:
        return f"crop_fraction={self.crop_fraction}, enabled={self.enabled}"
