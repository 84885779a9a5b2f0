"""Per-image randomness keys: a seed for each (run seed, attack, image index).
More: docs/evaluation.md, "llrnet.eval.seeds"."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llrnet.core.seeding import derive


def image_seed(seed: int, attack: str, index: int) -> int:
    """A 63-bit seed for image ``index`` under ``attack`` in a run seeded ``seed``:
    ``derive(seed, attack, index)``, so different attacks get unrelated streams."""
    return derive(seed, attack, index)


def image_seeds(seed: int, attack: str, indices: Sequence[int]) -> torch.Tensor:
    """int64 [len(indices)] seeds for the images at global ``indices``."""
    return torch.tensor([derive(seed, attack, int(i)) for i in indices], dtype=torch.int64)
