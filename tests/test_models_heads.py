"""Heads: which head each model declares, the challenge view on hand-made logits,
and the losses, predictions and probabilities each head gives the trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from llrnet.core.errors import InputError, UsageError
from llrnet.inference import predict_images
from llrnet.models import (
    BICYCLE,
    BIRD,
    SIGMOID_BIRD_HEAD,
    SOFTMAX_HEAD,
    BirdOrBicycleClassifier,
    challenge_view,
    create_model,
    head_of,
    list_models,
    load_weights,
    save_weights,
    set_head,
)
from llrnet.models.heads import BirdLogitView, ChallengeView, SigmoidBirdHead
from llrnet.train.tasks import StandardTask


class Fixed(nn.Module):
    """Returns the logits it was built with (one row per image), whatever the images."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits[: len(x)]  # type: ignore[index]


def _bird(logit: list[float]) -> nn.Module:
    """A model whose raw output is ``[junk, l]``: the released head's layout."""
    bird = torch.tensor(logit)
    return set_head(Fixed(torch.stack([torch.full_like(bird, 100.0), bird], dim=1)),
                    SIGMOID_BIRD_HEAD)


X3 = torch.rand(3, 3, 4, 4)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_declares_its_head(name: str) -> None:
    model = create_model(name)
    expected = SIGMOID_BIRD_HEAD if isinstance(model, BirdOrBicycleClassifier) else SOFTMAX_HEAD
    assert head_of(model) is expected
    if expected is SOFTMAX_HEAD:
        assert challenge_view(model) is model  # the logits already are the contract
    else:
        assert isinstance(challenge_view(model), ChallengeView)


def test_head_of_sees_through_output_preserving_wrappers_only() -> None:
    model = create_model("llr_pretrain_adv_tiny")
    assert head_of(nn.DataParallel(model)) is SIGMOID_BIRD_HEAD
    assert head_of(torch.compile(model)) is SIGMOID_BIRD_HEAD  # type: ignore[arg-type]
    # A view changes the output: it is a softmax (two-class) model itself.
    assert head_of(ChallengeView(model)) is SOFTMAX_HEAD
    assert head_of(BirdLogitView(model)) is SOFTMAX_HEAD
    # Any other container does not pass its children's heads on.
    assert head_of(nn.Sequential(model)) is SOFTMAX_HEAD


def test_head_of_sees_through_ddp(tmp_path: Path) -> None:
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(create_model("llr_pretrain_adv_tiny"))
        assert head_of(model) is SIGMOID_BIRD_HEAD
        assert isinstance(challenge_view(model), ChallengeView)
    finally:
        dist.destroy_process_group()


def test_set_head_gives_any_trunk_a_sigmoid_bird_head() -> None:
    torch.manual_seed(0)
    net = set_head(create_model("digits_wrn", num_classes=1), SigmoidBirdHead(column=0))
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        logit = net(x)[:, 0]
        torch.testing.assert_close(challenge_view(net)(x),
                                   torch.stack([F.relu(-logit), F.relu(logit)], dim=1))
    assert head_of(create_model("digits_wrn")) is SOFTMAX_HEAD  # other instances unchanged
    with pytest.raises(UsageError, match=r"must be a llrnet\.models\.heads\.Head"):
        set_head(net, "sigmoid")  # type: ignore[arg-type]


def test_challenge_view_values_by_hand() -> None:
    view = challenge_view(_bird([-2.0, 0.0, 3.0]))
    logits = view(X3)
    assert torch.equal(logits, torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 3.0]]))
    # Argmax: bicycle, tie -> bicycle, bird; confidence |l|.
    assert logits.argmax(1).tolist() == [BICYCLE, BICYCLE, BIRD]
    assert challenge_view(view) is view  # idempotent


def test_softmax_models_are_their_own_challenge_view() -> None:
    model = Fixed(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
    assert head_of(model) is SOFTMAX_HEAD and challenge_view(model) is model


def test_views_refuse_models_without_a_sigmoid_bird_head() -> None:
    with pytest.raises(UsageError, match=r"ChallengeView reads a sigmoid bird logit.*SoftmaxHead"):
        ChallengeView(nn.Flatten())
    with pytest.raises(UsageError, match="BirdLogitView reads a sigmoid bird logit"):
        BirdLogitView(nn.Flatten())


def test_bird_logit_view_is_zero_and_the_bird_logit() -> None:
    view = BirdLogitView(_bird([-2.0, 0.0, 3.0]))
    assert torch.equal(view(X3), torch.tensor([[0.0, -2.0], [0.0, 0.0], [0.0, 3.0]]))


def test_bce_on_the_bird_logit_equals_softmax_ce_of_zero_and_the_logit() -> None:
    z = torch.linspace(-30.0, 30.0, 41, dtype=torch.float64)
    y = torch.arange(41) % 2
    bce = F.binary_cross_entropy_with_logits(z, y.double(), reduction="none")
    ce = F.cross_entropy(torch.stack([torch.zeros_like(z), z], dim=1), y, reduction="none")
    torch.testing.assert_close(ce, bce)
    raw = torch.stack([torch.zeros_like(z), z], dim=1)
    torch.testing.assert_close(SIGMOID_BIRD_HEAD.per_example_loss(raw, y), bce)


def test_sigmoid_head_loss_predictions_and_log_probs() -> None:
    logits = torch.tensor([[5.0, -2.0], [5.0, 0.0], [5.0, 3.0]])
    y = torch.tensor([0, 1, 1])
    z = logits[:, 1]
    torch.testing.assert_close(SIGMOID_BIRD_HEAD.loss(logits, y),
                               F.binary_cross_entropy_with_logits(z, y.float()))
    assert SIGMOID_BIRD_HEAD.predict(logits).tolist() == [0, 0, 1]  # l = 0 is bicycle
    p = torch.sigmoid(z)
    torch.testing.assert_close(SIGMOID_BIRD_HEAD.log_probs(logits),
                               torch.stack([torch.log1p(-p), torch.log(p)], dim=1))
    # Channel 0 carries nothing: it gets no gradient.
    raw = logits.clone().requires_grad_(True)
    SIGMOID_BIRD_HEAD.loss(raw, y).backward()
    assert raw.grad is not None and torch.equal(raw.grad[:, 0], torch.zeros(3))


def test_softmax_head_is_cross_entropy_and_argmax() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0], [3.0, -1.0, 0.5]])
    y = torch.tensor([1, 2])
    torch.testing.assert_close(SOFTMAX_HEAD.loss(logits, y), F.cross_entropy(logits, y))
    torch.testing.assert_close(SOFTMAX_HEAD.per_example_loss(logits, y),
                               F.cross_entropy(logits, y, reduction="none"))
    assert SOFTMAX_HEAD.predict(logits).tolist() == [1, 0]
    torch.testing.assert_close(SOFTMAX_HEAD.log_probs(logits), F.log_softmax(logits, dim=1))


