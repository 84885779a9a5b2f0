"""A tiny linear oracle and its labelled 8x8 images, shared by the attack tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RowwiseLinear(nn.Module):
    """``x.flatten(1) @ weight.T + bias``, computed one row at a time.

    A matrix kernel may round differently for different batch sizes (oneDNN's
    small-batch paths on AVX-512/AMX CPUs do, by about 1e-7), so an ``nn.Linear``
    cannot tell whether an attack's results depend on how it batches. An
    elementwise product and a sum over the last dimension give every row the same
    arithmetic whatever the batch size.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone())
        self.bias = nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        """Logits [N, classes] of images [N, C, H, W] with C*H*W = in_features."""
        return (x.flatten(1)[:, None, :] * self.weight[None]).sum(dim=-1) + self.bias


def linear_model(rowwise: bool = False) -> nn.Module:
    """Flatten + Linear(64, 2) with scaled weights (confident, seeded).

    ``rowwise=True`` gives the same map as a ``RowwiseLinear``, whose outputs do
    not depend on the batch size bit for bit.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        model[1].weight.mul_(4)
    if rowwise:
        return RowwiseLinear(model[1])
    return model


def data(model: nn.Module, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` seeded images [n, 1, 8, 8] in [0, 1], labelled by ``model``'s prediction."""
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(1)


class ScoreLinear(nn.Module):
    """Two logits ``[0, w.x + b]`` of images [N, C, H, W], computed row by row (batch-exact)."""

    def __init__(self, w: Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.reshape(1, -1).clone())
        self.b = b

    def forward(self, x: Tensor) -> Tensor:
        score = (x.flatten(1) * self.w).sum(dim=1) + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)
