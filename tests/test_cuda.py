"""CUDA against CPU: attacks, evaluation, training, DDP, predict and weights on a GPU.

Every test marked ``cuda`` skips without a GPU (``pytest -m cuda`` selects them;
``benchmarks/gpu_check.py`` runs them first). On a GPU they compare with the same
work on the CPU; where CUDA kernels may make a result differ, the test says why and
checks what must still hold. With ``LLRNET_CUDA_REPORT=FILE`` the measured counts
(host-device copies per attack step) are appended to FILE as JSON lines.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from llrnet.attacks import PGD, SPSA, Attack, Identity
from llrnet.core import distributed
from llrnet.core.errors import UsageError
from llrnet.models.precision import strict_fp32

F = TypeVar("F", bound=Callable[..., Any])
HAS_CUDA = torch.cuda.is_available()
TESTS = Path(__file__).parent


def needs_cuda(test: F) -> F:
    """Mark ``test`` ``cuda`` and skip it (reported as skipped) without a GPU."""
    marked = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")(test)
    return pytest.mark.cuda(marked)  # type: ignore[no-any-return]


def report(record: dict[str, Any]) -> None:
    """Append ``record`` to ``$LLRNET_CUDA_REPORT`` (one JSON line) when it is set."""
    target = os.environ.get("LLRNET_CUDA_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def untimed(path: Path) -> dict[str, Any]:
    results = json.loads(path.read_text())
    for record in results["attacks"].values():
        record.pop("wall_time")
        record.pop("memory", None)
    return results


def decisions_of(results: dict[str, Any]) -> dict[str, Any]:
    """What a results table says per attack: accuracies and the misclassified images."""
    return {name: (record["accuracy@80"], record["accuracy@100"], record["images"],
                   sorted(record["error_indices"]))
            for name, record in results["attacks"].items()}


# --- runs everywhere: the device plumbing the CUDA runs rely on ---------------------

def test_the_process_group_backend_follows_the_device_or_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(distributed.BACKEND_VARIABLE, raising=False)
    assert distributed.backend_for("cuda") == "nccl"
    assert distributed.backend_for("cpu") == "gloo"
    monkeypatch.setenv(distributed.BACKEND_VARIABLE, "GLOO")
    assert distributed.backend_for("cuda") == "gloo"
    monkeypatch.setenv(distributed.BACKEND_VARIABLE, "mpi")
    with pytest.raises(UsageError, match="LLRNET_DIST_BACKEND='mpi': use gloo or nccl"):
        distributed.backend_for("cuda")


# --- attacks ------------------------------------------------------------------------

def _attack_cases() -> list[Any]:
    from test_attacks_contract import EXPORTED

    return EXPORTED


@needs_cuda
@pytest.mark.parametrize("cls", _attack_cases(), ids=lambda cls: cls.__name__)
def test_every_attack_on_cuda_matches_cpu(cls: type[Attack]) -> None:
    """Same seeds on CPU and CUDA: the same decisions, and adversarials equal within
    float tolerance on at least 99% of the values. Both run in strict fp32 (no TF32).
    Why not all values: PGD steps by the sign of each gradient component, and a
    component within float noise of zero (CPU and cuDNN sum in other orders) may
    take the other sign, moving that pixel by one step size."""
    from test_attacks_contract import CASES, ELSEWHERE, _setup

    if cls in ELSEWHERE:
        pytest.skip(f"{cls.__name__}: one random stream per batch on the device's generator "
                    f"(no CPU equivalent); covered by {ELSEWHERE[cls]}")
    model, x, y, pool = _setup()
    model.eval()
    seeds = torch.tensor([5, 9, 2, 7])
    device = torch.device("cuda")
    on_gpu = copy.deepcopy(model).to(device)
    gpu_pool = (pool[0].to(device), pool[1].to(device))
    with strict_fp32():
        expected = CASES[cls]()(model, x, y, seeds=seeds, pool=pool)
        found = CASES[cls]()(on_gpu, x.to(device), y.to(device), seeds=seeds, pool=gpu_pool)
    assert found.device.type == "cuda" and found.dtype == expected.dtype
    found = found.cpu()
    with torch.no_grad():
        assert torch.equal(model(found).argmax(1), model(expected).argmax(1))
    close = ((found - expected).abs() <= 1e-4).double().mean().item()
    assert close >= 0.99, f"{cls.__name__}: only {close:.4f} of the values agree"


def _count_copies(run: Callable[[], Any]) -> int:
    """Host-to-device and device-to-host copies (CUDA memcpy activities) during ``run``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    names = [event.name for event in prof.events()]
    return sum(1 for name in names if "Memcpy" in name and ("HtoD" in name or "DtoH" in name))


