"""Checkpoints: round trip, checksum fallback to the previous good one, RNG states,
pruning; and the EMA and optimizer pieces they hold."""

from __future__ import annotations

import hashlib
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from llrnet.core.errors import pickle_refusal
from llrnet.train.checkpoint import (
    checkpoint_mismatch,
    has_checkpoints,
    latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from llrnet.train.ema import ModelEMA
from llrnet.train.optim import lr_factor, parameter_groups


def state(value: float) -> dict[str, object]:
    return {"step": int(value), "w": torch.full((3, 2), value), "nested": {"k": [1, 2.5, None]}}


def test_round_trip_and_newest_wins(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None and not has_checkpoints(tmp_path)
    save_checkpoint(tmp_path, 2, state(2.0))
    save_checkpoint(tmp_path, 4, state(4.0))
    found = latest_checkpoint(tmp_path)
    assert found is not None
    step, loaded = found
    assert step == 4 and torch.equal(loaded["w"], torch.full((3, 2), 4.0))
    assert loaded["nested"] == {"k": [1, 2.5, None]}


def test_only_the_newest_are_kept(tmp_path: Path) -> None:
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, state(step), keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000004.json", "step-00000004.pt", "step-00000005.json", "step-00000005.pt"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_manifest", "garbage_manifest"])
def test_damaged_latest_falls_back_to_previous_with_warning(tmp_path: Path, damage: str) -> None:
    save_checkpoint(tmp_path, 2, state(2.0))
    save_checkpoint(tmp_path, 4, state(4.0))
    latest = tmp_path / "step-00000004.pt"
    data = latest.read_bytes()
    if damage == "truncate":
        latest.write_bytes(data[: len(data) // 2])
        reason = "truncated"
    elif damage == "flip":
        latest.write_bytes(data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:])
        reason = "sha256 does not match"
    elif damage == "no_manifest":
        (tmp_path / "step-00000004.json").unlink()
        reason = "no manifest"
    else:
        (tmp_path / "step-00000004.json").write_text("{not json")
        reason = "manifest is unreadable"
    with pytest.warns(RuntimeWarning, match=f"step-00000004.pt is unusable: .*{reason}"):
        found = latest_checkpoint(tmp_path)
    assert found is not None and found[0] == 2
    assert torch.equal(found[1]["w"], torch.full((3, 2), 2.0))


def test_all_damaged_means_no_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, state(1.0))
    (tmp_path / "step-00000001.pt").write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="truncated"):
        assert latest_checkpoint(tmp_path) is None


def test_checkpoints_are_never_unpickled(tmp_path: Path) -> None:
    # A pickle of an arbitrary global object with a valid manifest: weights_only
    # loading refuses it, so it is reported and skipped, never executed.
    payload = pickle.dumps({"x": random.Random}, protocol=2)
    torch_file = tmp_path / "step-00000002.pt"
    torch_file.write_bytes(payload)
    (tmp_path / "step-00000002.json").write_text(json.dumps(
        {"step": 2, "file": torch_file.name, "bytes": len(payload),
         "sha256": hashlib.sha256(payload).hexdigest()}))
    with pytest.warns(RuntimeWarning, match="step-00000002.pt cannot be read") as caught:
        assert latest_checkpoint(tmp_path) is None
    # The refusal names what the file holds and never repeats torch's advice to unpickle it.
    message = str(caught[0].message)
    assert "weights_only" not in message and "trust" not in message
    assert "holds objects other than tensors and plain values" in message
    assert "random.Random" in message and "never unpickles" in message


class _Runs:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, ("raise SystemExit('ran')",))


def test_a_refused_pickle_is_one_line_without_torchs_advice() -> None:
    import io

    for payload in (pickle.dumps(_Runs(), protocol=2), _saved({"x": _Runs()})):
        with pytest.raises(pickle.UnpicklingError) as refused:
            torch.load(io.BytesIO(payload), weights_only=True)
        assert "weights_only" in str(refused.value)  # torch's text carries the advice
        line = pickle_refusal(refused.value)
        assert "\n" not in line and "weights_only" not in line, line
        assert line.startswith("it holds objects other than tensors and plain values ("), line
    assert pickle_refusal(ValueError("first\nsecond")) == "first"


def _saved(value: object) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def test_a_checkpoint_of_another_shape_is_described_in_words() -> None:
    mine = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    other = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 1), nn.Linear(1, 1))
    expected = {"model": mine.state_dict(), "optimizer": {}, "ema": None}
    assert checkpoint_mismatch(expected, {"model": other.state_dict(), "optimizer": {},
                                          "ema": None}) == (
        "model: unexpected tensor(s) '2.weight', '2.bias'; model: '0.weight' has shape "
        "[4, 2] in the checkpoint, [3, 2] in this run")
    fewer = {k: v for k, v in mine.state_dict().items() if k.startswith("0.")}
    assert checkpoint_mismatch(expected, {"model": fewer, "optimizer": {}, "ema": None}) == (
        "model: missing tensor(s) '1.weight', '1.bias'")
    assert checkpoint_mismatch(expected, {"optimizer": {}}) == "it has no 'model', 'ema' entries"
    assert checkpoint_mismatch(expected, {"optimizer": {}, "ema": None}) == (
        "it has no 'model' entry")
    assert checkpoint_mismatch(expected, [1]) == "it holds a list, not a mapping of states"
    same = {"model": mine.state_dict(), "optimizer": {}, "ema": None}
    assert checkpoint_mismatch(expected, same, KeyError("rng")) == "'rng'"


def test_rng_states_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path, 1, {"rng": rng_state()})
    expected = (torch.rand(4), np.random.rand(4), np.random.normal(), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    found = latest_checkpoint(tmp_path)
    assert found is not None
    set_rng_state(found[1]["rng"])
    again = (torch.rand(4), np.random.rand(4), np.random.normal(), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def test_ema_follows_the_formula() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = ModelEMA(model, decay=0.75)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(4.0)
        model[1].running_mean.fill_(7.0)
    ema.update(model)
    assert torch.allclose(ema.module[0].weight, 0.75 * start + 0.25 * (start + 4.0))
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 7.0))  # buffers copied
    assert not any(p.requires_grad for p in ema.module.parameters())
    restored = ModelEMA(model, decay=0.75)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.module[0].weight, ema.module[0].weight)


def test_weight_decay_only_on_conv_and_linear_kernels() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2))
    decayed, plain = parameter_groups(model, 2e-4)
    assert decayed["weight_decay"] == 2e-4 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[3].weight)}  # type: ignore[attr-defined]
    assert {id(p) for p in plain["params"]} == {  # type: ignore[attr-defined]
        id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[3].bias)}


def test_learning_rate_schedules() -> None:
    step = [lr_factor(s, total_steps=100, schedule="step", milestones=(80, 88, 96))
            for s in (0, 79, 80, 87, 88, 96, 99)]
    assert step == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.001, 0.001])
    warm = [lr_factor(s, total_steps=10, schedule="constant", warmup_steps=4) for s in range(6)]
    assert warm == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])
    cosine = [lr_factor(s, total_steps=12, schedule="cosine", warmup_steps=2, min_ratio=0.1)
              for s in (2, 7, 11)]
    # progress (s - 2) / 10: 0 -> 1, 0.5 -> 0.55, 0.9 -> 0.1 + 0.9 * 0.5 * (1 + cos(0.9 pi))
    assert cosine == pytest.approx([1.0, 0.55, 0.1 + 0.45 * (1 + np.cos(0.9 * np.pi))])
