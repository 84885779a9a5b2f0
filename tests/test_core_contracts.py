"""The shared image and logits checks: every broken rule is an InputError that says what."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from llrnet.core.contracts import check_images, check_logits
from llrnet.core.errors import InputError

X = torch.rand(2, 3, 4, 4)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (X.numpy(), "images must be a torch.Tensor, got ndarray"),
        ((X * 255).to(torch.uint8), r"images must be a float tensor in \[0, 1\], got dtype "
                                    "torch.uint8"),
        (X[0], r"images must be \[N, C, H, W\], got shape \[3, 4, 4\]"),
        (X.clone().fill_(float("nan")), "images contains NaN or infinite values"),
        (X * 255, r"images must lie in \[0, 1\], got range \[.*\]; convert 8-bit images with "
                  "x / 255"),
        (torch.tensor([-0.5, 0.0, 0.25, 1.0]).view(1, 1, 2, 2),
         r"images must lie in \[0, 1\], got range \[-0.5, 1\]$"),
    ],
)
def test_bad_images(x: Any, match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_images(x)


def test_images_name_and_value_checks() -> None:
    assert check_images(X) is X
    assert check_images(torch.zeros(0, 3, 4, 4)) is not None  # an empty batch has no values
    with pytest.raises(InputError, match=r"^batch images must be"):
        check_images(X[0], "batch images")
    # values=False: shape and dtype only, no read of the data
    assert check_images(X * 255, values=False) is not None
    with pytest.raises(InputError, match="float tensor"):
        check_images(X.long(), values=False)


@pytest.mark.parametrize(
    ("output", "kwargs", "match"),
    [
        ([[0.0, 1.0]], {}, "must return a tensor of logits, got list"),
        (torch.zeros(6), {}, r"logits \[N, K\]: logits of shape \[2, K\] with K >= 2 for 2 "
                             r"images, got \[6\]"),
        (torch.zeros(3, 2), {}, r"logits of shape \[2, K\].*got \[3, 2\]"),
        (torch.zeros(2, 1), {}, r"at least 2 logits per image \(K >= 2\), got 1"),
        (torch.zeros(2, 2), {"num_classes": 3}, "returns 2 logits per image but the labels "
                                                 "need 3 classes"),
        (torch.zeros(2, 2, dtype=torch.long), {}, "floating-point logits, got torch.int64"),
        (torch.tensor([[0.0, float("inf")], [0.0, 1.0]]), {},
         "NaN or infinite logits for 1 of 2 images"),
    ],
)
def test_bad_logits(output: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        check_logits(output, 2, **kwargs)


def test_good_logits_and_the_finite_switch() -> None:
    logits = torch.randn(2, 3)
    assert check_logits(logits, 2, num_classes=3) is logits
    nan = torch.full((2, 2), float("nan"))
    assert check_logits(nan, 2, finite=False) is nan
