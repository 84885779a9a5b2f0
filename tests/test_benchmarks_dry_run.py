"""Dry runs of benchmarks/peer_check.py and benchmarks/eps_sweep.py, against exact answers.

Both scripts run in-process with ``--dry-run``: a linear two-class model on 8 test digits,
token budgets, peers skipped when they are not installed. For a linear model the worst
case in an L-inf ball intersected with [0, 1] has a closed form, so the white-box
numbers are checked exactly and every attack is checked not to beat it.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    """The two scripts imported from benchmarks/ (and forgotten afterwards)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    names = ("common", "peer_check", "eps_sweep")
    before = {name: sys.modules.pop(name, None) for name in names}
    try:
        yield {name: importlib.import_module(name) for name in names}
    finally:
        for name, module in before.items():
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module


def linf_robust_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                         eps: float) -> float:
    """Exact robust accuracy of a linear model with logits [0, w.x + b] in the L-inf ball
    of radius ``eps`` intersected with [0, 1]: each pixel goes to the end of its interval
    that moves the logit towards the other class."""
    weight, bias = model[1].weight.detach(), model[1].bias.detach()
    w, b = weight[1] - weight[0], float(bias[1] - bias[0])
    flat = x.flatten(1)
    low, high = (flat - eps).clamp(0, 1), (flat + eps).clamp(0, 1)
    towards_0 = torch.where(w > 0, low, high)  # the smallest logit: the worst for class 1
    towards_1 = torch.where(w > 0, high, low)
    worst = torch.where(y == 1, towards_0 @ w + b, towards_1 @ w + b)
    robust = torch.where(y == 1, worst > 0, worst <= 0)  # argmax ties go to class 0
    return float(robust.float().mean())


def test_peer_check_dry_run(scripts: dict[str, ModuleType], tmp_path: Path) -> None:
    peer_check = scripts["peer_check"]
    assert peer_check.main(["--dry-run", "--out", str(tmp_path), "--threads", "1"]) == 0
    report = json.loads((tmp_path / "peer_check.json").read_text())
    assert (tmp_path / "peer_check.md").read_text().startswith("| model | llrnet column")
    assert report["images"] == 8
    assert report["threat_models"] == {"pgd_eps": 0.1, "pgd_steps": 20, "spsa_eps": 0.3,
                                       "boundary_radius": 4.0}
    setup = peer_check.load_setup(None, [], 8, 0, True)
    model, x, y = setup.models["tiny"], setup.x, setup.y
    exact = linf_robust_accuracy(model, x, y, 0.1)
    rows = report["rows"]
    assert [r["column"] for r in rows] == (["pgd_linf"] * 2 + ["spsa_with_random_spatial"]
                                           + ["boundary_with_random_spatial"] * 6)
    for row in rows:
        assert row["bound"] is not None
        if row["peer_score"] is None:
            assert row["note"] in ("not installed", "skipped")
        else:
            assert row["note"] == ""
    for row in rows[:2]:  # PGD reaches the exact worst case of a linear model
        assert row["bound"]["acc@100"] == pytest.approx(exact)
        if row["peer_score"] is not None:  # and no attack goes below it
            assert row["peer_score"]["acc@100"] >= exact - 1e-9
    # The spatial stage is the evaluation's: the L-inf bound after it is exact too.
    moved = peer_check.spatial_stage(setup, model, "spsa_with_random_spatial")
    assert rows[2]["bound"]["acc@100"] == pytest.approx(linf_robust_accuracy(model, moved, y,
                                                                              0.3))


