"""Worst-of-k spatial training: the hardest candidate per image, within the suite's limits,
rendered as the spatial grid renders; the tasks' pass counts; stage 2 from a stage-1 trunk."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from llrnet.attacks import Chain, RandomSpatial, SpatialGrid
from llrnet.core.errors import UsageError
from llrnet.eval import get_suite
from llrnet.models import create_model, head_of, save_weights
from llrnet.models.heads import SOFTMAX_HEAD, SigmoidBirdHead
from llrnet.train import load_config
from llrnet.train.build import build_model, build_task
from llrnet.train.tasks import LLRTask, PGDTask, StandardTask, TRADESTask, WorstOfK
from llrnet.train.tasks.spatial import suite_spatial_limits
from train_helpers import tiny_bn_net


def _net(classes: int = 2) -> nn.Module:
    return tiny_bn_net(classes, size=16)


def _linear() -> nn.Module:
    """A linear classifier of 16x16 images whose logits follow where the bright pixels are
    (right and down: class 1; rotations move pixels too), so every transform scores apart."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(256, 2))
    rows, columns = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    field = ((columns - 7.5) + 0.5 * (rows - 7.5) + 0.02 * (columns - 7.5) ** 2) / 8
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([-field, field]).reshape(2, 256))
        model[1].bias.zero_()
    return model


def _digits_like(n: int) -> tuple[Tensor, Tensor]:
    """Bright blobs on black 16x16 images (the spatial transforms move something)."""
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(n, 1, 16, 16)
    x[:, :, 4:12, 5:11] = torch.rand(n, 1, 8, 6, generator=g)
    return x, torch.arange(n) % 2


def test_suite_limits_are_read_from_the_suites() -> None:
    # digits: grid and random stage both (10 px, 10 px, 10 deg); the grid's 15% border.
    assert suite_spatial_limits("digits") == ((10.0, 10.0, 10.0), 0.15)
    # bird_or_bicycle: the executed grid shifts dy up to 30 px, the random stage rotates 30 deg.
    assert suite_spatial_limits("bird_or_bicycle") == ((18.0, 30.0, 30.0), 0.15)
    assert WorstOfK(suite="digits", limits=(2.0, 3.0, 4.0)).resolved() == ((2.0, 3.0, 4.0), 0.15)


@pytest.mark.parametrize("suite", ["digits", "bird_or_bicycle"])
def test_the_suites_spatial_attacks_are_built_from_the_shared_limits(suite: str) -> None:
    """The evaluation suite's grid and random stage reach exactly the training limits."""
    limits = torch.zeros(3, dtype=torch.float64)
    borders = set()
    for entry in get_suite(suite).entries:
        stages = entry.attack.stages if isinstance(entry.attack, Chain) else (entry.attack,)
        for attack in stages:
            if isinstance(attack, SpatialGrid):
                limits = torch.maximum(limits, attack.transforms.abs().amax(dim=0))
                borders.add(attack.border_fraction)
            elif isinstance(attack, RandomSpatial):
                limits = torch.maximum(limits, torch.tensor(attack.limits, dtype=torch.float64))
    expected, border = suite_spatial_limits(suite)
    assert tuple(limits.tolist()) == expected
    assert borders == {border}


def test_a_suite_without_a_spatial_grid_has_no_limits() -> None:
    with pytest.raises(UsageError, match="no spatial grid"):
        suite_spatial_limits("linf")


@pytest.mark.parametrize("include_original", [True, False])
def test_worst_of_k_picks_the_highest_loss_candidate_within_the_limits(
        include_original: bool) -> None:
    model = _linear()
    x, y = _digits_like(6)
    spatial = WorstOfK(k=5, suite="digits", limits=(3.0, 2.0, 20.0),
                       include_original=include_original)
    params = spatial.sample(6, torch.Generator().manual_seed(0))
    assert params.shape == (6, 5, 3)
    assert (params.abs() <= torch.tensor([3.0, 2.0, 20.0], dtype=torch.float64)).all()
    assert params.abs().amax(dim=(0, 1)).gt(torch.tensor([1.0, 1.0, 5.0],
                                                         dtype=torch.float64)).all()
    if include_original:
        assert (params[:, 0] == 0).all()
    choice = spatial.choose(model, x, y, SOFTMAX_HEAD, params)
    # Oracle: every candidate rendered and scored alone.
    with torch.no_grad():
        for i in range(6):
            single = spatial.render(x[i:i + 1], params[i:i + 1])[0]  # [k, C, H, W]
            losses = torch.stack([nn.functional.cross_entropy(model(c[None]), y[i:i + 1])
                                  for c in single])
            assert len(set(losses.tolist())) == 5  # the candidates score apart
            assert int(choice.index[i]) == int(losses.argmax())
            torch.testing.assert_close(choice.losses[i], losses, atol=1e-5, rtol=1e-5)
            assert torch.equal(choice.images[i], single[int(choice.index[i])])
    assert choice.images.min() >= 0 and choice.images.max() <= 1


