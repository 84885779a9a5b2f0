"""``export_hf`` / ``llrnet export-hf``: the folder's three files, the card's provenance
(credentials redacted) and results, failures that leave nothing, and the round trip
export -> the Hub on 127.0.0.1 (tests/hf_helpers.py) -> ``load_weights("hf-hub:...")``."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from hf_helpers import FakeHub, serving, use_hub
from llrnet.cli import main
from llrnet.core.errors import InputError, UsageError, WeightsError
from llrnet.hf import export_hf
from llrnet.models import create_model, load_weights, save_weights
from llrnet.models.wide_resnet import CIFAR10_MEAN, CIFAR10_STD

pytestmark = pytest.mark.usefixtures("one_thread")

SECRET_URL = "https://alice:hunter2@models.example.com/m/1.tar.gz?token=abc123&v=2#frag"
IMPORT_RECORD = {
    "source": {"module": {"path": SECRET_URL, "sha256": "ab" * 32, "sha256_checked": True,
                          "sha256_of": "archive"}},
    "recipe": "converted from TF-Hub by llrnet import-hub",
    "checks": ["every variable mapped", "sha256 matched the published/expected value"],
    "import": {"verification": {"status": "skipped", "reason": "no TensorFlow"}},
}


def _front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def _digits(path: Path) -> Path:
    model = create_model("digits_wrn")
    save_weights(model, path, {"source": "llrnet train, 3 steps",
                               "recipe": {"data": {"name": "digits"}, "steps": 3},
                               "metrics": {"loss": 0.25, "accuracy": 0.5}})
    return path


def _bird(path: Path, record: dict[str, Any] | None = None) -> Path:
    model = create_model("llr_pretrain_adv_tiny")
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.copy_(torch.tensor([0.0, 0.75]))
    save_weights(model, path, record or {"source": "oracle"})
    return path


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serving() as server:
        use_hub(monkeypatch, server, tmp_path / "hf")
        yield server


def test_folder_has_the_weights_as_they_are_a_config_and_a_card(tmp_path: Path) -> None:
    weights = _digits(tmp_path / "digits.safetensors")
    exported = export_hf(weights, tmp_path / "out", license="apache-2.0", repo_id="me/digits")
    out = tmp_path / "out"
    assert exported.folder == out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                      "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == weights.read_bytes()
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "digits_wrn"
    assert config["model_args"] == load_weights(weights).llrnet_kwargs
    assert config["num_classes"] == 2
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [1, 28, 28]
    assert cfg["input_range"] == [0.0, 1.0]
    assert (cfg["mean"], cfg["std"]) == ([0.5], [0.5])
    assert (cfg["crop_pct"], cfg["normalization_inside_model"]) == (1.0, True)
    assert config["llrnet_version"]
    card = (out / "README.md").read_text()
    matter = _front_matter(card)
    assert matter["library_name"] == "llrnet"
    assert matter["license"] == "apache-2.0"
    assert matter["pipeline_tag"] == "image-classification"
    assert matter["datasets"] == ["digits"]
    assert "llrnet" in matter["tags"] and "digits_wrn" in matter["tags"]
    assert "model-index" not in matter
    assert 'load_weights("hf-hub:me/digits")' in card
    assert "source: llrnet train, 3 steps" in card
    assert "the model subtracts mean and divides by std itself" in card
    assert "llrnet predict" not in card  # a softmax digits model: predict scores bird heads
    assert "training metrics: accuracy 0.5, loss 0.25" in card


@pytest.mark.parametrize(("architecture", "size", "mean", "std", "crop"), [
    ("llr_pretrain_adv_tiny", [3, 224, 224], [0.5] * 3, [0.5] * 3, 0.875),
    ("resnet_v2_tiny_imagenet", [3, 224, 224], [0.5] * 3, [0.5] * 3, 1.0),
    ("wide_resnet", [3, 32, 32], list(CIFAR10_MEAN), list(CIFAR10_STD), 1.0),
])
def test_pretrained_cfg_says_what_the_model_does_itself(
        tmp_path: Path, architecture: str, size: list[int], mean: list[float],
        std: list[float], crop: float) -> None:
    save_weights(create_model(architecture), tmp_path / "w.safetensors")
    export_hf(tmp_path / "w.safetensors", tmp_path / "out")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())["pretrained_cfg"]
    assert cfg["input_size"] == size
    assert cfg["mean"] == pytest.approx(mean) and cfg["std"] == pytest.approx(std)
    assert cfg["crop_pct"] == crop
    assert cfg["crop_mode"] == ("center" if crop < 1 else "none")


def test_card_provenance_redacts_credentials_and_shows_the_proof(tmp_path: Path) -> None:
    weights = _bird(tmp_path / "bird.safetensors", IMPORT_RECORD)
    with pytest.warns(UserWarning, match="URL with credentials"):
        export_hf(weights, tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "hunter2" not in card and "abc123" not in card and "alice" not in card
    assert "`https://REDACTED@models.example.com/m/1.tar.gz?token=REDACTED" in card
    assert f"archive sha256: `{'ab' * 32}` (matched the published value)" in card
    assert "  - every variable mapped" in card
    assert "TensorFlow verification: skipped: no TensorFlow" in card
    assert "llrnet predict image.jpg --weights hf-hub:OWNER/REPO" in card
    assert ("the model crops the central 87.5%, resizes it back (TF1 bilinear) and subtracts "
            "mean and divides by std itself") in card
    assert "bird-or-bicycle" in _front_matter(card)["tags"]
    assert _front_matter(card)["license"] == "unknown"
    # the weights file itself is published as it is (its record and hash are its identity)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == weights.read_bytes()


def _evaluate(weights: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main(["eval", "--suite", "digits", "--weights", str(weights), "--out", str(out),
                 "--max-images", "4", "--attacks", "clean", "--no-progress"]) == 0
    capsys.readouterr()
    return out / "results.json"


def test_results_give_the_model_index_and_the_table(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = _digits(tmp_path / "digits.safetensors")
    results = _evaluate(weights, tmp_path / "eval", capsys)
    clean = json.loads(results.read_text())["attacks"]["clean"]
    export_hf(weights, tmp_path / "out", results=results, repo_id="me/digits")
    card = (tmp_path / "out" / "README.md").read_text()
    index = _front_matter(card)["model-index"]
    assert index[0]["name"] == "digits"
    result = index[0]["results"][0]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"]["type"] == "digits"
    assert result["metrics"] == [{"name": "clean accuracy at 80% coverage", "type": "accuracy",
                                  "value": round(100 * clean["accuracy@80"], 2),
                                  "verified": False}]
    row = (f"| clean | {100 * clean['accuracy@80']:.1f} | {100 * clean['accuracy@100']:.1f} "
           f"| {clean['images']} |")
    assert row in card

    other = _digits(tmp_path / "other.safetensors")  # another initialization
    with pytest.raises(InputError, match="scored another model"):
        export_hf(other, tmp_path / "out2", results=results)
    assert not (tmp_path / "out2").exists()


def test_failures_leave_nothing(tmp_path: Path) -> None:
    weights = _digits(tmp_path / "digits.safetensors")
    tampered = bytearray(weights.read_bytes())
    tampered[-1] ^= 1
    (tmp_path / "tampered.safetensors").write_bytes(bytes(tampered))
    (tmp_path / "not_results.json").write_text('{"suite": "digits"}')
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine\n")
    out = tmp_path / "out"
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"weights": tmp_path / "tampered.safetensors"}, WeightsError, "does not match"),
        ({"weights": tmp_path / "missing.safetensors"}, WeightsError, "not found"),
        ({"results": tmp_path / "not_results.json"}, InputError, "not an llrnet eval"),
        ({"results": tmp_path / "missing.json"}, InputError, "results file not found"),
        ({"license": "apache 2.0"}, UsageError, "one identifier"),
        ({"repo_id": "no-owner"}, UsageError, "hf-hub:owner/repo"),
    ]
    for change, error, message in cases:
        arguments: dict[str, Any] = {"weights": weights, **change}
        with pytest.raises(error, match=message):
            export_hf(arguments.pop("weights"), out, **arguments)
        assert not out.exists()
    with pytest.raises(InputError, match="is not empty"):
        export_hf(weights, tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    export_hf(weights, tmp_path / "empty")  # an empty folder is fine
    assert len(list((tmp_path / "empty").iterdir())) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_cli_export_hf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = _digits(tmp_path / "digits.safetensors")
    assert main(["export-hf", str(weights), str(tmp_path / "out"), "--license", "mit",
                 "--repo-id", "me/digits"]) == 0
    captured = capsys.readouterr()
    assert "hf upload me/digits" in captured.out and captured.err == ""
    assert _front_matter((tmp_path / "out" / "README.md").read_text())["license"] == "mit"
    tampered = bytearray(weights.read_bytes())
    tampered[-1] ^= 1
    (tmp_path / "bad.safetensors").write_bytes(bytes(tampered))
    for argv in (["export-hf", str(tmp_path / "bad.safetensors"), str(tmp_path / "o1")],
                 ["export-hf", str(weights), str(tmp_path / "out")],
                 ["export-hf", str(weights), str(tmp_path / "o2"), "--results",
                  str(weights)]):
        assert main(argv) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("llrnet export-hf: error: "), errors
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_round_trip_through_the_hub_is_bit_identical(
        hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = _bird(tmp_path / "bird.safetensors")
    local = load_weights(weights)
    with torch.no_grad():  # a model whose outputs depend on the input, not just its bias
        torch.manual_seed(1)
        for tensor in local.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.01 * torch.randn_like(tensor))
    save_weights(local, weights, {"source": "oracle"})
    local = load_weights(weights)
    export_hf(weights, tmp_path / "out", repo_id="me/bird")
    commit = hub.upload_folder("me/bird", tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        remote = load_weights("hf-hub:me/bird")
    assert remote.llrnet_metadata["hub"]["commit"] == commit
    assert local.state_dict().keys() == remote.state_dict().keys()
    for key, tensor in local.state_dict().items():
        theirs = remote.state_dict()[key]
        assert tensor.dtype == theirs.dtype and torch.equal(tensor, theirs), key
    x = torch.rand(4, 3, 64, 64)
    assert torch.equal(local(x), remote(x))
    assert torch.equal(create_model("llr_pretrain_adv_tiny", pretrained="hf-hub:me/bird")(x),
                       local(x))
