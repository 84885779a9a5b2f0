"""Boundary attack: starting points, threshold, give-up paths, batching."""

from __future__ import annotations

import pytest
import torch

from attack_helpers import data, linear_model
from llrnet.attacks.boundary import Boundary
from llrnet.models.compiled import compile_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_starting_points_are_pool_images_of_the_other_class() -> None:
    model = linear_model()
    x, y = data(model, 6, 0)
    pool = data(model, 20, 1)
    attack = Boundary(threshold=100.0, iterations=0)
    out = attack(model, x, y, seeds=0, pool=pool)
    for i in range(6):
        match = (pool[0] == out[i]).flatten(1).all(dim=1)
        assert match.sum() == 1
        assert int(pool[1][match.nonzero()[0, 0]]) != int(y[i])
    assert attack.last_stats["model_evaluations"] == 12  # clean check + starting points


def test_final_distance_within_threshold_and_adversarial() -> None:
    model = linear_model()
    x, y = data(model, 8, 2)
    pool = data(model, 30, 3)
    w = model[1].weight.detach()
    with torch.no_grad():
        logits = model(x)
    # Minimal L2 distance to the boundary of a linear model: |margin| / ||w0 - w1||.
    minimal = (logits[:, 0] - logits[:, 1]).abs() / (w[0] - w[1]).norm()
    threshold = float(minimal.max()) * 1.5
    attack = Boundary(threshold=threshold, iterations=400)
    out = attack(model, x, y, seeds=0, pool=pool)
    dist = (out - x).flatten(1).norm(dim=1)
    assert (dist <= threshold * (1 + 1e-5)).all()
    assert out.min() >= 0 and out.max() <= 1
    with torch.no_grad():
        fooled = model(out).argmax(1) != y
    assert fooled.float().mean() >= 0.75  # the walk got inside the threshold for most images
    assert attack.last_stats["model_evaluations"] < 8 * 400 * 25


def test_unreachable_threshold_is_projected_onto_the_sphere() -> None:
    model = linear_model()
    x, y = data(model, 3, 4)
    pool = data(model, 10, 5)
    w = model[1].weight.detach()
    with torch.no_grad():
        logits = model(x)
    minimal = (logits[:, 0] - logits[:, 1]).abs() / (w[0] - w[1]).norm()
    threshold = float(minimal.min()) * 0.5  # no adversarial point this close exists
    attack = Boundary(threshold=threshold, iterations=100)
    out = attack(model, x, y, seeds=0, pool=pool)
    dist = (out - x).flatten(1).norm(dim=1)
    torch.testing.assert_close(dist, torch.full_like(dist, threshold), rtol=1e-5, atol=0)
    with torch.no_grad():
        assert (model(out).argmax(1) == y).all()  # projected, class not re-checked
    # No early stop: every iteration spent (plus the clean and starting-point checks).
    assert attack.last_stats["model_evaluations"] >= 3 * 100 + 6


def test_invalid_starting_point_and_misclassified_input_return_the_input() -> None:
    model = linear_model()
    x, y = data(model, 4, 6)
    images, predicted = data(model, 12, 7)
    lying_pool = (images, 1 - predicted)  # labels say "other class", the model disagrees
    attack = Boundary(threshold=0.1, iterations=50)
    torch.testing.assert_close(attack(model, x, y, pool=lying_pool), x)
    assert attack.last_stats["model_evaluations"] == 8
    wrong = 1 - y  # already misclassified
    torch.testing.assert_close(attack(model, x, wrong, pool=(images, predicted)), x)
    assert attack.last_stats["model_evaluations"] == 4


def test_boundary_is_batch_invariant() -> None:
    model = linear_model()
    x, y = data(model, 4, 8)
    pool = data(model, 16, 9)
    seeds = torch.tensor([3, 1, 4, 1])
    attack = Boundary(threshold=0.3, iterations=60, directions_per_batch=4, max_batch=8)
    full = attack(model, x, y, seeds=seeds, pool=pool)
    alone = attack(model, x[2:3], y[2:3], seeds=seeds[2:3], pool=pool)
    torch.testing.assert_close(full[2:3], alone)
    other_chunks = Boundary(threshold=0.3, iterations=60, directions_per_batch=4, max_batch=1000)
    torch.testing.assert_close(other_chunks(model, x, y, seeds=seeds, pool=pool), full)


@pytest.mark.parametrize(("directions_per_batch", "max_batch"), [(1, 1), (3, 7), (25, 1000)])
def test_boundary_results_do_not_depend_on_batching_knobs(directions_per_batch: int,
                                                           max_batch: int) -> None:
    """The walk's noise is a pure function of (seed, iteration, candidate), so chunking the
    candidates or the images changes the evaluations spent, never the result (bit for bit
    with a model whose rows do not depend on the batch size)."""
    model = linear_model(rowwise=True)
    x, y = data(model, 5, 10)
    pool = data(model, 16, 11)
    seeds = torch.tensor([9, 2, 6, 5, 3])
    reference = Boundary(threshold=0.2, iterations=40, directions_per_batch=5, max_batch=256)
    expected = reference(model, x, y, seeds=seeds, pool=pool)
    attack = Boundary(threshold=0.2, iterations=40, directions_per_batch=directions_per_batch,
                      max_batch=max_batch)
    assert torch.equal(attack(model, x, y, seeds=seeds, pool=pool), expected)
    assert not torch.equal(expected, x)  # the walk moved


