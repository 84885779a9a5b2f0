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

    def budget(self) -> dict[str, int]:
        """Every budgeted stage's knobs keyed ``"<stage name>.<knob>"``, e.g.
        ``{"spsa.steps": 20, "spsa.samples": 16}`` for ``Chain(RandomSpatial(), SPSA(...))``."""
        return {f"{stage.name}.{knob}": value
                for stage in self.stages for knob, value in stage.budget().items()}

    def _scaled(self, factor: int) -> Chain:
        """Every budgeted stage scaled by ``factor``; the other stages are the same objects,
        so under the same seeds they draw the same streams (e.g. the same random
        transform per image). The chain's ``name`` is kept."""
        stages = [stage.scaled(factor) if stage.budget() else stage for stage in self.stages]
        return self.with_stages(*stages)

    def with_stages(self, *stages: Attack) -> Chain:
        """A chain of ``stages`` with this chain's ``name`` (and no run-time statistics)."""
        return Chain(*stages, name=self.name)

    def __repr__(self) -> str:
        inner = ", ".join(repr(stage) for stage in self.stages)
        return f"Chain({inner}, name={self.name!r})"
