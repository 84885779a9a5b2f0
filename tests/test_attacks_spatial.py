"""Spatial grid and random spatial attacks: grids, borders, selection, geometry."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn

from llrnet.attacks.geometry import pil_affine, pil_border, tf_resize_legacy
from llrnet.attacks.spatial import RandomSpatial, SpatialGrid, spatial_grid

pytestmark = pytest.mark.usefixtures("one_thread")


class BrightPixelModel(nn.Module):
    """Class 0 iff some pixel is brighter than 0.1 (logit0 = 10 max - 1, logit1 = 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).amax(dim=1)
        return torch.stack([10 * m - 1, torch.zeros_like(m)], dim=1)


class MeanModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.mean(dim=(1, 2, 3))[:, None])


@pytest.mark.parametrize("kind", ["challenge", "intended"])
def test_grids_have_775_transforms_with_identity(kind: str) -> None:
    grid = spatial_grid(kind)
    assert grid.shape == (775, 3)
    assert (grid == 0).all(dim=1).sum() == 1
    dx, dy, angle = grid.unique(dim=0).T
    if kind == "challenge":
        assert sorted(set(angle.tolist())) == [-18, -9, 0, 9, 18]
        assert sorted(set(dx.tolist())) == [-18, -9, 0, 9, 18]
        assert len(set(dy.tolist())) == 31 and dy.min() == -30 and dy.max() == 30
        # Grid order: rotation slowest, vertical shift fastest.
        assert grid[0].tolist() == [-18, -30, -18] and grid[1].tolist() == [-18, -28, -18]
    else:
        assert len(set(angle.tolist())) == 31 and angle.max() == 30
        assert sorted(set(dy.tolist())) == [-18, -9, 0, 9, 18]
        assert grid[1].tolist() == [-18, -18, -28]


def test_identity_grid_returns_bordered_image() -> None:
    x = torch.rand(3, 3, 40, 40)
    y = torch.tensor([0, 1, 0])
    attack = SpatialGrid(grid=[[0.0, 0.0, 0.0]])
    out = attack(MeanModel(), x, y)
    expected = pil_border(x, 0.15) / 255.0
    torch.testing.assert_close(out, expected)
    # 40 * 0.15 -> 6 px of black on every side, content inside.
    assert out[:, :, :6].abs().max() == 0 and out[:, :, :, -6:].abs().max() == 0
    assert out[:, :, 6:-6, 6:-6].min() > 0
    no_border = SpatialGrid(grid=[[0.0, 0.0, 0.0]], border_fraction=0.0)(MeanModel(), x, y)
    torch.testing.assert_close(no_border, torch.floor(x * 255) / 255)
    assert attack.last_stats["model_evaluations"] == 3


def test_border_matches_pil() -> None:
    img = np.random.RandomState(0).rand(40, 40, 3).astype(np.float32)
    pil = PIL.Image.fromarray((img * 255.0).astype(np.uint8)).resize((28, 28), PIL.Image.BILINEAR)
    ref = np.zeros((40, 40, 3), np.float32)
    ref[6:34, 6:34] = np.asarray(pil)
    ours = pil_border(torch.from_numpy(img).permute(2, 0, 1)[None], 0.15)[0].permute(1, 2, 0)
    assert np.abs(ours.numpy() - ref).max() <= 1.0  # PIL's fixed-point rounding


@pytest.mark.parametrize("dx,dy,angle", [(3.0, -5.0, 0.0), (0.0, 0.0, 18.0), (-7.5, 4.0, -9.0)])
def test_affine_matches_pil_with_torchvision_02_matrix(dx: float, dy: float, angle: float) -> None:
    img = (np.random.RandomState(1).rand(36, 36) * 255).astype(np.uint8)
    a = math.radians(angle)
    c = 36 * 0.5 + 0.5
    m = [math.cos(a), math.sin(a), 0.0, -math.sin(a), math.cos(a), 0.0]
    m[2] = m[0] * (-c - dx) + m[1] * (-c - dy) + c
    m[5] = m[3] * (-c - dx) + m[4] * (-c - dy) + c
    ref = np.asarray(PIL.Image.fromarray(img).transform((36, 36), PIL.Image.AFFINE, m,
                                                         PIL.Image.BILINEAR))
    t = torch.tensor
    ours = pil_affine(torch.from_numpy(img).float()[None, None], t([dx]), t([dy]), t([angle]))
    assert np.abs(ours[0, 0].numpy() - ref.astype(np.float32)).max() <= 1.0


def test_bright_pixel_pushed_off_the_image_fools_the_model() -> None:
    x = torch.zeros(2, 1, 16, 16)
    x[0, 0, 8, 13] = 1.0  # 3 px from the right edge
    x[1, 0, 5, 2] = 1.0  # 2 px from the left edge
    y = torch.zeros(2, dtype=torch.int64)
    model = BrightPixelModel()
    small = SpatialGrid(grid=[[dx, 0.0, 0.0] for dx in (-1.0, 0.0, 1.0)], border_fraction=0.0)
    out = small(model, x, y)
    assert (model(out).argmax(1) == 0).all()  # the pixel stays on the image
    far = SpatialGrid(grid=[[dx, 0.0, 0.0] for dx in (-4.0, 0.0, 4.0)], border_fraction=0.0)
    out = far(model, x, y)
    assert (model(out).argmax(1) == 1).all()  # pushed off: image 0 right, image 1 left
    assert out.abs().max() == 0


