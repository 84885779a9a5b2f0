"""The challenge's spatial limits, one constant per suite: the grid, its border and the random
stage's bounds. The evaluation suites build their spatial attacks from these and worst-of-k
training reads them, so the two never disagree (docs/challenge.md, section 4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llrnet.attacks.spatial import spatial_grid
from llrnet.core.errors import UsageError

__all__ = ["BIRD_OR_BICYCLE", "DIGITS", "SUITE_SPATIAL_LIMITS", "SpatialLimits", "spatial_limits"]

Limits = tuple[float, float, float]


@dataclass(frozen=True)
class SpatialLimits:
    """A suite's spatial attacks.

    Attributes:
        grid: the grid's kind (``"challenge"`` or ``"intended"``, :func:`spatial_grid`).
        limits: the grid's (dx px, dy px, angle deg) limits.
        granularity: points per grid axis.
        border_fraction: the grid's black border, a fraction of the side.
        random_limits: the random spatial stage's (dx px, dy px, angle deg).
        random_border: the random stage's black border, pixels.
    """

    grid: str
    limits: Limits
    granularity: tuple[int, int, int]
    border_fraction: float
    random_limits: Limits
    random_border: int

    def worst_case(self) -> Limits:
        """(dx px, dy px, angle deg): the largest of the executed grid and the random stage.

        The ``"challenge"`` grid unpacks (angle, dx, dy), so bird-or-bicycle's executed
        grid shifts up to 30 px vertically: (18, 30, 30).
        """
        table = spatial_grid(self.grid, self.limits, self.granularity).abs().amax(dim=0)
        limits = torch.maximum(table, torch.tensor(self.random_limits, dtype=torch.float64))
        dx, dy, angle = (float(v) for v in limits.tolist())
        return dx, dy, angle


BIRD_OR_BICYCLE = SpatialLimits(grid="challenge", limits=(18.0, 18.0, 30.0),
                                granularity=(5, 5, 31), border_fraction=0.15,
                                random_limits=(18.0, 18.0, 30.0), random_border=20)
"""The warm-up at 224x224: the reference's grid (5 x 5 x 31) and a 20-pixel random border."""

DIGITS = SpatialLimits(grid="intended", limits=(10.0, 10.0, 10.0), granularity=(5, 5, 11),
                       border_fraction=0.15, random_limits=(10.0, 10.0, 10.0), random_border=2)
"""The two-class MNIST warm-up's geometry at 28x28 (275 transforms, a 2-pixel border)."""

SUITE_SPATIAL_LIMITS: dict[str, SpatialLimits] = {"bird_or_bicycle": BIRD_OR_BICYCLE,
                                                  "digits": DIGITS}
"""The suites with a spatial grid, by suite name."""


def spatial_limits(suite: str) -> SpatialLimits:
    """The spatial limits of ``suite``; ``UsageError`` when it has no spatial grid."""
    if suite not in SUITE_SPATIAL_LIMITS:
        raise UsageError(f"suite {suite!r} has no spatial grid to take the limits from; "
                         f"choose from {', '.join(SUITE_SPATIAL_LIMITS)}")
    return SUITE_SPATIAL_LIMITS[suite]
