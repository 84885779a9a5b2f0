"""TF "SAME" convolutions and pooling against explicit padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llrnet.models import Conv2dSame, MaxPool2dSame, same_padding


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (224, 3, 2, (0, 1)),  # even input, stride 2: TF pads only after
        (224, 7, 2, (2, 3)),
        (112, 3, 2, (0, 1)),
        (225, 3, 2, (1, 1)),  # odd input: symmetric
        (56, 3, 1, (1, 1)),
        (56, 1, 2, (0, 0)),
        (7, 3, 2, (1, 1)),
    ],
)
def test_same_padding_matches_tf_formula(
    size: int, kernel: int, stride: int, expected: tuple[int, int]
) -> None:
    assert same_padding(size, kernel, stride) == expected


@pytest.mark.parametrize(("size", "kernel", "stride"), [(8, 3, 2), (9, 3, 2), (8, 7, 2),
                                                         (10, 3, 1), (8, 1, 2), (6, 4, 2)])
def test_conv_same_equals_explicit_pad(size: int, kernel: int, stride: int) -> None:
    conv = Conv2dSame(2, 3, kernel, stride, bias=True)
    x = torch.randn(2, 2, size, size + 1)
    top, bottom = same_padding(size, kernel, stride)
    left, right = same_padding(size + 1, kernel, stride)
    expected = F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, conv.bias, stride)
    out = conv(x)
    assert out.shape[-2:] == (-(-size // stride), -(-(size + 1) // stride))
    torch.testing.assert_close(out, expected)


def test_conv_same_differs_from_pytorch_padding_on_even_stride2() -> None:
    """The reason the option exists: PyTorch's padding=1 shifts the sampling grid."""
    conv = Conv2dSame(1, 1, 3, 2, bias=False)
    x = torch.randn(1, 1, 8, 8)
    pytorch_style = F.conv2d(x, conv.weight, None, 2, 1)
    assert pytorch_style.shape == conv(x).shape
    assert not torch.allclose(pytorch_style, conv(x))


def test_max_pool_same_equals_explicit_pad() -> None:
    pool = MaxPool2dSame(3, 2)
    x = torch.randn(2, 4, 8, 8) - 10.0  # all negative: zero padding would win, -inf must not
    expected = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
    out = pool(x)
    assert out.shape == (2, 4, 4, 4)
    torch.testing.assert_close(out, expected)
    assert out.max() < 0
