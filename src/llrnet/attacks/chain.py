"""Composite attacks: stages applied one after another.
More: docs/attacks.md, "llrnet.attacks.chain"."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llrnet.attacks.base import Attack, AttackKind, Pool
from llrnet.attacks.parts import ImageRng
from llrnet.core.errors import UsageError


class Chain(Attack):
    """Apply ``stages`` in order; the default name joins them as the challenge did.

    ``Chain(RandomSpatial(), SPSA())`` is named ``"spsa_with_random_spatial"``,
    ``Chain(RandomSpatial(), Boundary())`` ``"boundary_with_random_spatial"``.
    ``pool`` is passed to every stage. After a call, ``stage_stats`` holds each
    stage's ``last_stats`` (``last_stats`` itself has the totals). ``kind`` is
    the last stage's (what the chain finally does to the images); ``needs_pool``
    is true if any stage needs the pool.
    """

    def __init__(self, *stages: Attack, name: str | None = None) -> None:
        super().__init__()
        if not stages:
            raise UsageError("Chain needs at least one stage")
        for stage in stages:
            if not isinstance(stage, Attack):
                raise UsageError(f"Chain stages must be Attacks, got {type(stage).__name__}")
        self.stages = tuple(stages)
        self.name = name or "_with_".join(stage.name for stage in reversed(self.stages))
        # An instance attribute, unlike ``kind``: it is part of the chain's recorded
        # description (``vars``), which resuming an evaluation compares.
        self.needs_pool = any(stage.needs_pool for stage in self.stages)
        self.stage_stats: list[dict[str, float]] = []

    @property
    def kind(self) -> AttackKind:
        """The last stage's kind: ``Chain(RandomSpatial(), SPSA())`` is ``black_box``."""
        return self.stages[-1].kind

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
    ) -> Tensor:
        seeds = torch.tensor(rng.seeds, dtype=torch.int64)
        self.stage_stats = []
        current = x
        for stage in self.stages:
            # ``model`` is the base class's counting wrapper: stages add to the same count.
            current = stage(model, current, y, seeds=seeds, pool=pool)
            self.stage_stats.append(dict(stage.last_stats))
        return current

    def __repr__(self) -> str:
        inner = ", ".join(repr(stage) for stage in self.stages)
        return f"Chain({inner}, name={self.name!r})"