def test_margins_by_hand() -> None:
    # Bird head: l moves 2 against the label, so the BCE is softplus(2 - s * l).
    logits = torch.tensor([[7.0, 3.0], [7.0, 3.0], [7.0, -1.0]])
    y = torch.tensor([1, 0, 0])
    moved = SIGMOID_BIRD_HEAD.with_margin(logits, y, 2.0)
    torch.testing.assert_close(moved, torch.tensor([[7.0, 1.0], [7.0, 5.0], [7.0, 1.0]]))
    torch.testing.assert_close(SIGMOID_BIRD_HEAD.per_example_loss(moved, y),
                               F.softplus(torch.tensor([2.0 - 3.0, 2.0 + 3.0, 2.0 - 1.0])))
    assert logits[0, 1] == 3.0  # the input is not changed in place
    # A right answer that wins by less than the margin still has a loss to lower.
    assert SIGMOID_BIRD_HEAD.loss(moved[:1], y[:1]) > SIGMOID_BIRD_HEAD.loss(logits[:1], y[:1])
    # Softmax head: the true class's logit lowered by the margin.
    soft = torch.tensor([[1.0, 2.0, 0.0], [3.0, -1.0, 0.5]])
    torch.testing.assert_close(SOFTMAX_HEAD.with_margin(soft, torch.tensor([1, 2]), 0.5),
                               torch.tensor([[1.0, 1.5, 0.0], [3.0, -1.0, 0.0]]))
    torch.testing.assert_close(SOFTMAX_HEAD.with_margin(soft, torch.tensor([1, 2]), 0.0), soft)


def test_task_loss_of_a_sigmoid_head_is_bce_on_the_bird_logit() -> None:
    model = create_model("llr_pretrain_adv_tiny").train()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 1, 0])
    out = StandardTask()(model, (x, y), 0)
    with torch.no_grad():
        raw = model(x)  # training mode: the same batch statistics, the same function
    torch.testing.assert_close(out["loss"].detach(),
                               F.binary_cross_entropy_with_logits(raw[:, 1], y.float()))
    torch.testing.assert_close(out["accuracy"], ((raw[:, 1] > 0).long() == y).float().mean())


def test_a_declared_head_must_be_a_head() -> None:
    model = nn.Flatten()
    model.output_head = "sigmoid"  # type: ignore[assignment]
    with pytest.raises(UsageError, match=r"Flatten\.output_head must be a"):
        head_of(model)


def test_predict_scores_any_sigmoid_bird_head_and_refuses_softmax(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (300, 240), (20, 40, 60)).save(path)
    predictions, failures = predict_images(_bird([-1.5]), [path])
    assert failures == {} and len(predictions) == 1
    only = predictions[0]
    assert (only.label, only.bird_logit, only.confidence) == ("bicycle", -1.5, 1.5)
    assert only.bird_probability == pytest.approx(float(torch.sigmoid(torch.tensor(-1.5))))
    with pytest.raises(InputError, match=r"predict needs a bird-or-bicycle.*SoftmaxHead"):
        predict_images(create_model("digits_wrn"), [path])


def test_digits_wrn_builds_the_bird_head_and_weights_files_keep_it(tmp_path: Path) -> None:
    net = create_model("digits_wrn", width=1, head="sigmoid_bird")
    assert head_of(net) == SigmoidBirdHead(column=1)  # the released head's channel
    assert head_of(create_model("digits_wrn", width=1, num_classes=1,
                                head="sigmoid_bird")) == SigmoidBirdHead(column=0)
    save_weights(net, tmp_path / "bird.safetensors")
    assert head_of(load_weights(tmp_path / "bird.safetensors")) == SigmoidBirdHead(column=1)
    with pytest.raises(UsageError, match="num_classes 1 or 2"):
        create_model("digits_wrn", num_classes=10, head="sigmoid_bird")
