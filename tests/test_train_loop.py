"""The training loop: bit-identical resume, NaN handling, metrics, final weights."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from llrnet.core.errors import RunError, UsageError, WeightsError
from llrnet.models import read_metadata
from llrnet.train import config_to_dict, load_config, train
from llrnet.train.checkpoint import latest_checkpoint
from llrnet.train.config import TrainConfig
from llrnet.train.logging import read_metrics

TINY = [
    "steps=8", "batch_size=16", "model.kwargs={width: 1}", "data.size=8",
    "checkpoint_every=2", "log_every=2", "tensorboard=false", "data.eval_images=16",
    "eval.steps=1", "eval.eps=0.1", "optim.lr=0.05", "optim.warmup_steps=2",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(*extra: str) -> TrainConfig:
    return load_config(None, [*TINY, *extra])


def weights(path: Path) -> dict[str, Tensor]:
    return load_file(str(path))


def assert_identical(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    # PGD (random start), augmentation and EMA: every RNG and every state must come back.
    config = tiny("task.name=pgd", "task.options={eps: 0.1, steps: 1, step_size: 0.1}",
                  "data.augment=crop", "data.pad=1", "data.photometric=0.5", "ema_decay=0.8",
                  "steps=7")
    straight = train(config, tmp_path / "straight", progress=False)
    partial = train(config, tmp_path / "cut", until_step=3, progress=False)
    assert not partial.finished and partial.step == 3
    assert latest_checkpoint(tmp_path / "cut" / "checkpoints")[0] == 3  # type: ignore[index]
    resumed = train(config, tmp_path / "cut", resume=True, progress=False)
    assert resumed.finished and resumed.step == 7
    assert_identical(weights(straight.weights), weights(resumed.weights))  # type: ignore[arg-type]
    # The optimizer state too (it would drift apart at the next step otherwise).
    a = latest_checkpoint(tmp_path / "straight" / "checkpoints")
    b = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    assert a is not None and b is not None
    for x, y in zip(a[1]["optimizer"]["state"].values(), b[1]["optimizer"]["state"].values()):
        assert torch.equal(x["momentum_buffer"], y["momentum_buffer"])
    # The metrics file describes one history: no duplicated steps after the resume.
    steps = [r["step"] for r in read_metrics(tmp_path / "cut") if "loss" in r]
    assert steps == sorted(set(steps)) == [2, 3, 4, 6, 7]


def test_final_weights_carry_the_resolved_config_and_metrics(tmp_path: Path) -> None:
    config = tiny("eval.every=4", "tensorboard=true")
    result = train(config, tmp_path / "run", progress=False)
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    record = read_metadata(result.weights)  # type: ignore[arg-type]
    assert record["recipe"] == config_to_dict(config)
    assert record["architecture"] == "digits_wrn" and record["kwargs"] == {"width": 1}
    assert set(record["metrics"]) == {"clean_accuracy", "pgd_accuracy"}
    assert 0.0 <= record["metrics"]["pgd_accuracy"] <= record["metrics"]["clean_accuracy"] <= 1
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert load_config(str(tmp_path / "run" / "config.yaml")) == config, saved
    records = read_metrics(tmp_path / "run")
    train_steps = [r["step"] for r in records if "loss" in r]
    assert train_steps == [2, 4, 6, 8]
    assert [r["step"] for r in records if "eval/pgd_accuracy" in r] == [4, 8]
    assert all(r["lr"] > 0 and r["images_per_second"] > 0 for r in records if "loss" in r)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["step"] == 8


def test_rerun_of_a_finished_run_with_resume_does_nothing(tmp_path: Path) -> None:
    config = tiny("steps=2")
    first = train(config, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "final.safetensors").stat().st_mtime_ns
    again = train(config, tmp_path / "run", resume=True, progress=False)
    assert again.finished and again.metrics == first.metrics
    assert (tmp_path / "run" / "final.safetensors").stat().st_mtime_ns == before


class NaNAt:
    """Cross-entropy, except the loss is NaN at the given steps."""

    def __init__(self, steps: set[int]) -> None:
        self.steps = steps

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], step: int
                 ) -> dict[str, Tensor]:
        x, y = batch
        loss = nn.functional.cross_entropy(model(x), y)
        if step in self.steps:
            loss = loss * float("nan")
        return {"loss": loss, "ce": loss.detach()}


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    config = tiny("steps=8")
    with pytest.raises(RunError, match=r"non-finite loss \(nan\) at step 5.*step-00000004\.pt"):
        train(config, tmp_path / "run", task=NaNAt({5}), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact checkpoint: no fallback warning
        found = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert found is not None and found[0] == 4
    assert all(torch.isfinite(v).all() for v in found[1]["model"].values())
    assert not (tmp_path / "run" / "final.safetensors").exists()
    # Resumed from that checkpoint, the same failure names it again.
    with pytest.raises(RunError, match=r"at step 5.*last good checkpoint is .*step-00000004"):
        train(config, tmp_path / "run", task=NaNAt({5}), resume=True, progress=False)


def test_skip_mode_skips_bad_batches_and_finishes(tmp_path: Path) -> None:
    config = tiny("steps=6", "on_nonfinite=skip")
    result = train(config, tmp_path / "run", task=NaNAt({1, 4}), progress=False)
    assert result.finished
    assert all(torch.isfinite(v).all() for v in weights(result.weights).values())  # type: ignore[arg-type]
    # A skipped batch changes nothing: the same run with steps 1 and 4 skipped is
    # identical to one whose learning rate is zero at those steps -- check the
    # simpler invariant that weights before and after a skipped step agree.
    cut = train(config, tmp_path / "cut", task=NaNAt({1, 4}), until_step=1, progress=False)
    assert cut.step == 1
    before = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    train(config, tmp_path / "cut", task=NaNAt({1, 4}), until_step=2, resume=True,
          progress=False)
    after = latest_checkpoint(tmp_path / "cut" / "checkpoints")
    assert before is not None and after is not None and after[0] == 2
    for name, value in before[1]["model"].items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(value, after[1]["model"][name]), name


def test_skip_mode_gives_up_after_too_many_bad_batches_in_a_row(tmp_path: Path) -> None:
    config = tiny("steps=8", "on_nonfinite=skip", "max_skipped=3")
    with pytest.raises(RunError, match="3 batches in a row had a non-finite loss"):
        train(config, tmp_path / "run", task=NaNAt({2, 3, 4, 5}), progress=False)


def test_a_started_run_needs_resume(tmp_path: Path) -> None:
    config = tiny("steps=2")
    train(config, tmp_path / "run", until_step=1, progress=False)
    with pytest.raises(UsageError, match="already holds a training run; pass --resume"):
        train(config, tmp_path / "run", progress=False)
    with pytest.raises(UsageError, match=r"different configuration \(optim\.lr: 0\.05 -> 0\.1"):
        train(tiny("steps=2", "optim.lr=0.1"), tmp_path / "run", resume=True, progress=False)


def test_channels_last_bf16_and_grad_clip_run(tmp_path: Path) -> None:
    config = tiny("steps=2", "model.channels_last=true", "precision=bf16",
                  "optim.grad_clip=0.5", "optim.name=adamw", "optim.lr=0.001")
    result = train(config, tmp_path / "run", progress=False)
    assert result.finished
    assert all(torch.isfinite(v).all() for v in weights(result.weights).values())  # type: ignore[arg-type]


def test_llr_task_trains_through_the_loop_and_logs_gamma(tmp_path: Path) -> None:
    config = tiny("steps=2", "log_every=1", "task.name=llr",
                  "task.options={eps: 0.1, steps: 1, warmup_steps: 0}")
    train(config, tmp_path / "run", progress=False)
    records = [r for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["gamma"] >= 0 and "grad_term" in r for r in records)


def test_init_weights_strict_and_partial(tmp_path: Path) -> None:
    from llrnet.models import create_model, save_weights
    from llrnet.train.build import build_model
    from llrnet.train.config import ModelConfig

    source = create_model("digits_wrn", width=1)
    save_weights(source, tmp_path / "w.safetensors")
    path = str(tmp_path / "w.safetensors")
    same = build_model(ModelConfig(kwargs={"width": 1}, init_weights=path))
    assert_identical(same.state_dict(), source.state_dict())
    # A different head (3 classes): strict loading refuses, partial loading keeps the trunk.
    three = ModelConfig(kwargs={"width": 1, "num_classes": 3}, init_weights=path)

    with pytest.raises(WeightsError, match="wrong shape"):
        build_model(three)
    partial = build_model(ModelConfig(kwargs=three.kwargs, init_weights=three.init_weights,
                                      init_strict=False)).state_dict()
    trunk = [k for k in partial if partial[k].shape == source.state_dict()[k].shape]
    assert len(trunk) == len(partial) - 2  # all but the head's weight and bias
    for name in trunk:
        assert torch.equal(partial[name], source.state_dict()[name]), name
