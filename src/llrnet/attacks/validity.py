"""The two-class MNIST warm-up's spatial attacks: TF-path geometry with the kit's ``valid_check``.
More: docs/attacks.md, "llrnet.attacks.validity"."""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llrnet.attacks.base import Attack, Pool
from llrnet.attacks.parts import ImageRng
from llrnet.attacks.spatial import RandomSpatial, grid_axes, refine_granularity, tf_spatial
from llrnet.core.checks import check_count, check_positive
from llrnet.core.errors import UsageError

INK_TOLERANCE = 0.1
"""Relative change of total ink below which a transform is valid (the kit's 10%)."""

KIT_VALID_PENALTY = 1e9
"""What the kit subtracts from a transform's cross-entropy (see :class:`CheckedSpatialGrid`)."""


def ink_valid(before: Tensor, after: Tensor, tolerance: float = INK_TOLERANCE) -> Tensor:
    """The kit's ``mnist_valid_check``: ``| sum|after| - sum|before| | < tolerance * sum|before|``.

    ``before``, ``after``: [N, C, H, W]; returns bool [N]. An image with no ink
    is never valid.
    """
    weight_before = before.abs().flatten(1).sum(dim=1)
    weight_after = after.abs().flatten(1).sum(dim=1)
    return (weight_after - weight_before).abs() < weight_before * tolerance


def checked_grid(limits: tuple[float, float, float], granularity: tuple[int, int, int]
                 ) -> Tensor:
    """``product(linspace(-l, l, g) for (l, g))`` as (dx px, dy px, angle deg) rows [T, 3].

    The MNIST grid's attack unpacked each tuple in this order (horizontal,
    vertical, rotation), unlike the bird-or-bicycle grid's.
    """
    axes = [np.linspace(-lim, lim, num=g) for lim, g in zip(limits, granularity)]
    return torch.tensor(list(itertools.product(*axes)), dtype=torch.float64).reshape(-1, 3)


def kit_selection(xent: Tensor, correct: Tensor, valid: Tensor | None) -> Tensor:
    """The transform the kit's grid keeps per image: an index into T, or -1 for none.

    ``xent`` [N, T] float64 cross-entropies, ``correct`` [N, T] bool, ``valid``
    [N, T] bool or None, in grid order. As the kit's loop: starting from
    ``max_xent = 0`` and ``all_correct = True``, transform t replaces the kept
    one when it is the first misclassified one, or when its (penalized)
    cross-entropy exceeds every earlier one while its correctness equals
    ``all_correct``. With ``valid``, an invalid transform counts as correct,
    and a *valid* one's cross-entropy is lowered by :data:`KIT_VALID_PENALTY`
    (the kit's sign: it penalized the valid transforms, not the invalid ones).
    So a valid transform is kept only as the first valid misclassification;
    otherwise the invalid transform of largest cross-entropy is kept (even if
    the model classifies it wrongly), and with neither the original image
    (no border) stays.
    """
    n, count = xent.shape
    score = xent.double()
    ok = correct.clone()
    if valid is not None:
        ok |= ~valid
        score = score - valid.double() * KIT_VALID_PENALTY
    chosen = torch.full((n,), -1, dtype=torch.int64)
    max_xent = torch.zeros(n, dtype=torch.float64)
    all_correct = torch.ones(n, dtype=torch.bool)
    for t in range(count):
        cur, cur_ok = score[:, t], ok[:, t]
        update = ((cur > max_xent) & (cur_ok == all_correct)) | (~cur_ok & all_correct)
        max_xent = torch.maximum(cur, max_xent)
        all_correct &= cur_ok
        chosen[update] = t
    return chosen