def test_candidates_are_rendered_as_the_spatial_grid_renders() -> None:
    x, _ = _digits_like(3)
    table = torch.tensor([[2.0, -1.0, 10.0], [0.0, 0.0, 0.0], [-3.0, 2.0, -20.0]],
                         dtype=torch.float64)
    grid = SpatialGrid(table, border_fraction=0.15)
    spatial = WorstOfK(k=3, limits=(3.0, 3.0, 20.0), border_fraction=0.15,
                       include_original=False)
    rendered = spatial.render(x, table.expand(3, 3, 3))
    for t in range(3):
        expected = grid.transform(x, torch.full((3,), t))
        torch.testing.assert_close(rendered[:, t], expected, atol=1.5 / 255, rtol=0)


def _forwarded_batches(task: object, model: nn.Module, n: int) -> float:
    """Images the task forwards through ``model`` in one step, in batches of ``n``."""
    seen = [0]
    handle = model.register_forward_hook(lambda m, i, o: seen.__setitem__(0, seen[0]
                                                                          + i[0].shape[0]))
    x, y = _digits_like(n)
    try:
        task(model.train(), (x, y), 0)  # type: ignore[operator]
    finally:
        handle.remove()
    return seen[0] / n


@pytest.mark.parametrize("task", [
    StandardTask(),
    PGDTask(eps=0.1, steps=3, step_size=0.05),
    PGDTask(eps=0.1, steps=2, step_size=0.05, spatial=WorstOfK(k=4, suite="digits")),
    PGDTask(eps=0.0, steps=0, step_size=0.0, random_start=False,
            spatial=WorstOfK(k=3, suite="digits")),
    TRADESTask(eps=0.1, steps=2, step_size=0.05, spatial=WorstOfK(k=3, suite="digits")),
    LLRTask(eps=0.1, steps=3, warmup_steps=0),
], ids=["standard", "pgd", "pgd+spatial", "spatial-only", "trades+spatial", "llr"])
def test_passes_per_step_counts_what_the_task_forwards(task: object) -> None:
    passes = task.passes_per_step()  # type: ignore[attr-defined]
    assert _forwarded_batches(task, _net(), 4) == passes.forward_backward + passes.forward_only


def test_pgd_with_spatial_only_trains_on_the_worst_transform() -> None:
    x, y = _digits_like(8)
    spatial = WorstOfK(k=4, suite="digits")
    task = PGDTask(eps=0.0, steps=0, step_size=0.0, random_start=False, spatial=spatial)
    model = _linear()  # no batch norm: train and attack modes agree
    torch.manual_seed(3)
    out = task(model.train(), (x, y), 0)
    torch.manual_seed(3)
    choice = spatial.choose(model, x, y, SOFTMAX_HEAD)
    worst = choice.losses.amax(dim=1).mean()
    torch.testing.assert_close(out["loss"].detach(), worst)
    torch.testing.assert_close(out["spatial_loss"], worst)
    assert float(out["spatial_original"]) == float((choice.index == 0).float().mean())


def test_task_options_build_a_nested_worst_of_k() -> None:
    config = load_config("digits_llr_adv")
    task = build_task(config.task)
    assert isinstance(task, PGDTask) and task.spatial == WorstOfK(k=8, suite="digits")
    assert task.spatial.resolved() == ((10.0, 10.0, 10.0), 0.15)
    full = build_task(load_config("bird_or_bicycle_adv").task)
    assert full.spatial is not None and full.spatial.suite == "bird_or_bicycle"


def test_stage_2_loads_the_stage_1_trunk_and_a_fresh_head(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stage1 = load_config("digits10_llr").model
    source = build_model(stage1)
    assert head_of(source) is SOFTMAX_HEAD
    path = tmp_path / "stage1.safetensors"
    save_weights(source, path)
    config = load_config("digits_llr_adv", [f"model.init_weights={path}"]).model
    torch.manual_seed(5)
    with caplog.at_level(logging.INFO, logger="llrnet.train.build"):
        model = build_model(config)
    assert isinstance(head_of(model), SigmoidBirdHead)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "newly initialized ['fc.bias', 'fc.weight']" in message
    loaded, own = source.state_dict(), model.state_dict()
    for name, tensor in own.items():
        if name.startswith("fc."):
            assert tensor.shape != loaded[name].shape
        else:
            assert torch.equal(tensor, loaded[name]), name
    # The fresh head is the builder's initialization (same RNG state), not stage 1's.
    torch.manual_seed(5)
    fresh = create_model("digits_wrn", **config.kwargs).state_dict()
    assert torch.equal(own["fc.weight"], fresh["fc.weight"])
    assert torch.equal(own["fc.bias"], fresh["fc.bias"])