def test_first_maximum_in_grid_order_wins() -> None:
    x = torch.rand(2, 1, 12, 12)
    y = torch.tensor([0, 1])
    constant = nn.Sequential(nn.Flatten(), nn.Linear(144, 2))
    nn.init.zeros_(constant[1].weight)
    grid = [[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-2.0, 0.0, 0.0]]
    attack = SpatialGrid(grid=grid, border_fraction=0.0, batch_size=2)
    expected = attack.transform(x, torch.tensor([0, 0]))
    torch.testing.assert_close(attack(constant, x, y), expected)


def test_grid_results_independent_of_batching_and_batch_mates() -> None:
    x = torch.rand(4, 3, 20, 20)
    y = torch.tensor([0, 1, 1, 0])
    model = nn.Sequential(nn.Conv2d(3, 2, 5), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    kwargs = {"limits": (4.0, 4.0, 10.0), "granularity": (3, 3, 5)}
    big = SpatialGrid(**kwargs, batch_size=1000)(model, x, y)  # type: ignore[arg-type]
    attack = SpatialGrid(**kwargs, batch_size=7)  # type: ignore[arg-type]
    small = attack(model, x, y)
    assert attack.last_stats["model_evaluations"] == 4 * 45
    torch.testing.assert_close(big, small)
    torch.testing.assert_close(attack(model, x[2:3], y[2:3]), small[2:3])
    # The chosen transform is the worst one: no grid transform has a larger margin.
    with torch.no_grad():
        chosen = model(small)
        margin = chosen[:, 1] - chosen[:, 0]
        margin = torch.where(y == 0, margin, -margin)
        for t in range(45):
            warped = attack.transform(x, torch.full((4,), t))
            logits = model(warped)
            m = torch.where(y == 0, logits[:, 1] - logits[:, 0], logits[:, 0] - logits[:, 1])
            assert (m <= margin + 1e-5).all()


def test_random_spatial_zero_motion_is_the_framed_image() -> None:
    x = torch.rand(2, 1, 28, 28)
    attack = RandomSpatial(limits=(0.0, 0.0, 0.0), border=4)
    out = attack(MeanModel(), x, torch.tensor([0, 1]))
    assert out[:, :, :2].abs().max() == 0 and out[:, :, -2:].abs().max() == 0
    assert out[:, :, :, :2].abs().max() == 0 and out[:, :, :, -2:].abs().max() == 0
    torch.testing.assert_close(out[:, :, 2:-2, 2:-2], tf_resize_legacy(x, (24, 24)))
    assert attack.last_stats["model_evaluations"] == 0


def test_random_spatial_geometry() -> None:
    x = torch.rand(1, 1, 16, 16)
    attack = RandomSpatial(border=0)
    params = torch.tensor([[3.0, 0.0, 0.0]], dtype=torch.float64)
    moved = attack.transform(x, params)
    torch.testing.assert_close(moved[..., 3:], x[..., :-3])  # content moves right by dx
    assert moved[..., :3].abs().max() == 0
    quarter = attack.transform(x, torch.tensor([[0.0, 0.0, 90.0]], dtype=torch.float64))
    torch.testing.assert_close(quarter, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_random_spatial_is_per_image_seeded_and_continuous() -> None:
    x = torch.rand(5, 3, 24, 24)
    y = torch.zeros(5, dtype=torch.int64)
    attack = RandomSpatial(limits=(5.0, 5.0, 10.0), border=4)
    seeds = torch.tensor([4, 8, 15, 16, 23])
    out = attack(MeanModel(), x, y, seeds=seeds)
    torch.testing.assert_close(attack(MeanModel(), x[3:4], y[3:4], seeds=seeds[3:4]), out[3:4])
    assert not torch.equal(out, attack(MeanModel(), x, y, seeds=seeds + 1))
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out * 255, torch.round(out * 255))  # not quantized
    from llrnet.attacks.parts import ImageRng

    params = attack.sample(ImageRng(torch.arange(200)))
    assert params[:, 0].abs().max() <= 5 and params[:, 2].abs().max() <= 10
    assert params[:, 2].abs().max() > 8  # spreads over the range


def test_canvas_crops_equal_direct_warps() -> None:
    """Integer translations are cropped from one rotated canvas per angle; they read the
    same source points as a direct affine per transform (up to rare 1-level rounding)."""
    x = torch.rand(2, 3, 30, 30)
    grid = [[3.0, -4.0, 9.0], [-2.0, 5.0, 9.0], [0.5, 1.5, 9.0], [0.0, 0.0, -9.0]]
    attack = SpatialGrid(grid=grid)
    bordered = pil_border(x, 0.15)
    for t, (dx, dy, angle) in enumerate(grid):
        ours = attack.transform(x, torch.full((2,), t)) * 255
        one = torch.full((2,), 1.0, dtype=torch.float64)
        direct = pil_affine(bordered, one * dx, one * dy, one * angle)
        diff = (ours - direct).abs()
        assert diff.max() <= 1.0 + 1e-4 and (diff > 0.5).float().mean() < 0.01
