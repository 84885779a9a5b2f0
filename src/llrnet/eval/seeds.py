"""Per-image randomness keys: a seed for each (run seed, attack, image index).

Attacks draw image ``i``'s randomness from ``seeds[i]`` only, so keying the seed
on the *global* image index (not the position in a batch or shard) makes the
result for an image independent of batch size, sharding and resumption.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def image_seed(seed: int, attack: str, index: int) -> int:
    """A 63-bit seed for image ``index`` under ``attack`` in a run seeded ``seed``.

    BLAKE2b of ``"{seed}/{attack}/{index}"``: stable across Python versions and
    processes (unlike ``hash``), and different attacks get unrelated streams.
    """
    digest = hashlib.blake2b(f"{seed}/{attack}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def image_seeds(seed: int, attack: str, indices: Sequence[int]) -> torch.Tensor:
    """int64 [len(indices)] seeds for the images at global ``indices``."""
    return torch.tensor([image_seed(seed, attack, int(i)) for i in indices], dtype=torch.int64)
