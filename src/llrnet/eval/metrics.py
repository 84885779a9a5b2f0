"""The challenge's metric: accuracy at a coverage, and the risk-coverage curve.
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
