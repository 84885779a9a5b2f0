"""Sanity checks that flag broken evaluations (in the spirit of AutoAttack).

They warn (:class:`EvaluationWarning`), never fail: each condition can be
legitimate, but each has also hidden a broken defense or a broken evaluation.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch

BLACK_BOX_MARGIN = 0.5
"""Accuracy@80 gap (fraction) at which a black-box attack 'beats by a wide margin'."""


class EvaluationWarning(UserWarning):
    """A sanity check of the evaluation failed; the message says what and why it matters."""


def warn(message: str) -> str:
    """Emit ``message`` as an :class:`EvaluationWarning` and return it (for results.json)."""
    warnings.warn(message, EvaluationWarning, stacklevel=3)
    return message


def looks_like_probabilities(logits: torch.Tensor) -> bool:
    """True if every row of [N, K] ``logits`` is in [0, 1] and sums to 1 (within 1e-3)."""
    values = logits.detach().float()
    in_range = bool(((values >= 0) & (values <= 1)).all())
    sums_to_one = bool(torch.allclose(values.sum(dim=1), torch.ones(len(values)), atol=1e-3))
    return in_range and sums_to_one


def check_outputs(first: torch.Tensor, second: torch.Tensor) -> list[str]:
    """Checks on two forward passes of the same clean batch ([N, K] each)."""
    found = []
    if looks_like_probabilities(first):
        found.append(warn(
            "the model's outputs look like probabilities (each row in [0, 1], summing to 1); "
            "the challenge ranks confidence by the raw max score and gradient attacks are "
            "weak on saturated softmax outputs; return logits if you can"
        ))
    scale = float(first.abs().max()) if first.numel() else 0.0
    if not torch.allclose(first.float(), second.float(), rtol=1e-4, atol=1e-5 * max(scale, 1.0)):
        found.append(warn(
            "the model is randomized: two forward passes on the same images differ; "
            "results will not be reproducible and attacks should use expectation over "
            "randomness (EOT) to be meaningful"
        ))
    return found


def check_attack_strengths(
    kinds: Mapping[str, str],
    accuracy: Mapping[str, float],
    margin: float = BLACK_BOX_MARGIN,
) -> list[str]:
    """Warn when a black-box attack beats a spatial, corruption or white-box one widely.

    ``kinds`` maps attack name -> kind (``clean``, ``spatial``, ``corruption``,
    ``black_box``, ``white_box``); ``accuracy`` maps name -> accuracy@80.
    A gradient-free attack far stronger than a gradient one points at gradient
    masking; far stronger than the spatial and corruption ones is expected for an
    undefended model but says the model has no L-inf/L2 robustness at all.
    """
    found: list[str] = []
    black_box = [name for name, kind in kinds.items() if kind == "black_box"]
    others: Sequence[str] = [
        name for name, kind in kinds.items() if kind in ("spatial", "corruption", "white_box")
    ]
    for attack in black_box:
        for other in others:
            if attack in accuracy and other in accuracy and \
                    accuracy[attack] + margin < accuracy[other]:
                reason = ("gradient masking is likely (the white-box attack is failing)"
                          if kinds[other] == "white_box"
                          else "expected for an undefended model; suspicious for a defended one")
                found.append(warn(
                    f"black-box attack {attack!r} (accuracy@80 {accuracy[attack]:.3f}) beats "
                    f"{kinds[other]} attack {other!r} ({accuracy[other]:.3f}) by more than "
                    f"{margin:.0%}: {reason}"
                ))
    return found

