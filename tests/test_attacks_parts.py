"""Attack parts: projections, random init, Adam step, losses, per-image streams."""

from __future__ import annotations

import pytest
import torch

from llrnet.attacks.parts import (
    CPU_FORWARD_CHUNK,
    AdamState,
    ImageRng,
    adam_step,
    cross_entropy_per_example,
    forward_chunk,
    margin_loss,
    project_l2,
    project_linf,
    random_init_l2,
    random_init_linf,
    wrong_class_margin,
)
from llrnet.core.seeding import derive


def test_project_linf_bounds_and_box() -> None:
    x = torch.rand(5, 3, 4, 4)
    delta = torch.randn(5, 3, 4, 4)
    out = project_linf(delta, x, 0.1)
    assert out.abs().max() <= 0.1 + 1e-7
    assert (x + out).min() >= 0 and (x + out).max() <= 1
    # Idempotent, and exactly cleverhans' clip-then-clip.
    torch.testing.assert_close(project_linf(out, x, 0.1), out)
    expected = (x + delta.clamp(-0.1, 0.1)).clamp(0, 1) - x
    torch.testing.assert_close(out, expected)


def test_project_linf_per_example_eps() -> None:
    x = torch.full((2, 1, 2, 2), 0.5)
    delta = torch.ones(2, 1, 2, 2)
    out = project_linf(delta, x, torch.tensor([0.1, 0.3]))
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([0.1, 0.3]))


def test_project_l2_norm_and_inside_untouched() -> None:
    x = torch.full((4, 1, 3, 3), 0.5)
    delta = torch.randn(4, 1, 3, 3)
    out = project_l2(delta, x, 0.2)
    assert (out.flatten(1).norm(dim=1) <= 0.2 + 1e-6).all()
    small = delta / delta.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1) * 0.05
    torch.testing.assert_close(project_l2(small, x, 0.2), small)


def test_random_init_in_balls_and_reproducible() -> None:
    x = torch.rand(6, 3, 5, 5)
    gens = ImageRng(torch.arange(6)).generators
    d1 = random_init_linf(x, 0.2, gens)
    assert d1.abs().max() <= 0.2 + 1e-7 and (x + d1).min() >= 0 and (x + d1).max() <= 1
    assert d1.abs().max() > 0.1  # actually spreads over the ball
    d2 = random_init_linf(x, 0.2, ImageRng(torch.arange(6)).generators)
    torch.testing.assert_close(d1, d2)
    l2 = random_init_l2(x, 0.5, ImageRng(torch.arange(6)).generators)
    assert (l2.flatten(1).norm(dim=1) <= 0.5 + 1e-6).all()


def test_image_rng_is_per_image() -> None:
    """Image i's draws do not depend on the other images in the batch."""
    full = ImageRng(torch.tensor([3, 7, 11])).uniform((4,), torch.device("cpu"))
    alone = ImageRng(torch.tensor([7])).uniform((4,), torch.device("cpu"))
    torch.testing.assert_close(full[1:2], alone)
    signs = ImageRng([1, 2]).rademacher((100,), torch.device("cpu"))
    assert set(signs.unique().tolist()) == {-1.0, 1.0}


def test_adam_step_matches_torch_adam() -> None:
    torch.manual_seed(1)
    p0 = torch.randn(3, 4)
    grads = [torch.randn(3, 4) for _ in range(5)]
    param = p0.clone().requires_grad_(True)
    opt = torch.optim.Adam([param], lr=0.01, betas=(0.9, 0.999), eps=1e-9)
    ours = p0.clone()
    state = AdamState.zeros_like(ours)
    for g in grads:
        opt.zero_grad()
        param.grad = g.clone()
        opt.step()
        adam_step(ours, g, state, lr=0.01)
    torch.testing.assert_close(ours, param.detach(), rtol=1e-5, atol=1e-6)
    assert state.t.tolist() == [5.0, 5.0, 5.0]


def test_random_bits_are_per_image_fair_and_fill_any_shape() -> None:
    rng = ImageRng([5, 6, 7])
    out = torch.full((3, 3, 7, 5), 9.0)  # 105 values per image: not a multiple of 64
    rng.random_bits_into(out)
    assert set(out.unique().tolist()) == {0.0, 1.0}
    alone = ImageRng([6]).random_bits_into(torch.empty(1, 3, 7, 5))
    assert torch.equal(out[1:2], alone)  # image 1 draws from its own stream only
    assert not torch.equal(out[0], out[1])
    many = ImageRng([0]).random_bits_into(torch.empty(1, 64_000))
    assert abs(float(many.mean()) - 0.5) < 0.01  # 10 standard deviations is 0.02
    flags = ImageRng([6]).random_bits((3, 7, 5), torch.device("cpu"))
    assert flags.dtype == torch.bool and torch.equal(flags.float(), alone)


