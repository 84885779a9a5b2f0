"""The challenge's metric (accuracy at a coverage, the risk-coverage curve) and every
number of results.json made from it (attack records, the budget check).
More: docs/evaluation.md, "llrnet.eval.metrics"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llrnet.core.errors import InputError

COVERAGES: tuple[float, ...] = tuple(i / 100 for i in range(1, 101))
"""The coverages of the reference risk-coverage curve: 0.01, 0.02, ..., 1.00."""


def _as_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise InputError(f"{name} must be a numeric array, got dtype object")
    return array


def _check(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = _as_numpy(logits, "logits")
    targets = _as_numpy(labels, "labels")
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise InputError(f"logits must have shape (N, K) with K >= 2, got {scores.shape}")
    if targets.ndim != 1 or len(targets) != len(scores):
        raise InputError(
            f"labels must have shape ({len(scores)},) to match logits, got {targets.shape}"
        )
    if len(scores) == 0:
        raise InputError("logits are empty: the metric needs at least one image")
    if not np.issubdtype(targets.dtype, np.integer):
        raise InputError(f"labels must be integers, got dtype {targets.dtype}")
    if not np.isfinite(scores).all():
        raise InputError("logits contain NaN or infinite values")
    return scores.astype(np.float64, copy=False), targets.astype(np.int64, copy=False)


def predictions(logits: Any) -> np.ndarray:
    """Predicted classes (N,) int64: the argmax, ties broken to the lowest class.

    For the two-class challenge view a tie ``logit[0] == logit[1]`` predicts
    class 0 (bicycle), as the reference's ``logit[1] > logit[0]`` rule does.
    """
    return np.argmax(_as_numpy(logits, "logits"), axis=1).astype(np.int64)


def confidences(logits: Any) -> np.ndarray:
    """Confidence per image (N,): the largest raw logit."""
    return np.max(_as_numpy(logits, "logits"), axis=1)


def _covered_and_errors(
    scores: np.ndarray, targets: np.ndarray, coverage: float
) -> tuple[np.ndarray, np.ndarray]:
    conf = scores.max(axis=1)
    ordered = np.sort(conf)[::-1]
    k = int(coverage * len(conf))  # truncation, as the reference
    threshold = ordered[k - 1]  # k == 0 -> index -1: the lowest confidence
    covered = conf >= threshold
    errors = covered & (np.argmax(scores, axis=1) != targets)
    return covered, errors


def _check_coverage(coverage: float) -> float:
    value = float(coverage)
    if not 0.0 <= value <= 1.0:
        raise InputError(f"coverage must be in [0, 1], got {coverage}")
    return value


def accuracy_at_coverage(logits: Any, labels: Any, coverage: float) -> float:
    """Accuracy on the ``coverage`` fraction of most confident images.

    Args:
        logits: (N, K) scores (numpy array or tensor); for the challenge K = 2,
            column 0 bicycle, column 1 bird. Any real values.
        labels: (N,) integer true classes.
        coverage: fraction in [0, 1]; 0.8 is the leaderboard metric, 1.0 is
            plain accuracy.

    Returns:
        ``1 - errors / covered`` in [0, 1], exactly as the reference computes it.

    Example::

        >>> accuracy_at_coverage(np.array([[-5., 5.]] * 4), np.array([1, 1, 1, 1]), 0.8)
        1.0
    """
    scores, targets = _check(logits, labels)
    covered, errors = _covered_and_errors(scores, targets, _check_coverage(coverage))
    return float(1.0 - errors.sum() / covered.sum())


@dataclass(frozen=True)
class CoverageCurve:
    """The risk-coverage curve at :data:`COVERAGES`.

    ``accuracy[i]`` is :func:`accuracy_at_coverage` at ``coverage[i]``;
    ``risk[i] = errors / (N * coverage)`` (the nominal count, as the reference
    plots it); ``covered[i]`` the number of images actually covered (ties at the
    threshold can make it exceed ``int(N * coverage)``).
    """

    coverage: np.ndarray
    accuracy: np.ndarray
    risk: np.ndarray
    covered: np.ndarray

    def as_dict(self) -> dict[str, list[float] | list[int]]:
        """Plain lists for JSON."""
        return {
            "coverage": [float(v) for v in self.coverage],
            "accuracy": [float(v) for v in self.accuracy],
            "risk": [float(v) for v in self.risk],
            "covered": [int(v) for v in self.covered],
        }


def coverage_curve(
    logits: Any, labels: Any, coverages: tuple[float, ...] = COVERAGES
) -> CoverageCurve:
    """Accuracy, risk and covered count at each coverage (default 0.01 ... 1.00)."""
    scores, targets = _check(logits, labels)
    count = len(targets)
    accuracy, risk, covered_counts = [], [], []
    for coverage in coverages:
        value = _check_coverage(coverage)
        covered, errors = _covered_and_errors(scores, targets, value)
        accuracy.append(1.0 - errors.sum() / covered.sum())
        risk.append(errors.sum() / (count * value) if value > 0 else 0.0)
        covered_counts.append(int(covered.sum()))
    return CoverageCurve(
        coverage=np.asarray(coverages, dtype=np.float64),
        accuracy=np.asarray(accuracy, dtype=np.float64),
        risk=np.asarray(risk, dtype=np.float64),
        covered=np.asarray(covered_counts, dtype=np.int64),
    )


def error_indices(logits: Any, labels: Any, indices: Any, coverage: float) -> list[int]:
    """Sorted global ``indices`` [N] of the covered, misclassified images at ``coverage``
    (``logits`` [N, K], ``labels`` [N]; the rule of :func:`accuracy_at_coverage`)."""
    scores, targets = _check(logits, labels)
    _, errors = _covered_and_errors(scores, targets, _check_coverage(coverage))
    return sorted(int(i) for i in _as_numpy(indices, "indices")[errors])


def summarize_attack(
    logits: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    *,
    kind: str,
    model_evaluations: float | None,
    wall_time: float,
) -> dict[str, Any]:
    """The results.json record of one attack.

    ``logits`` [n, K] on the attack's final images, ``labels`` and global
    ``indices`` [n], both in index order; ``model_evaluations`` images the
    attack forwarded (None: unknown); ``wall_time`` seconds.
    """
    count = len(labels)
    return {
        "kind": kind,
        "images": count,
        "accuracy@80": accuracy_at_coverage(logits, labels, 0.8),
        "accuracy@100": accuracy_at_coverage(logits, labels, 1.0),
        "error_indices": error_indices(logits, labels, indices, 1.0),
        "error_indices@80": error_indices(logits, labels, indices, 0.8),
        "wall_time": wall_time,
        "model_evaluations": model_evaluations,
        "model_evaluations_per_image": (
            None if model_evaluations is None else model_evaluations / count
        ),
        "coverage_curve": coverage_curve(logits, labels).as_dict(),
    }


CONVERGENCE_POINTS = 0.02
"""An attack is not converged when more budget lowers its accuracy@80 by more than
this fraction (2 points) or one image, whichever is more."""


def budget_check(
    logits: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    scaled_logits: np.ndarray,
    scaled_indices: np.ndarray,
) -> dict[str, Any]:
    """Compare an attack with its re-run at a larger budget on some of its images.

    ``logits`` [n, K], ``labels`` and ``indices`` [n] are the attack's results;
    ``scaled_logits`` [m, K] the larger budget's on the images ``scaled_indices``
    [m], a subset of ``indices``. Returns ``images`` (m), ``accuracy`` and
    ``scaled_accuracy`` (plain accuracy on those m images, None when m = 0),
    ``flipped`` (sorted indices right before and wrong after), ``accuracy@80``
    and ``scaled_accuracy@80`` (the attack's accuracy at 80% coverage, then with
    the m rows replaced by the larger budget's), ``drop`` (their difference),
    ``tolerance`` (max(:data:`CONVERGENCE_POINTS`, 1 / images covered at 80%))
    and ``converged`` (``drop`` <= ``tolerance``).
    """
    scores, targets = _check(logits, labels)
    rows = {int(index): row for row, index in enumerate(_as_numpy(indices, "indices"))}
    chosen = [rows[int(index)] for index in _as_numpy(scaled_indices, "scaled_indices")]
    substituted = scores.copy()
    before = after = None
    flipped: list[int] = []
    if chosen:
        replaced = _as_numpy(scaled_logits, "scaled_logits").astype(np.float64)
        substituted[chosen] = replaced
        right_before = predictions(scores[chosen]) == targets[chosen]
        right_after = predictions(replaced) == targets[chosen]
        before, after = float(right_before.mean()), float(right_after.mean())
        flipped = sorted(int(index) for index, was, now
                         in zip(scaled_indices, right_before, right_after, strict=True)
                         if was and not now)
    covered, _ = _covered_and_errors(scores, targets, 0.8)
    tolerance = max(CONVERGENCE_POINTS, 1.0 / int(covered.sum()))
    at_80 = accuracy_at_coverage(scores, targets, 0.8)
    scaled_at_80 = accuracy_at_coverage(substituted, targets, 0.8)
    drop = at_80 - scaled_at_80
    return {
        "images": len(chosen),
        "accuracy": before,
        "scaled_accuracy": after,
        "flipped": flipped,
        "accuracy@80": at_80,
        "scaled_accuracy@80": scaled_at_80,
        "drop": drop,
        "tolerance": tolerance,
        "converged": bool(drop <= tolerance + 1e-9),
    }
