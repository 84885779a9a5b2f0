"""llrnet: DeepMind's LLR bird-or-bicycle classifier and the Unrestricted
Adversarial Examples evaluation kit, in modern PyTorch. More: docs/core.md, "llrnet."."""

from __future__ import annotations

from llrnet.core.errors import InputError, LlrnetError, RunError, UsageError, WeightsError

__version__ = "0.1.0"

__all__ = [
    "InputError",
    "LlrnetError",
    "RunError",
    "UsageError",
    "WeightsError",
    "__version__",
]
