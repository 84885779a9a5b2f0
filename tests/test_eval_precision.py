"""``evaluate(precision=...)``: bf16 search, fp32 judgement, the resume guard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from llrnet.attacks import SPSA, Attack, Chain, Identity, RandomSpatial
from llrnet.attacks.base import searches_in_bf16
from llrnet.attacks.parts import ImageRng
from llrnet.cli import main
from llrnet.core.errors import UsageError
from llrnet.eval import Suite, SuiteEntry, evaluate, get_suite
from llrnet.models import precision as precision_module
from llrnet.models.precision import FastCopy


def split_model() -> nn.Module:
    """Logit 0 = 1.003 x0 - x1, logit 1 = 0.001.

    On x = (1, 1) fp32 gives logits (0.003, 0.001): class 0. In bf16 the weight
    1.003 rounds to 1.0, so logit 0 is exactly 0 and class 1 wins. On x = (0, 0)
    both say class 1 (0 < 0.001).
    """
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.003, -1.0], [0.0, 0.0]]))
        model[1].bias.copy_(torch.tensor([0.0, 0.001]))
    return model


def split_data() -> tuple[Tensor, Tensor]:
    images = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).reshape(2, 1, 1, 2)
    return images, torch.tensor([0, 1])


def test_split_model_really_disagrees_in_bf16() -> None:
    x, _ = split_data()
    with torch.no_grad():
        assert split_model()(x).argmax(1).tolist() == [0, 1]
        assert split_model().bfloat16()(x.bfloat16()).argmax(1).tolist() == [1, 1]


def test_results_are_the_fp32_decisions_and_disagreements_are_counted(tmp_path: Path) -> None:
    results = evaluate(split_model(), [Identity()], split_data(), out_dir=tmp_path,
                       progress=False, precision="bf16")
    record = results["clean"]
    assert record["search_precision"] == "bf16"
    assert record["accuracy@100"] == 1.0  # the fp32 model: both images right
    assert record["error_indices"] == []
    assert record["precision_disagreements"] == 1  # image 0: bf16 says class 1
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["precision"] == "bf16"
    assert saved["attacks"]["clean"]["precision_disagreements"] == 1


def test_fp32_runs_record_fp32_and_no_disagreement_count(tmp_path: Path) -> None:
    record = evaluate(split_model(), [Identity()], split_data(), out_dir=tmp_path,
                      progress=False)["clean"]
    assert record["search_precision"] == "fp32"
    assert record["precision_disagreements"] is None
    assert record["accuracy@100"] == 1.0
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    assert "precision" not in manifest  # the manifest of older versions: they still resume


class Recorder(Attack):
    """Returns x unchanged; records the model it was given (unwrapped from the counter)."""

    kind = "black_box"

    def __init__(self, name: str, bf16: bool) -> None:
        super().__init__()
        self.name = name
        self.bf16_search = bf16
        self.seen: list[tuple[type, torch.dtype, bool]] = []

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng,
             pool: object) -> Tensor:
        inner = model.model
        weight = next(inner.parameters())
        self.seen.append((type(inner), weight.dtype, getattr(inner, "channels_last", False)))
        return x


def test_each_attack_searches_with_the_model_its_policy_allows(tmp_path: Path) -> None:
    fast, slow = Recorder("fast", True), Recorder("slow", False)
    results = evaluate(split_model(), [fast, slow], split_data(), out_dir=tmp_path / "bf16",
                       progress=False, precision="bf16")
    assert fast.seen == [(FastCopy, torch.bfloat16, True)]
    # An fp32 search of a bf16 run: the fp32 channels_last copy (same precision).
    assert slow.seen == [(FastCopy, torch.float32, True)]
    # An fp32 run searches with the model itself, whatever the policy.
    fast.seen.clear()
    slow.seen.clear()
    evaluate(split_model(), [fast, slow], split_data(), out_dir=tmp_path / "fp32",
             progress=False)
    assert fast.seen == slow.seen == [(nn.Sequential, torch.float32, False)]
    assert results["fast"]["search_precision"] == "bf16"
    assert results["slow"]["search_precision"] == "fp32"
    # Both are judged in fp32; the bf16 copy's disagreement is counted for both.
    assert results["slow"]["accuracy@100"] == 1.0
    assert results["slow"]["precision_disagreements"] == 1


def test_policy_of_the_built_in_attacks_and_chains() -> None:
    suite = get_suite("bird_or_bicycle")
    policy = {entry.name: searches_in_bf16(entry.attack) for entry in suite.entries}
    assert policy == {"clean": True, "spatial_grid": True, "common_corruptions": True,
                      "spsa_with_random_spatial": False, "boundary_with_random_spatial": True}
    assert not searches_in_bf16(lambda model, x, y: x)  # undeclared: fp32
    spsa = SPSA(eps=0.1, steps=1, samples=2)
    spsa.bf16_search = True  # an explicit override, recorded in the configuration
    assert searches_in_bf16(Chain(RandomSpatial(), spsa))


def test_resume_under_another_precision_is_refused(tmp_path: Path) -> None:
    first = evaluate(split_model(), [Identity()], split_data(), out_dir=tmp_path,
                     progress=False, precision="bf16")
    with pytest.raises(UsageError, match=r"searched in bf16.*--precision bf16"):
        evaluate(split_model(), [Identity()], split_data(), out_dir=tmp_path, progress=False)
    # The same precision resumes, with the same numbers.
    again = evaluate(split_model(), [Identity()], split_data(), out_dir=tmp_path,
                     progress=False, precision="bf16")
    assert again["clean"]["precision_disagreements"] == first["clean"]["precision_disagreements"]
    other = tmp_path / "fp32"
    evaluate(split_model(), [Identity()], split_data(), out_dir=other, progress=False)
    with pytest.raises(UsageError, match=r"searched in fp32.*--precision fp32"):
        evaluate(split_model(), [Identity()], split_data(), out_dir=other, progress=False,
                 precision="bf16")


def test_auto_follows_the_probe_and_is_recorded(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_module, "has_bf16_hardware", lambda device: False)
    record = evaluate(split_model(), [Identity()], split_data(), out_dir=tmp_path / "a",
                      progress=False, precision="auto")["clean"]
    assert record["search_precision"] == "fp32"
    monkeypatch.setattr(precision_module, "has_bf16_hardware", lambda device: True)
    record = evaluate(split_model(), [Identity()], split_data(), out_dir=tmp_path / "b",
                      progress=False, precision="auto")["clean"]
    assert record["search_precision"] == "bf16"
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["precision_requested"] == "auto" and config["precision"] == "bf16"


def test_a_numpy_model_fn_refuses_bf16_and_auto_keeps_fp32(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    def model_fn(images: np.ndarray) -> np.ndarray:
        score = images.reshape(len(images), -1).mean(1)
        return np.stack([score, -score], 1).astype(np.float32)

    data = (torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(UsageError, match=r"needs an nn\.Module"):
        evaluate(model_fn, [Identity()], data, out_dir=tmp_path / "a", progress=False,
                 precision="bf16")
    monkeypatch.setattr(precision_module, "has_bf16_hardware", lambda device: True)
    record = evaluate(model_fn, [Identity()], data, out_dir=tmp_path / "b", progress=False,
                      precision="auto")["clean"]
    assert record["search_precision"] == "fp32"


def test_a_resumed_bf16_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    """Chunks are fixed slices: a bf16 run resumed after a partial one gives the same result."""
    torch.manual_seed(0)
    x = torch.rand(12, 1, 4, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        y = model(x).argmax(1)
    suite = Suite("s", (SuiteEntry("spatial", RandomSpatial(limits=(1.0, 1.0, 10.0), border=1)),),
                  batch_size=4)
    whole = evaluate(model, suite, (x, y), out_dir=tmp_path / "whole", progress=False,
                     precision="bf16")
    part = tmp_path / "part"
    evaluate(model, suite, (x, y), out_dir=part, progress=False, precision="bf16")
    chunk = part / "state" / "spatial" / "chunk_00001.safetensors"
    chunk.unlink()  # as if killed before this chunk was written
    resumed = evaluate(model, suite, (x, y), out_dir=part, progress=False, precision="bf16")
    for key in ("accuracy@100", "error_indices", "precision_disagreements"):
        assert resumed["spatial"][key] == whole["spatial"][key]


def test_cli_eval_precision_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["eval", "--suite", "linf", "--model", "digits_wrn", "--out", str(out),
                 "--max-images", "4", "--attacks", "clean", "--precision", "bf16",
                 "--no-progress"]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["attacks"]["clean"]["search_precision"] == "bf16"
    assert main(["eval", "--suite", "linf", "--model", "digits_wrn", "--out", str(out),
                 "--max-images", "4", "--attacks", "clean", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "searched in bf16" in err[0]
