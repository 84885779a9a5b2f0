"""TF "SAME" convolutions and pooling against explicit padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llrnet.models.layers import Conv2dSame, MaxPool2dSame, same_padding


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


def test_softplus_matches_float64_to_float32_rounding() -> None:
    from llrnet.models.layers import softplus

    x = torch.linspace(-100.0, 100.0, 40001)
    exact = F.softplus(x.double())
    ours = softplus(x).double()
    # Absolute: within a few float32 ulps of the value (and 6e-8 where it is tiny),
    # as F.softplus itself.
    bound = exact.abs() * 2.0**-22 + 6e-8
    assert bool(((ours - exact).abs() <= bound).all())
    assert torch.equal(softplus(torch.tensor([float("inf"), -float("inf")])),
                       torch.tensor([float("inf"), 0.0]))
    assert bool(softplus(torch.tensor([float("nan")])).isnan().all())


def test_softplus_gradient_is_sigmoid_twice_differentiable() -> None:
    from llrnet.models.layers import softplus

    x = (torch.randn(32, dtype=torch.float64) * 4).requires_grad_()
    assert torch.autograd.gradcheck(softplus, (x,))
    assert torch.autograd.gradgradcheck(softplus, (x,))  # LLR differentiates gradients
    zero = torch.zeros(2, requires_grad=True)
    softplus(zero).sum().backward()
    assert torch.equal(zero.grad, torch.full((2,), 0.5))  # sigmoid(0), also at the kink


def test_softplus_reduced_precision_uses_torch_kernel() -> None:
    from llrnet.models.layers import softplus

    x = torch.randn(64).bfloat16()
    assert torch.equal(softplus(x), F.softplus(x))


def test_softplus_inference_matches_float64_to_float32_rounding() -> None:
    from llrnet.models.layers import softplus_inference

    x = torch.linspace(-100.0, 100.0, 40001)
    exact = F.softplus(x.double())
    with torch.no_grad():
        ours = softplus_inference(x).double()
    bound = exact.abs() * 2.0**-22 + 6e-8  # the bound softplus itself meets
    assert bool(((ours - exact).abs() <= bound).all())
    # Hand-made values: linear above 20, log 2 at 0, e^x-sized below (or 0 past rounding).
    small = torch.tensor([-100.0, 0.0, 20.0, 20.5, 1000.0])
    torch.testing.assert_close(softplus_inference(small),
                               torch.tensor([0.0, 0.693147182, 20.0, 20.5, 1000.0]),
                               atol=6e-8, rtol=0)
    assert torch.equal(softplus_inference(torch.tensor([float("inf"), -float("inf")])),
                       torch.tensor([float("inf"), 0.0]))
    assert torch.equal(x, torch.linspace(-100.0, 100.0, 40001))  # the input is untouched


def test_softplus_inference_defers_to_softplus_where_autograd_records() -> None:
    from llrnet.models.layers import softplus, softplus_inference

    x = (torch.randn(32, dtype=torch.float64) * 4).requires_grad_()
    assert torch.autograd.gradcheck(softplus_inference, (x,))
    assert torch.equal(softplus_inference(x), softplus(x))
    half = torch.randn(64).bfloat16()
    assert torch.equal(softplus_inference(half), F.softplus(half))