def test_boundary_image_depends_only_on_its_own_seed() -> None:
    """Permuting the images with their seeds permutes the results."""
    model = linear_model(rowwise=True)
    x, y = data(model, 6, 12)
    pool = data(model, 16, 13)
    seeds = torch.tensor([40, 41, 42, 43, 44, 45])
    attack = Boundary(threshold=0.2, iterations=30)
    out = attack(model, x, y, seeds=seeds, pool=pool)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    shuffled = attack(model, x[order], y[order], seeds=seeds[order], pool=pool)
    assert torch.equal(shuffled, out[order])
    other_seed = attack(model, x[:1], y[:1], seeds=torch.tensor([46]), pool=pool)
    assert not torch.equal(other_seed, out[:1])



class _Convolutional(torch.nn.Module):
    """A small conv net with a declared (conv, batch norm) fold; counts what it sees."""

    batch_norm_folds = (("conv", "norm"),)

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4 * 64, 2)
        self.seen = 0
        self.folded_calls = 0
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.5, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)
            self.head.weight.mul_(8)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        self.folded_calls += isinstance(self.norm, torch.nn.Identity)
        return self.head(torch.relu(self.norm(self.conv(x))).flatten(1))


def test_boundary_walks_on_the_decision_form_and_counts_every_query() -> None:
    model = _Convolutional()
    x, y = data(model, 4, 20)
    pool = data(model, 16, 21)
    seeds = torch.tensor([5, 6, 7, 8])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    attack = Boundary(threshold=0.5, iterations=30)
    model.seen = 0
    out = attack(model, x, y, seeds=seeds, pool=pool)
    # The model itself answered every query (its counter agrees), the walk's in its
    # folded form; afterwards it is the model it was.
    assert attack.last_stats["model_evaluations"] == model.seen > 4 + 4 * 5
    assert model.folded_calls > 0
    assert isinstance(model.norm, torch.nn.BatchNorm2d)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # The same decisions along the walk as the model as given (rounding aside): the
    # same result as the walk that does not fold.
    plain = Boundary(threshold=0.5, iterations=30)
    plain.fast_decisions = False
    model.folded_calls = 0
    expected = plain(model, x, y, seeds=seeds, pool=pool)
    assert model.folded_calls == 0
    assert not torch.equal(expected, x)  # the walk moved
    assert float((out - expected).abs().max()) < 1e-3
    assert attack.last_stats["model_evaluations"] == plain.last_stats["model_evaluations"]
    # Batch invariance holds in the decision form: one image alone gets its result in
    # the batch (a conv may round differently for another batch size: compared to 1e-3).
    alone = attack(model, x[1:2], y[1:2], seeds=seeds[1:2], pool=pool)
    assert float((alone - out[1:2]).abs().max()) < 1e-3


def test_compiled_decisions_walk_as_the_decision_form(monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.compile traced by dynamo, run by its eager backend (no C++ compiler): what is
    # checked is the padding into buckets and the restoring, not inductor's kernels.
    real = torch.compile
    shapes: list[int] = []

    def compile_(fn: object, **kwargs: object) -> object:
        inner = real(fn, backend="eager", **kwargs)  # type: ignore[call-overload]

        def run(x: torch.Tensor) -> torch.Tensor:
            shapes.append(x.shape[0])
            return inner(x)
        return run

    monkeypatch.setattr(torch, "compile", compile_)
    model = _Convolutional()
    x, y = data(model, 5, 20)
    pool = data(model, 16, 21)
    seeds = torch.tensor([5, 6, 7, 8, 9])
    fast = Boundary(threshold=0.5, iterations=30)
    expected = fast(model, x, y, seeds=seeds, pool=pool)
    assert not shapes
    attack = Boundary(threshold=0.5, iterations=30)
    attack.compile_decisions = True
    out = attack(model, x, y, seeds=seeds, pool=pool)
    # Every walk query went through the compiled form, in batches of whole buckets of 16
    # (5 images x 5 candidates: 25 -> 32); the attack counted the real queries only.
    assert shapes and all(n % 16 == 0 for n in shapes) and 32 in shapes
    assert attack.last_stats["model_evaluations"] == fast.last_stats["model_evaluations"]
    assert float((out - expected).abs().max()) < 1e-3
    assert "forward" not in model.__dict__ and isinstance(model.norm, torch.nn.BatchNorm2d)
    # A model compiled by `--compile` walks compiled too, and keeps its compiled forward.
    assert compile_model(model)
    given = model.__dict__["forward"]
    shapes.clear()
    again = Boundary(threshold=0.5, iterations=30)(model, x, y, seeds=seeds, pool=pool)
    assert shapes.count(32) >= 2 and all(n % 16 == 0 for n in shapes[1:])
    assert float((again - expected).abs().max()) < 1e-3
    assert model.__dict__["forward"] is given
