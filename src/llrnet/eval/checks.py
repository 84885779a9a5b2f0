"""Sanity checks that flag broken evaluations (in the spirit of AutoAttack).
More: docs/evaluation.md, "llrnet.eval.checks"."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from llrnet.attacks.autoattack import AutoAttack
from llrnet.attacks.pgd import PGD

BLACK_BOX_MARGIN = 0.5
"""Accuracy@80 gap (fraction) at which a black-box attack 'beats by a wide margin'."""

AUTOATTACK_MARGIN = 0.02
"""Robust-accuracy gap (fraction) by which PGD may exceed AutoAttack before a warning."""

PROBABILITIES = "the model's outputs look like probabilities"
RANDOMIZED = "the model is randomized"
"""How :func:`check_outputs`' two messages begin (AutoAttack's same checks are not repeated)."""


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
            f"{PROBABILITIES} (each row in [0, 1], summing to 1); "
            "the challenge ranks confidence by the raw max score and gradient attacks are "
            "weak on saturated softmax outputs; return logits if you can"
        ))
    scale = float(first.abs().max()) if first.numel() else 0.0
    if not torch.allclose(first.float(), second.float(), rtol=1e-4, atol=1e-5 * max(scale, 1.0)):
        found.append(warn(
            f"{RANDOMIZED}: two forward passes on the same images differ; "
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


def check_autoattack(
    attacks: Mapping[str, Any],
    records: Mapping[str, Mapping[str, Any]],
    found: Sequence[str],
    margin: float = AUTOATTACK_MARGIN,
) -> list[str]:
    """AutoAttack's own checks, once each, and PGD beaten by AutoAttack by more than ``margin``.

    ``attacks`` maps attack name -> attack, ``records`` name -> its summary
    (``accuracy@100``, ``images``), ``found`` the warnings already raised.
    Each kind of the authors' checks (:attr:`AutoAttack.flags`) is raised once
    over all AutoAttack entries; randomness and probability outputs not at all
    when :func:`check_outputs` already said so. PGD's robust accuracy
    (accuracy@100) above AutoAttack's on the same images by more than
    ``margin`` flags a PGD too weak for this model, typically gradient masking.
    """
    raised = {kind for kind, start in (("randomized", RANDOMIZED),
                                       ("probabilities", PROBABILITIES))
              if any(message.startswith(start) for message in found)}
    new: list[str] = []
    auto = {name: attack for name, attack in attacks.items() if isinstance(attack, AutoAttack)}
    for name, attack in auto.items():
        for kind, message in attack.flags.items():
            if kind not in raised:
                raised.add(kind)
                new.append(warn(f"AutoAttack's own check ({name}): {message}"))
    pgd = [name for name, attack in attacks.items() if isinstance(attack, PGD)]
    for name in auto:
        for other in pgd:
            if name not in records or other not in records or \
                    records[name]["images"] != records[other]["images"]:
                continue
            theirs, ours = records[name]["accuracy@100"], records[other]["accuracy@100"]
            if ours > theirs + margin:
                new.append(warn(
                    f"PGD attack {other!r} leaves robust accuracy {ours:.3f}, AutoAttack "
                    f"{name!r} {theirs:.3f} on the same images: more than {margin:.0%} apart, "
                    "so PGD is too weak for this model (gradient masking is likely); report "
                    "AutoAttack's number"
                ))
    return new


BOUND_MARGIN = 0.10
"""Accuracy@80 gap (fraction) by which a black-box column may exceed its white-box bound."""


def check_white_box_bounds(records: Mapping[str, Mapping[str, Any]],
                           margin: float = BOUND_MARGIN) -> list[str]:
    """Warn for each attack whose accuracy@80 exceeds its white-box bound's
    (``record["white_box_bound"]``) by more than ``margin`` (a fraction; 10 points).

    The bound attacks the same ball with gradients: a black-box number far above
    it measures the black-box attack's budget, not the model.
    """
    found: list[str] = []
    for name, record in records.items():
        bound = record.get("white_box_bound") or {}
        if "accuracy@80" not in bound:
            continue
        ours, theirs = float(record["accuracy@80"]), float(bound["accuracy@80"])
        if ours - theirs > margin + 1e-9:  # exactly ``margin`` apart is not "more than"
            found.append(warn(
                f"black-box attack {name!r} leaves accuracy@80 {100 * ours:.1f}%, its "
                f"white-box bound in the same ball {100 * theirs:.1f}%: more than "
                f"{100 * margin:.0f} points apart, so the column measures the attack's budget, "
                "not the model; report the bound"
            ))
    return found


def check_budgets(records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One warning naming every attack whose budget check (``record["budget_check"]``,
    :func:`llrnet.eval.metrics.budget_check`) says NOT CONVERGED; [] if none."""
    failed = [(name, record["budget_check"]) for name, record in records.items()
              if "budget_check" in record and not record["budget_check"]["converged"]]
    if not failed:
        return []
    parts = [f"{name} (accuracy@80 {100 * check['accuracy@80']:.1f}% -> "
             f"{100 * check['scaled_accuracy@80']:.1f}% at {check['factor']}x its budget; "
             f"{len(check['flipped'])} of {check['images']} rechecked images flipped)"
             for name, check in failed]
    return [warn(f"NOT CONVERGED: {'; '.join(parts)}: more budget lowers accuracy@80 by more "
                 "than max(2 points, 1 image), so these numbers overstate robustness")]
