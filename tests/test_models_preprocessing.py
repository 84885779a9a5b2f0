"""The submission's preprocessing: TF1 central crop and TF1 bilinear resize."""

from __future__ import annotations

import torch

from llrnet.models.preprocessing import CropResizeScale, tf1_central_crop, tf1_resize_bilinear


def test_resize_upsample_by_two_by_hand() -> None:
    # TF1 (align_corners=False, no half-pixel): out[i] samples in[i * 4 / 8].
    x = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 1, 4)
    out = tf1_resize_bilinear(x, (1, 8))
    expected = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]).view(1, 1, 1, 8)
    torch.testing.assert_close(out, expected)


def test_resize_downsample_picks_every_other_sample() -> None:
    x = torch.arange(8.0).view(1, 1, 8, 1)
    out = tf1_resize_bilinear(x, (4, 1))
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 2.0, 4.0, 6.0]))


def test_resize_non_integer_ratio_by_hand() -> None:
    # 3 -> 4: scale 0.75, sources 0, 0.75, 1.5, 2.25 (last clamps to in[2]).
    x = torch.tensor([10.0, 20.0, 40.0]).view(1, 1, 1, 3)
    out = tf1_resize_bilinear(x, (1, 4)).flatten()
    torch.testing.assert_close(out, torch.tensor([10.0, 17.5, 30.0, 40.0]))


def test_resize_is_separable_in_both_axes() -> None:
    x = torch.rand(2, 3, 5, 7)
    both = tf1_resize_bilinear(x, (9, 11))
    rows_first = tf1_resize_bilinear(tf1_resize_bilinear(x, (9, 7)), (9, 11))
    torch.testing.assert_close(both, rows_first)
    assert both.shape == (2, 3, 9, 11)


def test_central_crop_224_keeps_196() -> None:
    x = torch.arange(224.0).view(1, 1, 1, 224).expand(1, 1, 224, 224)
    crop = tf1_central_crop(x, 0.875)
    assert crop.shape[-2:] == (196, 196)
    assert crop[0, 0, 0, 0].item() == 14.0
    assert crop[0, 0, 0, -1].item() == 209.0


def test_crop_resize_scale_on_constant_and_range() -> None:
    module = CropResizeScale()
    constant = torch.full((1, 3, 224, 224), 0.25)
    torch.testing.assert_close(module(constant), torch.full_like(constant, -0.5))
    x = torch.rand(2, 3, 224, 224)
    out = module(x)
    assert out.shape == x.shape
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_crop_resize_scale_matches_composition() -> None:
    x = torch.rand(1, 3, 224, 224)
    expected = (tf1_resize_bilinear(x[..., 14:210, 14:210], (224, 224)) - 0.5) * 2
    torch.testing.assert_close(CropResizeScale()(x), expected)


def test_disabled_preprocessing_is_identity() -> None:
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(CropResizeScale(enabled=False)(x), x)


def test_preprocessing_is_differentiable() -> None:
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    CropResizeScale()(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
