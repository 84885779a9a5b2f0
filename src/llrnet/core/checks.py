"""Checks of scalar arguments shared by every layer: a positive number, a count.
More: docs/core.md, "llrnet.core.checks"."""

from __future__ import annotations

from llrnet.core.errors import UsageError


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """``value`` as a float, or a UsageError if it is not positive (or >= 0)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, got {value!r}") from None
    if v != v or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise UsageError(f"{name} must be {bound}, got {value!r}")
    return v


def check_count(value: int, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a UsageError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value