def test_adam_state_select_keeps_rows() -> None:
    state = AdamState.zeros_like(torch.zeros(4, 2))
    adam_step(torch.zeros(4, 2), torch.arange(8.0).reshape(4, 2), state, lr=0.1)
    sub = state.select(torch.tensor([False, True, False, True]))
    torch.testing.assert_close(sub.m, state.m[[1, 3]])
    assert sub.t.shape == (2,)


def test_losses_on_hand_made_logits() -> None:
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.0, 3.0, 5.0]])
    y = torch.tensor([0, 1])
    torch.testing.assert_close(margin_loss(logits, y), torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(wrong_class_margin(logits, y), torch.tensor([-1.0, 2.0]))
    expected_ce = -torch.log_softmax(logits, dim=1)[[0, 1], [0, 1]]
    torch.testing.assert_close(cross_entropy_per_example(logits, y), expected_ce)


def test_stream_fillers_need_one_row_per_image() -> None:
    rng = ImageRng([1, 2])
    with pytest.raises(ValueError, match="out has 3 rows for 2 streams"):
        rng.random_bits_into(torch.empty(3, 4))
    with pytest.raises(ValueError, match="out has 1 rows for 2 streams"):
        rng.normal_into(torch.empty(1, 4))
    with pytest.raises(ValueError, match="out has 1 rows for 2 streams"):
        rng.normal_cells_into(torch.empty(1, 2, 4))


def test_normal_cells_do_not_depend_on_how_they_are_grouped() -> None:
    """A stream's k-th cell is the same drawn with batch-mates or alone, in one call or
    spread over several; child streams are seeded derive(seed_i, *keys)."""
    walk = ImageRng([3, 7, 11], "boundary").child("walk", 4)
    full = walk.normal_cells_into(torch.empty(3, 6, 50, dtype=torch.float64))
    alone = ImageRng([7], "boundary").child("walk", 4)
    first = alone.normal_cells_into(torch.empty(1, 2, 50))
    rest = alone.normal_cells_into(torch.empty(1, 4, 50))
    assert torch.equal(torch.cat([first, rest], dim=1).double(), full[1:2])
    generator = torch.Generator().manual_seed(derive(11, "boundary", "walk", 4))
    by_hand = torch.stack([torch.randn(50, generator=generator) for _ in range(6)])
    assert torch.equal(full[2].float(), by_hand)
    other = ImageRng([3], "boundary").child("walk", 5).normal_cells_into(torch.empty(1, 6, 50))
    assert not torch.equal(other[0].double(), full[0])  # the next iteration's stream


def test_normal_cells_have_standard_normal_moments() -> None:
    """2,000,000 values: mean 0, variance 1, skewness 0, kurtosis 3 (within about five
    standard errors), uncorrelated cells and neighbouring elements."""
    z = ImageRng([0, 1], "boundary").child("walk", 1).normal_cells_into(
        torch.empty(2, 20, 50_000, dtype=torch.float64))
    flat = z.flatten()
    assert abs(float(flat.mean())) < 0.004
    assert abs(float(flat.var()) - 1) < 0.006
    assert abs(float((flat**3).mean())) < 0.01
    assert abs(float((flat**4).mean()) - 3) < 0.03
    corr = torch.corrcoef(z.reshape(40, -1))
    assert float((corr - torch.eye(40, dtype=corr.dtype)).abs().max()) < 0.03
    assert abs(float((z[..., 1:] * z[..., :-1]).mean())) < 0.004
    # The fraction beyond 1.96 standard deviations (two-sided) is 5%.
    assert abs(float((flat.abs() > 1.96).double().mean()) - 0.05) < 0.002


def test_rademacher_signs_are_balanced_and_independent() -> None:
    signs = ImageRng(list(range(8)), "spsa").rademacher((32, 784), torch.device("cpu"))
    flat = signs.flatten().double()  # 200,704 signs
    assert set(flat.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(flat.mean())) < 0.012  # 5 standard errors
    assert abs(float((signs[..., 1:] * signs[..., :-1]).double().mean())) < 0.012
    per_position = signs.double().mean(dim=(0, 1))  # 256 signs each
    assert float(per_position.abs().max()) < 0.35


def test_forward_chunk_caps_calls_on_the_cpu_only() -> None:
    assert forward_chunk(torch.device("cpu"), 1024) == CPU_FORWARD_CHUNK == 64
    assert forward_chunk(torch.device("cpu"), 7) == 7
    assert forward_chunk(torch.device("cuda", 0), 1024) == 1024
