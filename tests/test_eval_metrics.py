"""The challenge metric against its oracle cases (docs/challenge.md 3) and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llrnet.eval import accuracy_at_coverage, coverage_curve
from llrnet.eval.metrics import COVERAGES


def brute_force(logits: np.ndarray, labels: np.ndarray, coverage: float) -> float:
    """Spec section 3 written with loops: rank by confidence, cover ties, count errors."""
    n = len(labels)
    conf = [max(row) for row in logits.tolist()]
    k = int(coverage * n)
    threshold = sorted(conf, reverse=True)[k - 1]  # k == 0 -> [-1], the lowest
    covered = errors = 0
    for row, label, c in zip(logits.tolist(), labels.tolist(), conf):
        if c >= threshold:
            covered += 1
            predicted = row.index(max(row))  # first maximum: ties go to class 0
            errors += predicted != label
    return 1 - errors / covered


@pytest.mark.parametrize("coverage", [0.8, 1.0])
def test_constant_logits_labels_one_give_one(coverage: float) -> None:
    logits = np.tile(np.array([-5.0, 5.0], dtype=np.float32), (100, 1))
    assert accuracy_at_coverage(logits, np.ones(100, dtype=np.int64), coverage) == 1.0


@pytest.mark.parametrize("coverage", [0.8, 1.0])
def test_constant_logits_labels_zero_give_zero(coverage: float) -> None:
    # All confidences tie, so everything is covered even at 80%.
    logits = np.tile(np.array([-5.0, 5.0], dtype=np.float32), (100, 1))
    assert accuracy_at_coverage(logits, np.zeros(100, dtype=np.int64), coverage) == 0.0


def test_random_logits_give_about_half() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(10_000, 2)).astype(np.float32)
    labels = np.zeros(10_000, dtype=np.int64)
    assert accuracy_at_coverage(logits, labels, 0.8) == pytest.approx(0.5, abs=0.02)
    assert accuracy_at_coverage(logits, labels, 1.0) == pytest.approx(0.5, abs=0.02)


def test_low_confidence_images_are_not_scored() -> None:
    # Two confident right answers, two confident wrong, one unconfident wrong.
    logits = np.array([[0, 9], [8, 0], [0, 7], [6, 0], [0.1, 0]], dtype=np.float32)
    labels = np.array([1, 0, 0, 1, 1])
    assert accuracy_at_coverage(logits, labels, 0.8) == 0.5  # k = 4: the 0.1 one abstains
    assert accuracy_at_coverage(logits, labels, 1.0) == pytest.approx(0.4)


def test_tied_logits_predict_class_zero() -> None:
    logits = np.array([[2.0, 2.0], [3.0, 3.0]])
    assert accuracy_at_coverage(logits, np.array([0, 0]), 1.0) == 1.0
    assert accuracy_at_coverage(logits, np.array([1, 1]), 1.0) == 0.0


def test_truncation_and_index_minus_one() -> None:
    logits = np.array([[0, 5], [0, 4], [0, 3]], dtype=np.float64)
    labels = np.array([1, 0, 0])
    # int(0.5 * 3) = 1: only the most confident image is covered.
    assert accuracy_at_coverage(logits, labels, 0.5) == 1.0
    # int(0.2 * 3) = 0: thr = sorted[-1], the lowest confidence -> everything covered.
    assert accuracy_at_coverage(logits, labels, 0.2) == pytest.approx(1 / 3)
    # int(0.29 * 100) = 28, not 29 (float truncation is part of the metric).
    assert int(0.29 * 100) == 28


def test_tensors_and_arrays_agree() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 2, generator=generator)
    labels = torch.randint(0, 2, (50,), generator=generator)
    for coverage in (0.1, 0.8, 1.0):
        assert accuracy_at_coverage(logits, labels, coverage) == accuracy_at_coverage(
            logits.numpy(), labels.numpy(), coverage)


def test_coverage_curve_matches_pointwise_metric() -> None:
    rng = np.random.default_rng(3)
    logits = rng.integers(-3, 4, size=(37, 2)).astype(np.float32)
    labels = rng.integers(0, 2, size=37)
    curve = coverage_curve(logits, labels)
    assert len(curve.coverage) == 100
    assert curve.coverage[0] == 0.01 and curve.coverage[-1] == 1.0
    for i, coverage in enumerate(COVERAGES):
        accuracy = accuracy_at_coverage(logits, labels, coverage)
        assert curve.accuracy[i] == accuracy
        # errors / covered = 1 - accuracy; risk divides errors by the nominal count.
        errors = round((1 - accuracy) * curve.covered[i])
        assert curve.risk[i] == pytest.approx(errors / (37 * coverage))
        assert curve.covered[i] >= int(coverage * 37)


def test_curve_counts_ties_as_covered() -> None:
    logits = np.array([[0, 1], [0, 1], [0, 1], [0, 2]], dtype=np.float32)
    curve = coverage_curve(logits, np.array([1, 1, 0, 1]))
    # At 50% the threshold is 1 (second largest), and all three 1-confidence images tie.
    assert curve.covered[49] == 4
    assert curve.risk[49] == pytest.approx(1 / (4 * 0.5))
    assert curve.as_dict()["covered"][49] == 4


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.tuples(st.integers(-2, 2), st.integers(-2, 2), st.integers(0, 1)),
                    min_size=1, max_size=40),
    coverage=st.sampled_from((0.0, 0.01, 0.1, 0.33, 0.5, 0.8, 0.99, 1.0)),
)
def test_matches_brute_force_with_many_ties(values: list[tuple[int, int, int]],
                                            coverage: float) -> None:
    logits = np.array([[a, b] for a, b, _ in values], dtype=np.float32)
    labels = np.array([c for _, _, c in values], dtype=np.int64)
    assert accuracy_at_coverage(logits, labels, coverage) == pytest.approx(
        brute_force(logits, labels, coverage), abs=1e-12)