@needs_cuda
@pytest.mark.parametrize("make", [
    lambda steps: PGD(0.05, steps, 0.02),
    lambda steps: SPSA(0.05, steps, samples=8, early_stop_loss_threshold=None),
], ids=["pgd", "spsa"])
def test_host_device_copies_per_attack_step_do_not_grow_with_images(make: Any) -> None:
    """Copies per step, from runs of 2 and 6 steps: a constant few (random bits and
    seeds drawn on the CPU, one decision read back), never one per image."""
    from test_attacks_contract import _setup

    calibration = _count_copies(lambda: torch.ones(4, device="cuda").cpu())
    assert calibration >= 1, "the profiler shows no memcpy; the count below would be empty"
    model, x, y, _ = _setup()
    model = model.eval().cuda()
    per_step = {}
    for n in (2, 4):
        xs, ys = x[:n].cuda(), y[:n].cuda()
        counts = [_count_copies(lambda s=steps, a=xs, b=ys: make(s)(model, a, b, seeds=3))
                  for steps in (2, 6)]
        per_step[n] = (counts[1] - counts[0]) / 4
    name = type(make(1)).__name__
    report({"test": "copies_per_step", "attack": name, "per_step": per_step})
    assert per_step[2] == per_step[4], per_step  # not per image
    assert per_step[4] <= 8, per_step


# --- evaluation ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits model trained on CUDA (digits_standard, 100 steps): clean 100%, so the
    table has something to lose."""
    from llrnet.train import load_config, train

    out = tmp_path_factory.mktemp("digits") / "run"
    result = train(load_config("digits_standard", ["device=cuda", "tensorboard=false"]), out,
                   progress=False)
    assert result.weights is not None
    return result.weights


DIGITS_SMALL = ["--suite-option", "spsa_steps=10", "--suite-option", "boundary_iterations=20",
                "--suite-option", "boundary_images=8", "--no-white-box-bounds"]
"""The digits suite's five kinds at budgets that keep its CPU half short."""


def _eval_args(weights: Path, out: Path, device: str, *extra: str) -> list[str]:
    return ["eval", "--suite", "digits", "--weights", str(weights), "--out", str(out),
            "--max-images", "8", "--batch-size", "4", "--device", device, "--no-progress",
            *DIGITS_SMALL, *extra]


@needs_cuda
def test_evaluate_fp32_on_cuda_gives_the_cpu_table(digits_weights: Path, tmp_path: Path) -> None:
    """fp32: the same table on CUDA as on the CPU (the judge runs without TF32, attacks
    draw their random numbers on the CPU)."""
    from llrnet.cli import main

    assert main(_eval_args(digits_weights, tmp_path / "cpu", "cpu")) == 0
    assert main(_eval_args(digits_weights, tmp_path / "cuda", "cuda")) == 0
    cpu = json.loads((tmp_path / "cpu/results.json").read_text())
    gpu = json.loads((tmp_path / "cuda/results.json").read_text())
    assert decisions_of(gpu) == decisions_of(cpu)
    config = json.loads((tmp_path / "cuda/config.json").read_text())
    assert config["device"].startswith("cuda")


@needs_cuda
def test_evaluate_bf16_on_cuda_differs_from_cpu_only_in_bf16_searches(
        digits_weights: Path, tmp_path: Path) -> None:
    """bf16: the bf16 copy rounds differently in oneDNN (CPU) and cuDNN, so a search in
    bf16 (SPSA, Boundary, the grid) may end elsewhere: at most one image per such
    attack may change; attacks searched in fp32 or not searched give the CPU's table."""
    from llrnet.cli import main

    assert main(_eval_args(digits_weights, tmp_path / "cpu", "cpu", "--precision", "bf16")) == 0
    assert main(_eval_args(digits_weights, tmp_path / "cuda", "cuda", "--precision", "bf16")) == 0
    cpu = json.loads((tmp_path / "cpu/results.json").read_text())
    gpu = json.loads((tmp_path / "cuda/results.json").read_text())
    assert gpu["precision"] == "bf16"
    differences = {}
    for name, record in gpu["attacks"].items():
        before = cpu["attacks"][name]
        changed = set(record["error_indices"]) ^ set(before["error_indices"])
        if record["search_precision"] == "bf16" and record["model_evaluations"]:
            differences[name] = sorted(changed)
            assert len(changed) <= 1, (name, changed)
        else:
            assert not changed, (name, changed)
    report({"test": "bf16_table_differences", "differences": differences})


