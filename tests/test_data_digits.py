"""The bundled digits: shapes, ranges, label convention, split reproducibility."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from llrnet.data import digits, two_class_digits
from llrnet.data.digits import DigitsDataset


def test_two_class_shapes_ranges_and_labels() -> None:
    train = two_class_digits("train")
    test = two_class_digits("test")
    assert isinstance(train, DigitsDataset)
    assert train.classes == (6, 7)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert tuple(train.images.shape[1:]) == (1, 28, 28)
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    # All 6s and 7s of scikit-learn's digits are used, split 70/30 without overlap.
    target = load_digits().target
    n6, n7 = int((target == 6).sum()), int((target == 7).sum())
    assert len(train) + len(test) == n6 + n7
    counts = torch.cat([train.labels, test.labels]).bincount().tolist()
    assert counts == [n6, n7]
    assert abs(len(test) - 0.3 * (n6 + n7)) <= 2
    image, label = train[0]
    assert image.shape == (1, 28, 28) and isinstance(label, int)


def test_label_zero_is_first_digit_and_matches_source_pixels() -> None:
    raw = load_digits()
    data = two_class_digits("train", size=8, classes=(7, 6))
    # At size 8 no resampling happens: each image equals a source image / 16.
    sources = {tuple((img / 16.0).astype(np.float32).ravel()): t
               for img, t in zip(raw.images, raw.target)}
    for image, label in zip(data.images[:20], data.labels[:20]):
        digit = sources[tuple(image.numpy().ravel())]
        assert data.classes[int(label)] == digit
    assert data.classes == (7, 6)


def test_upsampling_is_bilinear_of_the_8x8_image() -> None:
    small = two_class_digits("test", size=8)
    big = two_class_digits("test", size=28)
    expected = torch.nn.functional.interpolate(
        small.images, size=(28, 28), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(big.images, expected)
    torch.testing.assert_close(big.labels, small.labels, rtol=0, atol=0)


def test_split_is_reproducible_and_seeded() -> None:
    a = two_class_digits("train", seed=0)
    b = two_class_digits("train", seed=0)
    c = two_class_digits("train", seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_ten_class_variant_is_stratified_and_disjoint() -> None:
    train, test = digits("train", size=12), digits("test", size=12)
    assert train.classes == tuple(range(10))
    assert len(train) + len(test) == 1797
    counts = test.labels.bincount(minlength=10)
    full = torch.from_numpy(load_digits().target).bincount(minlength=10)
    # Stratified: every class keeps ~30% of its images in the test split.
    assert torch.all((counts.float() - 0.3 * full.float()).abs() <= 1.0)
    train_rows = {tuple(row.tolist()) for row in train.images.flatten(1)}
    overlap = sum(tuple(row.tolist()) in train_rows for row in test.images.flatten(1))
    # Different source images may coincide pixel for pixel; allow very few.
    assert overlap <= 5


def test_fit_and_val_split_the_train_split_stratified_without_overlap() -> None:
    def rows(data: DigitsDataset) -> set[bytes]:
        return {bytes(image.numpy().tobytes()) for image in data.images}

    train, fit, val = (two_class_digits(s) for s in ("train", "fit", "val"))
    assert len(fit) + len(val) == len(train) and abs(len(val) - 0.2 * len(train)) <= 2
    assert rows(fit) | rows(val) == rows(train) and not rows(fit) & rows(val)
    assert not rows(val) & rows(two_class_digits("test"))
    for part in (fit, val):  # stratified: each class in the train split's proportion
        share = float(part.labels.float().mean())
        assert abs(share - float(train.labels.float().mean())) < 0.03
    assert torch.equal(two_class_digits("val").images, val.images)  # reproducible
    assert len(digits("fit")) + len(digits("val")) == len(digits("train"))