def test_eps_sweep_dry_run(scripts: dict[str, ModuleType], tmp_path: Path) -> None:
    eps_sweep, peer_check = scripts["eps_sweep"], scripts["peer_check"]
    plot = tmp_path / "sweep.png"
    assert eps_sweep.main(["--dry-run", "--out", str(tmp_path), "--plot", str(plot),
                           "--threads", "1"]) == 0
    assert plot.read_bytes()[:4] == b"\x89PNG"
    rows = json.loads((tmp_path / "eps_sweep.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * 3  # norms x spatial stage x radii
    setup = peer_check.load_setup(None, [], 8, 0, True)
    model, x, y = setup.models["tiny"], setup.x, setup.y
    starts = {False: x, True: peer_check.spatial_stage(setup, model,
                                                       "spsa_with_random_spatial")}
    for row in rows:
        assert 0.0 <= row["acc@100"] <= 1.0 and 0.0 <= row["acc@80"] <= 1.0
        if row["norm"] == "linf":
            exact = linf_robust_accuracy(model, starts[row["spatial"]], y, row["eps"])
            assert row["acc@100"] == pytest.approx(exact), row
    clean = [r for r in rows if r["eps"] == 0 and not r["spatial"]]
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    assert [r["acc@100"] for r in clean] == pytest.approx([accuracy, accuracy])


def test_gpu_check_dry_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """benchmarks/gpu_check.py on the CPU with tiny sizes: every section but the CUDA
    tests' subprocess (pytest inside pytest; test_cuda.py runs in this suite anyway)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    names = ("common", "eval_cost", "gpu_check")
    before = {name: sys.modules.pop(name, None) for name in names}
    threads = torch.get_num_threads()
    try:
        gpu_check = importlib.import_module("gpu_check")
        assert gpu_check.main(["--dry-run", "--skip-tests", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
        for name, module in before.items():
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] and result["tests"] is None
    assert "nvidia-smi" in (tmp_path / "environment.txt").read_text() or \
        (tmp_path / "environment.txt").stat().st_size > 0
    paths = {(row["batch"], row["path"]) for row in result["inference"]}
    assert paths == {(b, p) for b in (1, 2) for p in ("fp32", "tf32", "bf16 channels_last")} \
        | {(2, "bf16 channels_last compiled")}
    assert all(row["ours"] > 0 and row["reference"] > 0 for row in result["inference"])
    rows = {row["attack"]: row for row in result["attacks"]}
    assert list(rows) == ["clean", "spatial_grid", "common_corruptions",
                          "spsa_with_random_spatial", "boundary_with_random_spatial"]
    assert rows["clean"]["forwards"] == 0
    assert rows["spatial_grid"]["forwards"] == 2 * 9  # 2 images x the 9-point grid
    assert rows["common_corruptions"]["forwards"] == 2 * 2  # 2 images x 2 corruptions
    # SPSA: 2 steps x (4 probes + 1) per image, both images running to the end or stopping.
    assert 0 < rows["spsa_with_random_spatial"]["forwards"] <= 2 * 2 * 5
    assert rows["boundary_with_random_spatial"]["boundary_iterations"] >= 2
    for row in rows.values():
        if row["forwards"]:
            assert row["forwards_per_second"] > 0 and row["bare_forwards_per_second"] > 0
    projection = result["projection"]
    assert projection["total_forwards"] == 250 * 1 + 250 * 776 + 250 * 18 + 250 * 13001 \
        + 100 * 125001
    assert projection["total_seconds"] > 0
    section = (tmp_path / "gpu_check.md").read_text()
    assert section.startswith("## GPU check") and "dry run on the CPU" in section



def test_eval_compile_dry_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """benchmarks/eval_compile.py with the tiny model at 32 px and the ``eager`` backend:
    every configuration ran eager and compiled, nothing recompiled in the timed run, the
    tables are identical, and clean accuracy is 100% (labels are the model's decisions)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    names = ("common", "eval_compile")
    before = {name: sys.modules.pop(name, None) for name in names}
    compiler = torch.compile
    try:
        eval_compile = importlib.import_module("eval_compile")
        assert eval_compile.main(["--dry-run", "--out", str(tmp_path)]) == 0
    finally:
        for name, module in before.items():
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module
    assert torch.compile is compiler  # the backend patch is undone
    rows = json.loads((tmp_path / "eval_compile.json").read_text())["rows"]
    assert [(r["batch"], r["precision"], r["images"]) for r in rows] == [
        (1, "fp32", 1), (2, "fp32", 2), (1, "bf16", 1), (2, "bf16", 2)]
    for row in rows:
        assert row["tables"] == "identical", row
        assert row["timed_graphs"] == 0
        assert row["first_compile_s"] > 0  # compile_run's warm-up was logged
        assert row["clean"]["accuracy"] == 1.0
        for attack in ("clean", "spatial_grid"):
            speeds = row[attack]
            assert speeds["eager"] > 0 and speeds["compiled"] > 0
            assert speeds["ratio"] == pytest.approx(speeds["compiled"] / speeds["eager"])
    section = (tmp_path / "eval_compile.md").read_text()
    assert section.startswith("## Evaluation with `--compile`") and "dry run" in section
    assert section.count("\n| ") == 1 + len(rows)  # header and one line per row
