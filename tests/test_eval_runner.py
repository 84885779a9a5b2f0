"""The evaluation runner: results, resume, determinism, model_fn path, report files."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from llrnet.attacks import PGD, Identity
from llrnet.core.errors import UsageError
from llrnet.eval import (
    EvalOptions,
    EvaluationWarning,
    Suite,
    SuiteEntry,
    accuracy_at_coverage,
    evaluate,
    format_table,
)
from llrnet.models.heads import SIGMOID_BIRD_HEAD, ChallengeView
from llrnet.models.weights import tensors_sha256


def tiny_data(n: int = 24) -> tuple[Tensor, Tensor]:
    """[n, 1, 8, 8] images in [0, 1]; label 1 iff the left half is brighter."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 8, 8, generator=generator)
    labels = (images[..., :4].mean(dim=(1, 2, 3)) > images[..., 4:].mean(dim=(1, 2, 3))).long()
    return images, labels


def tiny_model() -> nn.Module:
    """A linear oracle: logit 1 - logit 0 = 20 x (left mean - right mean)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    weight = torch.zeros(2, 64)
    left = torch.zeros(8, 8)
    left[:, :4] = 1.0
    weight[1] = (left.flatten() - (1 - left.flatten())) * 20 / 32
    with torch.no_grad():
        model[1].weight.copy_(weight)
        model[1].bias.zero_()
    return model


class Flaky:
    """Delegates to an attack; raises on call number ``fail_at`` (simulates a kill)."""

    def __init__(self, attack: Any, fail_at: int | None = None) -> None:
        self.name = attack.name
        self.inner = attack
        self._fail_at = fail_at
        self._calls = 0

    @property
    def last_stats(self) -> dict[str, float]:
        return self.inner.last_stats

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
        self._calls += 1
        if self._fail_at is not None and self._calls == self._fail_at:
            raise RuntimeError("killed")
        return self.inner(model, x, y, **kwargs)


def suite(fail_at: int | None = None) -> tuple[Suite, Flaky]:
    pgd = Flaky(PGD(0.05, 3, 0.02), fail_at)
    entries = (SuiteEntry("clean", Identity(), kind="clean"),
               SuiteEntry("pgd", pgd, kind="white_box"))
    return Suite("test", entries, batch_size=4), pgd


def without_times(path: Path) -> dict[str, Any]:
    results = json.loads(path.read_text())
    for record in results["attacks"].values():
        record.pop("wall_time")
    return results


def test_results_are_the_metric_on_the_attacked_images(tmp_path: Path) -> None:
    images, labels = tiny_data()
    model = tiny_model()
    results = evaluate(model, suite()[0], (images, labels), out_dir=tmp_path, progress=False)
    clean = model(images).detach()
    assert results["clean"]["accuracy@80"] == accuracy_at_coverage(clean, labels, 0.8)
    assert results["clean"]["accuracy@100"] == 1.0  # the oracle is always right
    assert results["clean"]["model_evaluations"] == 0
    assert results["pgd"]["model_evaluations"] == 3 * 24
    assert results["pgd"]["accuracy@100"] < 1.0
    wrong = (model(images).argmax(1) != labels).nonzero().flatten().tolist()
    assert results["clean"]["error_indices"] == wrong == []
    assert set(results["pgd"]["error_indices@80"]) <= set(results["pgd"]["error_indices"])
    for name in ("results.json", "config.json", "risk_coverage.png", "examples.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["order"] == ["clean", "pgd"]
    for record in saved["attacks"].values():
        assert {"accuracy@80", "accuracy@100", "images", "error_indices", "wall_time",
                "model_evaluations", "coverage_curve"} <= set(record)
        assert record["images"] == 24
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["suite"]["attacks"][1]["attack"]["inner"]["ball"]["eps"] == "0.05"
    table = format_table(results)
    assert "pgd" in table.splitlines()[2 + 1] and "acc@80%" in table


def test_kill_and_resume_gives_identical_results(tmp_path: Path) -> None:
    images, labels = tiny_data()
    killed, _ = suite(fail_at=3)
    with pytest.raises(RuntimeError, match="killed"):
        evaluate(tiny_model(), killed, (images, labels), out_dir=tmp_path / "a", progress=False)
    assert len(list((tmp_path / "a/state/pgd").glob("chunk_*"))) == 2
    resumed, attack = suite()
    evaluate(tiny_model(), resumed, (images, labels), out_dir=tmp_path / "a", progress=False)
    assert attack._calls == 6 - 2  # finished chunks were skipped
    evaluate(tiny_model(), suite()[0], (images, labels), out_dir=tmp_path / "b", progress=False)
    assert without_times(tmp_path / "a/results.json") == without_times(tmp_path / "b/results.json")

    # A finished run started again does no work and rewrites the same file.
    before = (tmp_path / "a/results.json").read_bytes()
    again, attack = suite()
    evaluate(tiny_model(), again, (images, labels), out_dir=tmp_path / "a", progress=False)
    assert attack._calls == 0
    assert (tmp_path / "a/results.json").read_bytes() == before


def test_resume_with_other_arguments_is_an_error(tmp_path: Path) -> None:
    data = tiny_data()
    evaluate(tiny_model(), suite()[0], data, out_dir=tmp_path, progress=False)
    with pytest.raises(UsageError, match=r"different arguments.*seed: saved 0 != now 1"):
        evaluate(tiny_model(), suite()[0], data, out_dir=tmp_path, seed=1, progress=False)
    other = tiny_model()
    with torch.no_grad():
        other[1].bias.add_(1.0)
    with pytest.raises(UsageError, match=r"different arguments.*model"):
        evaluate(other, suite()[0], data, out_dir=tmp_path, progress=False)


def test_results_do_not_depend_on_batch_size(tmp_path: Path) -> None:
    data = tiny_data()
    small = evaluate(tiny_model(), suite()[0], data, out_dir=tmp_path / "a", batch_size=3,
                     progress=False)
    large = evaluate(tiny_model(), suite()[0], data, out_dir=tmp_path / "b", batch_size=24,
                     progress=False)
    assert small["pgd"]["accuracy@80"] == large["pgd"]["accuracy@80"]
    assert small["pgd"]["error_indices"] == large["pgd"]["error_indices"]
    curve_a = np.array(small["pgd"]["coverage_curve"]["risk"])
    np.testing.assert_allclose(curve_a, large["pgd"]["coverage_curve"]["risk"])


def test_seed_changes_random_starts(tmp_path: Path) -> None:
    data = tiny_data()
    a = evaluate(tiny_model(), suite()[0], data, out_dir=tmp_path / "a", progress=False)
    b = evaluate(tiny_model(), suite()[0], data, out_dir=tmp_path / "b", seed=5, progress=False)
    logits_a = json.dumps(a["pgd"]["coverage_curve"])
    assert a["clean"] == {**b["clean"], "wall_time": a["clean"]["wall_time"]}
    assert logits_a != json.dumps(b["pgd"]["coverage_curve"]) or \
        a["pgd"]["error_indices"] != b["pgd"]["error_indices"]


def test_model_fn_matches_module(tmp_path: Path) -> None:
    images, labels = tiny_data()
    model = tiny_model()

    def model_fn(batch: np.ndarray) -> np.ndarray:
        assert batch.shape[1:] == (8, 8, 1)  # NHWC
        with torch.no_grad():
            return model(torch.from_numpy(batch).permute(0, 3, 1, 2)).numpy()

    clean_only = Suite("clean", (SuiteEntry("clean", Identity(), kind="clean"),), batch_size=5)
    from_fn = evaluate(model_fn, clean_only, (images, labels), out_dir=tmp_path / "fn",
                       progress=False)
    from_module = evaluate(model, clean_only, (images, labels), out_dir=tmp_path / "m",
                           progress=False)
    for key in ("accuracy@80", "accuracy@100", "error_indices", "coverage_curve"):
        assert from_fn["clean"][key] == from_module["clean"][key]


def test_sanity_warnings(tmp_path: Path) -> None:
    data = tiny_data()
    clean_only = Suite("clean", (SuiteEntry("clean", Identity(), kind="clean"),))
    softmax = nn.Sequential(tiny_model(), nn.Softmax(dim=1))
    with pytest.warns(EvaluationWarning, match="look like probabilities"):
        evaluate(softmax, clean_only, data, out_dir=tmp_path / "p", progress=False)

    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_model()

        def forward(self, x: Tensor) -> Tensor:
            return self.inner(x) + 0.1 * torch.randn(len(x), 2)

    with pytest.warns(EvaluationWarning, match="randomized"):
        evaluate(Noisy(), clean_only, data, out_dir=tmp_path / "r", progress=False)
    results = json.loads((tmp_path / "r/results.json").read_text())
    assert any("randomized" in w for w in results["warnings"])

    with warnings.catch_warnings():
        warnings.simplefilter("error", EvaluationWarning)
        evaluate(tiny_model(), clean_only, data, out_dir=tmp_path / "ok", progress=False)


def test_model_mode_is_restored(tmp_path: Path) -> None:
    model = tiny_model().train()
    evaluate(model, suite()[0], tiny_data(), out_dir=tmp_path, progress=False)
    assert model.training


def test_black_box_beating_other_attacks_is_flagged() -> None:
    from llrnet.eval.checks import check_attack_strengths

    kinds = {"clean": "clean", "spatial_grid": "spatial", "pgd": "white_box", "spsa": "black_box"}
    with pytest.warns(EvaluationWarning) as caught:
        found = check_attack_strengths(
            kinds, {"clean": 1.0, "spatial_grid": 0.9, "pgd": 0.8, "spsa": 0.1})
    assert len(found) == len(caught) == 2
    assert "gradient masking" in found[1] and "undefended" in found[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvaluationWarning)
        assert check_attack_strengths(kinds, {"spatial_grid": 0.9, "pgd": 0.5, "spsa": 0.45}) == []


def test_attack_subsets_share_an_output_folder(tmp_path: Path) -> None:
    data = tiny_data()
    full, _ = suite()
    first = evaluate(tiny_model(), full, data, out_dir=tmp_path, attacks=["clean"],
                     progress=False)
    assert list(first) == ["clean"]
    both, attack = suite()
    results = evaluate(tiny_model(), both, data, out_dir=tmp_path, progress=False)
    assert list(results) == ["clean", "pgd"] and attack._calls == 6
    assert results["clean"] == first["clean"]


class _BirdHead(nn.Module):
    """A bird-or-bicycle style model: raw head whose column 0 is meaningless,
    declaring a sigmoid bird head on column 1 (bird logit = oracle margin)."""

    output_head = SIGMOID_BIRD_HEAD

    def __init__(self) -> None:
        super().__init__()
        self.oracle = tiny_model()

    def forward(self, x: Tensor) -> Tensor:
        margin = self.oracle(x)[:, 1] - self.oracle(x)[:, 0]
        return torch.stack([torch.full_like(margin, 1e3), margin], dim=1)


def test_bird_or_bicycle_models_are_scored_through_their_challenge_view(tmp_path: Path) -> None:
    images, labels = tiny_data()
    entries = (SuiteEntry("clean", Identity(), kind="clean"),)
    results = evaluate(_BirdHead(), Suite("clean", entries, batch_size=8), (images, labels),
                       out_dir=tmp_path, progress=False)
    # The raw head would predict class 0 everywhere (column 0 = 1000); the view is exact.
    assert results["clean"]["accuracy@100"] == 1.0


def test_the_model_fingerprint_is_the_weights_hash_of_the_scored_module(tmp_path: Path) -> None:
    entries = (SuiteEntry("clean", Identity(), kind="clean"),)
    evaluate(_BirdHead(), Suite("clean", entries, batch_size=8), tiny_data(), out_dir=tmp_path,
             progress=False)
    manifest = json.loads((tmp_path / "state" / "manifest.json").read_text())
    # The runner scores (and so fingerprints) the challenge view of the model.
    scored = ChallengeView(_BirdHead())
    expected = hashlib.sha256(
        f"ChallengeView|{tensors_sha256(scored.state_dict())}".encode()).hexdigest()
    assert manifest["model"] == expected
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_class"] == "ChallengeView"


def test_an_options_object_and_keywords_give_the_same_run(tmp_path: Path) -> None:
    data = tiny_data()
    options = EvalOptions(seed=3, batch_size=5, max_images=20, progress=False)
    by_object = evaluate(tiny_model(), suite()[0], data, options, out_dir=tmp_path / "a")
    by_keywords = evaluate(tiny_model(), suite()[0], data, out_dir=tmp_path / "b", seed=3,
                           batch_size=5, max_images=20, progress=False)
    # Keywords replace the object's fields.
    mixed = evaluate(tiny_model(), suite()[0], data, EvalOptions(seed=1, progress=False),
                     out_dir=tmp_path / "c", seed=3, batch_size=5, max_images=20)
    assert without_times(tmp_path / "a/results.json") == \
        without_times(tmp_path / "b/results.json") == without_times(tmp_path / "c/results.json")
    assert by_object["pgd"]["images"] == by_keywords["pgd"]["images"] == 20
    assert mixed["pgd"]["error_indices"] == by_object["pgd"]["error_indices"]
    with pytest.raises(UsageError, match=r"evaluate\(\) takes no option batchsize; valid: seed"):
        evaluate(tiny_model(), suite()[0], data, out_dir=tmp_path / "d", batchsize=4)
