"""derive(seed, *keys): stable, key-sensitive, 63-bit."""

from __future__ import annotations

import hashlib

import pytest
import torch

from llrnet.core.seeding import MAX_SEED, derive, generator


def test_derive_is_blake2b_of_the_joined_keys() -> None:
    digest = hashlib.blake2b(b"7/spsa/12", digest_size=8).digest()
    assert derive(7, "spsa", 12) == int.from_bytes(digest, "little") & MAX_SEED


def test_streams_with_different_keys_differ_and_fit_int64() -> None:
    values = {derive(s, "a", k) for s in range(4) for k in range(4)}
    assert len(values) == 16
    assert all(0 <= v <= MAX_SEED for v in values)
    # seed + k aliasing (run 1 stream 0 == run 0 stream 1) does not happen
    assert derive(1, 0) != derive(0, 1)


def test_keys_with_a_slash_are_refused() -> None:
    with pytest.raises(ValueError, match="may not contain"):
        derive(0, "a/b")


def test_generator_is_seeded_by_derive() -> None:
    a = torch.rand(3, generator=generator(5, "x"))
    b = torch.rand(3, generator=torch.Generator().manual_seed(derive(5, "x")))
    assert torch.equal(a, b)
