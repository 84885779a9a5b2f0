"""All of llrnet's derived randomness comes from one function: :func:`derive`.
More: docs/core.md, "llrnet.core.seeding"."""

from __future__ import annotations

import hashlib

import torch

from llrnet.core.errors import UsageError

__all__ = ["MAX_SEED", "check_seed", "derive", "generator"]

MAX_SEED = (1 << 63) - 1
"""Derived seeds lie in [0, MAX_SEED] (they fit a signed 64-bit integer)."""


def check_seed(seed: object, name: str = "seed") -> int:
    """``seed`` as an int in [0, MAX_SEED] (what ``torch.manual_seed`` and every
    generator take).

    Raises:
        UsageError: ``seed`` is not an integer (a bool is not), or lies outside
            [0, 2**63 - 1]; the message names ``name``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"{name} must be an integer, got {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"{name} must be in [0, 2**63 - 1], got {seed}")
    return seed


def derive(seed: int, *keys: int | str) -> int:
    """A 63-bit seed in [0, 2**63) for the stream named ``keys`` of a run seeded ``seed``.

    ``derive(s, "a", 1)`` is BLAKE2b-64 of ``"s/a/1"``. Keys are ints or strings;
    a string key must not contain ``/`` (it would alias two key lists).
    """
    parts = [str(int(seed))]
    for key in keys:
        if isinstance(key, str):
            if "/" in key:
                raise UsageError(f"a seeding key may not contain '/': {key!r}")
            parts.append(key)
        else:
            parts.append(str(int(key)))
    digest = hashlib.blake2b("/".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & MAX_SEED


def generator(seed: int, *keys: int | str, device: str | torch.device = "cpu"
              ) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``derive(seed, *keys)``."""
    return torch.Generator(device=device).manual_seed(derive(seed, *keys))