class CheckedSpatialGrid(Attack):
    """The kit's MNIST ``SpatialGridAttack``: a grid on the TF path, chosen by the kit's rule.

    Args:
        limits: (dx px, dy px, angle deg) half-ranges; MNIST (10, 10, 10).
        granularity: values per axis; MNIST (5, 5, 11): 275 transforms.
        border: black border in pixels (TF path); MNIST 4.
        valid_check: ``"ink"`` (:func:`ink_valid`, the MNIST warm-up) or None.
        batch_size: (image, transform) pairs classified at once; bounds
            memory, does not change results.

    Every transform is classified; per image, :func:`kit_selection` picks one
    (cross-entropy, the kit's first-misclassification rule and ``valid_check``
    handling). Output is float (no 8-bit rounding): the TF path.
    """

    name = "spatial_grid"
    kind = "spatial"

    def __init__(
        self,
        *,
        limits: tuple[float, float, float] = (10.0, 10.0, 10.0),
        granularity: tuple[int, int, int] = (5, 5, 11),
        border: int = 4,
        valid_check: str | None = "ink",
        batch_size: int = 1024,
    ) -> None:
        super().__init__()
        if len(limits) != 3 or len(granularity) != 3:
            raise UsageError("limits and granularity must have 3 entries each (dx, dy, angle)")
        if valid_check not in ("ink", None):
            raise UsageError(f"valid_check must be 'ink' or None, got {valid_check!r}")
        self.limits = tuple(check_positive(v, "limits entries", allow_zero=True) for v in limits)
        self.granularity = tuple(check_count(g, "granularity entries") for g in granularity)
        self.border = check_count(border, "border", minimum=0)
        self.valid_check = valid_check
        self.batch_size = check_count(batch_size, "batch_size")
        self.transforms = checked_grid(limits, granularity)

    def budget(self) -> dict[str, int]:
        """Values per axis: ``{"granularity_dx": 5, "granularity_dy": 5,
        "granularity_angle": 11}`` for the MNIST grid."""
        g0, g1, g2 = self.granularity
        return grid_axes("intended", (g0, g1, g2))

    def _scaled(self, factor: int) -> CheckedSpatialGrid:
        """The same limits, each axis refined to about ``factor`` times as many transforms,
        the original ones included (:func:`~llrnet.attacks.spatial.refine_granularity`).
        The kit's selection rule runs in grid order, so the kept transform may differ even
        where the original's is still in the grid."""
        g0, g1, g2 = refine_granularity(self.granularity, factor)
        l0, l1, l2 = self.limits
        return self._replace(granularity=(g0, g1, g2),
                             transforms=checked_grid((l0, l1, l2), (g0, g1, g2)))

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
             ) -> Tensor:
        n, count = x.shape[0], self.transforms.shape[0]
        xent = torch.empty((n, count), dtype=torch.float64)
        correct = torch.empty((n, count), dtype=torch.bool)
        valid = torch.empty((n, count), dtype=torch.bool)
        before = tf_spatial(x, torch.zeros((n, 3), dtype=torch.float64), self.border)
        per_batch = max(1, self.batch_size // n)
        with torch.no_grad():
            for t0 in range(0, count, per_batch):
                ts = list(range(t0, min(t0 + per_batch, count)))
                params = self.transforms[ts].repeat_interleave(n, dim=0)
                images = tf_spatial(x.repeat(len(ts), 1, 1, 1), params, self.border)
                labels = y.repeat(len(ts))
                logits = model(images)
                losses = F.cross_entropy(logits.float(), labels, reduction="none")
                xent[:, ts] = losses.double().reshape(len(ts), n).T.cpu()
                correct[:, ts] = (logits.argmax(dim=1) == labels).reshape(len(ts), n).T.cpu()
                ok = ink_valid(before.repeat(len(ts), 1, 1, 1), images)
                valid[:, ts] = ok.reshape(len(ts), n).T.cpu()
        chosen = kit_selection(xent, correct, valid if self.valid_check else None)
        out = x.clone()
        picked = (chosen >= 0).nonzero().flatten()
        if len(picked):
            rows = picked.to(x.device)
            out[rows] = tf_spatial(x[rows], self.transforms[chosen[picked]], self.border)
        return out


class CheckedRandomSpatial(RandomSpatial):
    """:class:`~llrnet.attacks.spatial.RandomSpatial` redrawn until :func:`ink_valid`.

    As the kit's ``RandomSpatialAttack`` with ``valid_check``: each image draws
    transforms from its own stream until one is valid against its bordered,
    untransformed self. The kit looped forever on an image with no valid
    transform (e.g. a blank one); here an image keeps its ``max_draws``-th draw.
    """

    def __init__(self, *, limits: tuple[float, float, float] = (10.0, 10.0, 10.0),
                 border: int = 4, max_draws: int = 1000) -> None:
        super().__init__(limits=limits, border=border)
        self.max_draws = check_count(max_draws, "max_draws")

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
             ) -> Tensor:
        n = x.shape[0]
        before = tf_spatial(x, torch.zeros((n, 3), dtype=torch.float64), self.border)
        out = torch.empty_like(x)
        todo = torch.arange(n)
        for draw in range(self.max_draws):
            params = self.sample(rng.subset(todo))
            images = self.transform(x[todo.to(x.device)], params)
            ok = ink_valid(before[todo.to(x.device)], images).cpu()
            done = ok if draw < self.max_draws - 1 else torch.ones_like(ok)
            out[todo[done].to(x.device)] = images[done.to(x.device)]
            todo = todo[~done]
            if not len(todo):
                break
        return out