@needs_cuda
def test_evaluate_on_cuda_resumes_across_a_kill(tmp_path: Path) -> None:
    """A kill -9 mid-attack on CUDA, then a rerun: the uninterrupted run's decisions and
    logits. (Bit equality holds where cuDNN picks the same kernels in both processes;
    the decisions must match whatever it picks.)"""

    from llrnet.cli import main
    from test_eval_kill import eval_killed_mid_attack

    args = eval_killed_mid_attack(tmp_path, "--device", "cuda")
    assert main(args(tmp_path / "killed")) == 0
    resumed = untimed(tmp_path / "killed/results.json")
    straight = untimed(tmp_path / "straight/results.json")
    assert decisions_of(resumed) == decisions_of(straight)
    for name in straight["attacks"]:
        np.testing.assert_allclose(resumed["attacks"][name]["coverage_curve"]["risk"],
                                   straight["attacks"][name]["coverage_curve"]["risk"],
                                   atol=1e-6)


class GreedyModel(nn.Module):
    """A linear model that really holds ``per_image`` bytes of CUDA memory per image in
    each call, so that a large call raises CUDA's own ``torch.OutOfMemoryError``."""

    def __init__(self, per_image: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(64, 2)
        self.per_image = per_image

    def forward(self, x: Tensor) -> Tensor:
        held = torch.empty(x.shape[0] * self.per_image, dtype=torch.uint8, device=x.device)
        out = self.linear(x.flatten(1))
        del held
        return out


@needs_cuda
def test_a_real_cuda_oom_halves_the_batch_and_keeps_the_results(tmp_path: Path) -> None:
    """A third of the free memory per image: a call of 4 images fails on CUDA, of 1
    fits; the run ends with the results of a run at batch 1, and records the size."""
    from llrnet.eval import Suite, SuiteEntry, evaluate
    from test_eval_runner import tiny_data

    free, _ = torch.cuda.mem_get_info()
    suite = Suite("oom", (SuiteEntry("clean", Identity(), kind="clean"),
                          SuiteEntry("pgd", PGD(0.05, 2, 0.02), kind="white_box")),
                  batch_size=8)
    data = tiny_data(8)
    with strict_fp32():
        records = evaluate(GreedyModel(free // 3), suite, data, out_dir=tmp_path / "oom",
                           device="cuda", progress=False)
        evaluate(GreedyModel(0), suite, data, out_dir=tmp_path / "one", device="cuda",
                 batch_size=1, progress=False)
    assert records["pgd"]["memory"]["working_batch"] <= 2
    assert decisions_of(untimed(tmp_path / "oom/results.json")) == \
        decisions_of(untimed(tmp_path / "one/results.json"))


@needs_cuda
def test_batch_size_auto_on_cuda_is_a_power_of_two_that_fits(tmp_path: Path) -> None:
    from llrnet.eval import evaluate
    from llrnet.eval.plan import per_image_bytes
    from test_eval_runner import suite, tiny_data, tiny_model

    model = tiny_model().cuda()
    assert per_image_bytes(model, torch.rand(2, 1, 8, 8, device="cuda")) > 0
    evaluate(tiny_model(), suite()[0], tiny_data(), out_dir=tmp_path, device="cuda",
             batch_size="auto", progress=False)
    size = json.loads((tmp_path / "state/manifest.json").read_text())["batch_size"]
    assert 1 <= size <= 24 and size & (size - 1) == 0
    report({"test": "batch_size_auto", "tiny_model_batch": size})


# --- training -----------------------------------------------------------------------

TASKS = {
    "standard": ["task.name=standard"],
    "pgd": ["task.name=pgd", "task.options={eps: 0.1, steps: 1, step_size: 0.1}"],
    "llr": ["task.name=llr", "task.options={eps: 0.1, steps: 1, warmup_steps: 0}"],
}


@needs_cuda
@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_bf16_training_step_on_cuda_is_finite_and_resumes(task: str, tmp_path: Path) -> None:
    from llrnet.train import load_config, train
    from llrnet.train.logging import read_metrics
    from test_train_loop import TINY

    config = load_config(None, [*TINY, *TASKS[task], "steps=4", "device=cuda",
                                "precision=bf16"])
    partial = train(config, tmp_path / "run", until_step=2, progress=False)
    assert partial.step == 2 and not partial.finished
    done = train(config, tmp_path / "run", resume=True, progress=False)
    assert done.finished and done.step == 4 and done.weights is not None
    losses = [record["loss"] for record in read_metrics(tmp_path / "run") if "loss" in record]
    assert losses and all(np.isfinite(losses)), losses


# --- several processes --------------------------------------------------------------

EVAL_SCRIPT = '''
import json, sys
import torch
import torch.distributed as dist
sys.path.insert(0, sys.argv[3])
from test_eval_distributed import data, model
from llrnet.attacks import PGD, Identity
from llrnet.eval import Suite, SuiteEntry, evaluate

if sys.argv[2] == "nccl":  # world size 1: llrnet starts no group, so start one itself
    torch.cuda.set_device(0)
    dist.init_process_group("nccl")
    net = torch.nn.parallel.DistributedDataParallel(model().cuda(), device_ids=[0])
    net(torch.rand(4, 1, 8, 8, device="cuda")).sum().backward()
    total = torch.ones(1, device="cuda")
    dist.all_reduce(total)
    assert float(total) == 1.0
suite = Suite("dist", (SuiteEntry("clean", Identity(), kind="clean"),
                       SuiteEntry("pgd", PGD(0.1, 3, 0.04), kind="white_box",
                                  max_images=17)), batch_size=4)
evaluate(model(), suite, data(), out_dir=sys.argv[1], seed=3, device="cuda", progress=False)
if dist.is_initialized():
    dist.destroy_process_group()
'''


def _torchrun(tmp_path: Path, processes: int, backend: str, out: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(EVAL_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", distributed.BACKEND_VARIABLE: backend}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
         "--standalone", str(script), str(out), backend, str(TESTS)],
        env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]


@needs_cuda
@pytest.mark.distributed
def test_nccl_at_world_size_one_and_gloo_across_two_processes_match_one_process(
        tmp_path: Path) -> None:
    """torchrun with NCCL at world size 1 (DDP step and all-reduce, then an evaluation),
    and 2 processes under gloo (sharing the GPU when there is one): both give the
    single-process CUDA results."""
    from llrnet.eval import Suite, SuiteEntry, evaluate
    from test_eval_distributed import data, model

    suite = Suite("dist", (SuiteEntry("clean", Identity(), kind="clean"),
                           SuiteEntry("pgd", PGD(0.1, 3, 0.04), kind="white_box",
                                      max_images=17)), batch_size=4)
    evaluate(model(), suite, data(), out_dir=tmp_path / "one", seed=3, device="cuda",
             progress=False)
    one = untimed(tmp_path / "one/results.json")
    _torchrun(tmp_path, 1, "nccl", tmp_path / "nccl")
    assert decisions_of(untimed(tmp_path / "nccl/results.json")) == decisions_of(one)
    _torchrun(tmp_path, 2, "gloo", tmp_path / "gloo")
    assert decisions_of(untimed(tmp_path / "gloo/results.json")) == decisions_of(one)
    assert json.loads((tmp_path / "gloo/config.json").read_text())["processes"] == 2


# --- predict, import-hub, load_weights ----------------------------------------------

@needs_cuda
def test_predict_on_cuda_matches_cpu(tmp_path: Path) -> None:
    from PIL import Image

    from llrnet.inference import predict_images
    from llrnet.models import create_model

    generator = np.random.default_rng(0)
    paths: list[str | os.PathLike[str]] = []
    for i in range(3):
        path = tmp_path / f"image{i}.png"
        Image.fromarray(generator.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    torch.manual_seed(0)
    model = create_model("llr_pretrain_adv_tiny").eval()
    with strict_fp32():
        cpu, _ = predict_images(copy.deepcopy(model), paths, device="cpu")
        gpu, failures = predict_images(model, paths, device="cuda")
    assert not failures and len(gpu) == len(cpu) == 3
    for a, b in zip(gpu, cpu, strict=True):
        assert a.path == b.path
        assert a.bird_logit == pytest.approx(b.bird_logit, abs=1e-4)
        if abs(b.bird_logit) > 1e-3:  # random weights: a logit near 0 may take either side
            assert a.label == b.label


@needs_cuda
def test_import_hub_output_loads_on_cuda_and_matches_tensorflow(tmp_path: Path) -> None:
    from hub_helpers import FIXTURES, golden
    from llrnet.hub import import_hub
    from llrnet.models import load_weights

    out = tmp_path / "llr.safetensors"
    import_hub(FIXTURES / "latents", linear=FIXTURES / "linear",
               architecture="llr_pretrain_adv_tiny", out=out)
    model = load_weights(out, device="cuda")
    assert all(p.device.type == "cuda" for p in model.parameters())
    assert all(b.device.type == "cuda" for b in model.buffers())
    data = golden("latents")
    images = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).contiguous().cuda()
    with torch.no_grad(), strict_fp32():
        bird = model.bird_logit(images).cpu()
    np.testing.assert_allclose(bird.numpy(), data["bird_logit"], atol=1e-4, rtol=0)
