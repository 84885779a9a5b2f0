"""Per-image attack seeds: derive(seed, attack, index), as before the seeding module."""

from __future__ import annotations

import hashlib

import torch

from llrnet.core.seeding import derive
from llrnet.eval.seeds import image_seed, image_seeds


def test_image_seeds_are_derive_and_the_former_blake2b_values() -> None:
    for seed, attack, index in [(0, "pgd_linf", 0), (3, "spsa_with_random_spatial", 117)]:
        digest = hashlib.blake2b(f"{seed}/{attack}/{index}".encode(), digest_size=8).digest()
        former = int.from_bytes(digest, "little") & ((1 << 63) - 1)
        assert image_seed(seed, attack, index) == derive(seed, attack, index) == former
    seeds = image_seeds(1, "clean", [4, 2])
    assert seeds.dtype == torch.int64
    assert seeds.tolist() == [derive(1, "clean", 4), derive(1, "clean", 2)]
