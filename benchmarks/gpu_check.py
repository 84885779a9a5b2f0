"""The first thing to run on a GPU: its description, the CUDA tests, inference and attack
speed of ``llr_pretrain_adv``, and the bird-or-bicycle warm-up's projected time.

    .venv/bin/python benchmarks/gpu_check.py [--out DIR] [--skip-tests] [--no-compile]
    .venv/bin/python benchmarks/gpu_check.py --dry-run      # the same code on the CPU, tiny

Writes to DIR (default ``$OUT``, else ``gpu_check_out/``): ``environment.txt``
(``nvidia-smi``, ``torch.cuda.get_device_properties``), ``cuda_tests.txt`` (the
``cuda``-marked tests, with their copy counts in ``cuda_report.jsonl``),
``gpu_check.json`` (every number) and ``gpu_check.md`` (a section for
docs/benchmarks.md). Budgets on one H100, under 8 minutes in all: tests 240 s,
inference about 90 s (compiling included), attacks about 100 s (Boundary capped at
20 s), the rest seconds. Weights are random: speed does not depend on them, and the
projection assumes no attack stops early (a robust model's case).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description
from eval_cost import SUITE_IMAGES, UPPER_BOUND

from llrnet.attacks import SPSA, Boundary, Chain, CommonCorruptions, SpatialGrid
from llrnet.attacks.base import Attack, searches_in_bf16
from llrnet.eval import get_suite
from llrnet.models import create_model, fast_copy
from llrnet.models.heads import challenge_view
from llrnet.models.precision import FastCopy

ROOT = Path(__file__).resolve().parent.parent
Forward = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Sizes:
    """What one run measures: the real sizes on a GPU, tiny ones in a dry run."""

    image: int
    batches: tuple[int, ...]
    compile_batches: tuple[int, ...]
    attack_images: int
    pool_images: int
    ours: str
    ours_kwargs: dict[str, Any]
    reference: str
    min_seconds: float
    boundary_seconds: float
    spsa_seconds: float
    test_seconds: float
    compile_needs_seconds: float


GPU = Sizes(image=224, batches=(1, 32, 256), compile_batches=(256,), attack_images=8,
            pool_images=32, ours="llr_pretrain_adv", ours_kwargs={}, reference="resnet152",
            min_seconds=0.5, boundary_seconds=20.0, spsa_seconds=45.0, test_seconds=200.0,
            compile_needs_seconds=150.0)
DRY = Sizes(image=28, batches=(1, 2), compile_batches=(2,), attack_images=2, pool_images=8,
            ours="llr_pretrain_adv_tiny", ours_kwargs={"preprocess": False},
            reference="resnet18", min_seconds=0.0, boundary_seconds=0.5, spsa_seconds=60.0,
            test_seconds=120.0, compile_needs_seconds=0.0)
BUDGET_SECONDS = 450.0
"""The whole check's target on one H100 (7.5 minutes): compiling, the one optional part,
is skipped when less than ``compile_needs_seconds`` of it is left."""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def tf32(allowed: bool) -> Iterator[None]:
    """TF32 in CUDA convolutions and matrix products on (``allowed``) or off, restored."""
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = allowed
    torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def images_per_second(forward: Forward, x: Tensor, min_seconds: float, repeats: int = 3
                      ) -> float:
    """Images/s of ``forward`` on ``x`` [N, C, H, W]: after two untimed calls, at least
    ``repeats`` calls and ``min_seconds`` of them, synchronized at both ends."""
    with torch.inference_mode():
        forward(x)
        forward(x)
        synchronize(x.device)
        count, start = 0, time.perf_counter()
        while count < repeats or time.perf_counter() - start < min_seconds:
            forward(x)
            count += 1
            if count % 4 == 0:
                synchronize(x.device)
        synchronize(x.device)
        return count * x.shape[0] / (time.perf_counter() - start)


# --- 1. environment -----------------------------------------------------------------

def environment(device: torch.device, out: Path) -> dict[str, Any]:
    """nvidia-smi's report (environment.txt) and the device's properties."""
    try:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
        smi_text = smi.stdout or smi.stderr
    except (OSError, subprocess.TimeoutExpired) as error:
        smi_text = f"nvidia-smi: {error}"
    properties: dict[str, Any] | None = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        properties = {"name": p.name, "capability": f"{p.major}.{p.minor}",
                      "total_memory_gib": round(p.total_memory / 2**30, 2),
                      "multiprocessors": p.multi_processor_count}
    record = {"machine": machine_description(), "device": str(device),
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
              "properties": properties}
    (out / "environment.txt").write_text(smi_text + "\n" + json.dumps(record, indent=2) + "\n")
    return record


# --- 2. the cuda tests ----------------------------------------------------------------

def cuda_tests(out: Path, seconds: float) -> dict[str, Any]:
    """``pytest -m cuda tests/test_cuda.py``: its summary line, exit code and copy counts."""
    report = out / "cuda_report.jsonl"
    report.unlink(missing_ok=True)
    env = {**os.environ, "LLRNET_CUDA_REPORT": str(report)}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs",
               "-m", "cuda", "-p", "no:xdist", str(ROOT / "tests" / "test_cuda.py")]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds,
                              cwd=ROOT, env=env)
        text, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as error:
        text, code = f"{error.stdout or ''}\ntimed out after {seconds:.0f} s", -1
    (out / "cuda_tests.txt").write_text(str(text))
    lines = [line for line in str(text).splitlines() if line.strip()]
    summary = next((line for line in reversed(lines)
                    if any(w in line for w in ("passed", "failed", "skipped", "error"))), "")
    counts = ([json.loads(line) for line in report.read_text().splitlines() if line.strip()]
              if report.exists() else [])
    return {"exit_code": code, "summary": summary.strip("= "), "seconds":
            round(time.perf_counter() - start, 1), "reports": counts}


# --- 3. inference -----------------------------------------------------------------------

def build_models(sizes: Sizes, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """(ours as scored: the challenge view of ``sizes.ours``, torchvision's reference),
    random weights, eval mode, on ``device``."""
    import torchvision

    torch.manual_seed(0)
    ours = challenge_view(create_model(sizes.ours, **sizes.ours_kwargs)).eval().to(device)
    reference = getattr(torchvision.models, sizes.reference)(num_classes=2).eval().to(device)
    return ours, reference


def measure_pair(models: dict[str, Forward], x: Tensor, allow_tf32: bool | None,
                 min_seconds: float) -> dict[str, float]:
    """Images/s of each of ``models`` on ``x`` (TF32 set as ``allow_tf32``; None: as is)."""
    speeds = {}
    for name, forward in models.items():
        with tf32(allow_tf32) if allow_tf32 is not None else contextlib.nullcontext():
            speeds[name] = images_per_second(forward, x, min_seconds)
    return speeds


def inference(sizes: Sizes, device: torch.device, dry_run: bool, compile_models: bool,
              deadline: float) -> tuple[list[dict[str, Any]], str | None]:
    """Images/s of ours and the reference per batch and path: fp32 (no TF32), TF32,
    bf16 channels_last (``fast_copy``) and, when ``compile_models`` and at least
    ``compile_needs_seconds`` are left before ``deadline`` (perf_counter), that copy
    compiled (``compile_batches`` only; compile time in the row). Returns the rows
    and why compiling was skipped (None: it ran or was not asked for). A path that
    fails gets a row with ``error``."""
    ours, reference = build_models(sizes, device)
    plain: dict[str, Forward] = {"ours": ours, "reference": reference}
    copies: dict[str, Forward] = {name: fast_copy(model, "bf16").eval()
                                  for name, model in (("ours", ours), ("reference", reference))}
    rows: list[dict[str, Any]] = []

    def record(batch: int, path: str, run: Callable[[], dict[str, float]],
               extra: dict[str, Any] | None = None) -> None:
        try:
            speeds = run()
        except Exception as error:  # a first GPU run reports a failure and goes on
            rows.append({"batch": batch, "path": path, "error": f"{type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}"})
            print(f"inference batch {batch} {path}: {rows[-1]['error']}", flush=True)
            return
        row = {"batch": batch, "path": path, "ours": speeds["ours"],
               "reference": speeds["reference"], "ratio": speeds["ours"] / speeds["reference"],
               **(extra or {})}
        rows.append(row)
        print(f"inference batch {batch} {path}: ours {row['ours']:.1f} img/s, "
              f"reference {row['reference']:.1f}, ratio {row['ratio']:.3f}", flush=True)

    for path, models, allow in (("fp32", plain, False), ("tf32", plain, True),
                                ("bf16 channels_last", copies, None)):
        for batch in sizes.batches:
            x = torch.rand(batch, 3, sizes.image, sizes.image, device=device)
            record(batch, path, lambda m=models, a=allow, x=x: measure_pair(
                m, x, a, sizes.min_seconds))
    if not compile_models:
        return rows, None
    left = deadline - time.perf_counter()
    if left < sizes.compile_needs_seconds:
        return rows, (f"{max(0.0, left):.0f} s of the budget left, "
                      f"{sizes.compile_needs_seconds:.0f} s needed")
    compiled: dict[str, Forward] = {
        name: torch.compile(model, backend="eager" if dry_run else "inductor")
        for name, model in copies.items()}
    for batch in sizes.compile_batches:
        x = torch.rand(batch, 3, sizes.image, sizes.image, device=device)
        timing: dict[str, Any] = {}

        def compile_and_measure(x: Tensor = x, timing: dict[str, Any] = timing
                                ) -> dict[str, float]:
            start = time.perf_counter()
            with torch.inference_mode():
                for forward in compiled.values():
                    forward(x)  # compiles
            synchronize(device)
            timing["compile_seconds"] = round(time.perf_counter() - start, 1)
            return measure_pair(compiled, x, None, sizes.min_seconds)

        record(batch, "bf16 channels_last compiled", compile_and_measure, timing)
    return rows, None


# --- 4. attacks -------------------------------------------------------------------------

class Shifted(nn.Module):
    """``model``'s two logits with ``shift`` added to the second: puts the random-weight
    model's decision threshold inside the data, so both classes occur (Boundary needs
    other-class starting points). Counts calls and images."""

    def __init__(self, model: nn.Module, shift: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("shift", torch.tensor([0.0, shift]))
        self.calls = 0
        self.images = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        self.images += int(x.shape[0])
        return self.model(x).float() + self.shift


def dry_attack(attack: Attack) -> Attack:
    """The dry run's budgets: SPSA 2 steps, a 9-point grid, 2 corruptions."""
    if isinstance(attack, Chain):
        return Chain(*(dry_attack(stage) for stage in attack.stages), name=attack.name)
    if isinstance(attack, SPSA):
        return attack._replace(steps=2)
    if isinstance(attack, SpatialGrid) and attack.limits is not None:
        l0, l1, l2 = attack.limits
        return SpatialGrid(attack.grid_name, limits=(l0, l1, l2), granularity=(3, 1, 3),
                           border_fraction=attack.border_fraction)
    if isinstance(attack, CommonCorruptions):
        return CommonCorruptions(("gaussian_noise", "contrast"), workers=0)
    return attack


def with_iterations(attack: Attack, iterations: int) -> Attack:
    """``attack`` with its Boundary stage's ``iterations`` or its SPSA stage's ``steps``
    replaced."""
    if isinstance(attack, Chain):
        return Chain(*(with_iterations(stage, iterations) for stage in attack.stages),
                     name=attack.name)
    if isinstance(attack, Boundary):
        return attack._replace(iterations=iterations)
    if isinstance(attack, SPSA):
        return attack._replace(steps=iterations)
    return attack


def iteration_cap(attack: Attack) -> tuple[str, int] | None:
    """(what, count) of the attack's capped loop: Boundary iterations, SPSA steps."""
    stages = attack.stages if isinstance(attack, Chain) else (attack,)
    for stage in stages:
        if isinstance(stage, Boundary):
            return "boundary_iterations", stage.iterations
        if isinstance(stage, SPSA):
            return "spsa_steps", stage.steps
    return None


def suite_attacks(dry_run: bool) -> dict[str, Attack]:
    """The bird_or_bicycle suite's attacks (dry run: the digits suite's, tiny budgets)."""
    if dry_run:
        suite = get_suite("digits", spsa_steps=2, spsa_samples=4, boundary_directions=2)
        return {e.name: dry_attack(e.attack) for e in suite.entries}
    return {e.name: e.attack for e in get_suite("bird_or_bicycle").entries}


def attacks(sizes: Sizes, device: torch.device, dry_run: bool) -> list[dict[str, Any]]:
    """Each suite attack on ``attack_images`` random images, with the model it searches
    with in a bf16 evaluation: forwards/s, and the overhead over a bare forward of that
    model at the attack's mean batch. Boundary runs ``boundary_seconds``' worth of
    iterations and SPSA ``spsa_seconds``' worth of steps at most (timed from a
    2-iteration probe; the suite's counts when they fit): the rate is what the
    projection needs."""
    ours, _ = build_models(sizes, device)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(sizes.attack_images + sizes.pool_images, 3, sizes.image, sizes.image,
                   generator=generator).to(device)
    models = {}
    for bf16 in (True, False):
        copy = fast_copy(ours, "bf16" if bf16 else "fp32").eval()
        with torch.inference_mode():
            logits = copy(x).float()
        # The copy's own median: half of the images on each side of its threshold.
        models[bf16] = Shifted(copy, -float((logits[:, 1] - logits[:, 0]).median())).eval()
    rows = []
    for name, attack in suite_attacks(dry_run).items():
        bf16 = searches_in_bf16(attack)
        try:
            rows.append(run_attack(name, attack, models[bf16], x, sizes, device))
        except Exception as error:  # a first GPU run reports a failure and goes on
            first = str(error).splitlines()[0] if str(error) else ""
            rows.append({"attack": name, "search": "bf16" if bf16 else "fp32",
                         "error": f"{type(error).__name__}: {first}"})
        print(f"attack {name}: {json.dumps(rows[-1])}", flush=True)
    return rows


def run_attack(name: str, attack: Attack, model: Shifted, x: Tensor, sizes: Sizes,
               device: torch.device) -> dict[str, Any]:
    """One row of :func:`attacks`: ``attack`` searching with ``model`` on the first
    ``attack_images`` of ``x``, the rest its pool; labels are ``model``'s decisions."""
    bf16 = isinstance(model.model, FastCopy) and model.model.dtype == torch.bfloat16
    with torch.inference_mode():
        labels = model(x).argmax(1)
    images, y = x[: sizes.attack_images], labels[: sizes.attack_images]
    pool = (x[sizes.attack_images:], labels[sizes.attack_images:])
    extra: dict[str, Any] = {"pool": pool} if attack.needs_pool else {}
    cap = iteration_cap(attack)
    if cap is not None:  # Boundary and SPSA: capped by time
        seconds_allowed = (sizes.boundary_seconds if cap[0] == "boundary_iterations"
                           else sizes.spsa_seconds)
        probe = with_iterations(attack, 2)
        start = time.perf_counter()
        probe(model, images, y, seeds=0, **extra)
        synchronize(device)
        per_iteration = (time.perf_counter() - start) / 2
        cap = (cap[0], max(2, min(cap[1], int(seconds_allowed / per_iteration))))
        attack = with_iterations(attack, cap[1])
    model.calls = model.images = 0
    synchronize(device)
    start = time.perf_counter()
    attack(model, images, y, seeds=0, **extra)
    synchronize(device)
    seconds = time.perf_counter() - start
    forwards = float(attack.last_stats["model_evaluations"])
    row: dict[str, Any] = {"attack": name, "search": "bf16" if bf16 else "fp32",
                           "images": sizes.attack_images, "seconds": round(seconds, 3),
                           "forwards": forwards}
    if cap is not None:
        row[cap[0]] = cap[1]
    if forwards and model.calls:
        batch = max(1, round(model.images / model.calls))
        bare = images_per_second(model, images[:1].expand(batch, -1, -1, -1).contiguous(),
                                 sizes.min_seconds)
        rate = forwards / seconds
        row.update({"forwards_per_second": rate, "mean_batch": batch,
                    "bare_forwards_per_second": bare, "overhead": bare / rate - 1.0})
    return row


def projection(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole warm-up's time at the measured rates: per attack, the suite's images x
    (its upper-bound forwards per image + one judging forward), at its forwards/s."""
    per_attack = {}
    for row in rows:
        name = row["attack"]
        if name not in SUITE_IMAGES or "error" in row:
            continue
        forwards = SUITE_IMAGES[name] * (UPPER_BOUND[name][0] + 1)
        rate = row.get("forwards_per_second") or row.get("bare_forwards_per_second")
        if rate is None:  # clean: the judging forward only, at the bare rate of another row
            rate = max((r.get("bare_forwards_per_second") or 0.0) for r in rows) or None
        per_attack[name] = {"forwards": forwards,
                            "seconds": None if rate is None else forwards / rate}
    known = [v["seconds"] for v in per_attack.values() if v["seconds"] is not None]
    return {"per_attack": per_attack, "total_forwards": sum(v["forwards"] for v in
                                                           per_attack.values()),
            "total_seconds": sum(known) if known else None}


# --- report -----------------------------------------------------------------------------

def markdown(result: dict[str, Any]) -> str:
    """The ``## GPU check`` section of docs/benchmarks.md, from ``result``."""
    env = result["environment"]
    name = (env["properties"] or {}).get("name", env["device"])
    lines = [
        "## GPU check",
        "",
        f"Device: {name}; {env['machine']}; CUDA {env['cuda']}, cuDNN {env['cudnn']}. "
        f"Command: `{result['command']}` ({result['seconds']:.0f} s"
        + (", dry run on the CPU: tiny sizes, not a measurement" if result["dry_run"] else "")
        + ").",
        "",
    ]
    tests = result.get("tests")
    if tests:
        lines += [f"CUDA tests: {tests['summary']} (exit {tests['exit_code']}).", ""]
    lines += ["| batch | path | ours (img/s) | reference (img/s) | ours / reference |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['path']} | {r['ours']:.1f} | {r['reference']:.1f} | "
              f"{r['ratio']:.3f}x |" if "error" not in r else
              f"| {r['batch']} | {r['path']} | failed: {r['error']} | | |"
              for r in result["inference"]]
    if result.get("compile_skipped"):
        lines += ["", f"torch.compile skipped: {result['compile_skipped']}."]
    lines += ["", f"Attacks on {result['sizes']['attack_images']} random "
              f"{result['sizes']['image']}-px images, each searching with the copy a bf16 "
              "evaluation gives it; overhead = bare forwards/s of that copy at the attack's "
              "mean batch / the attack's forwards/s - 1.", "",
              "| attack | search | run | forwards | s | forwards/s | bare forwards/s (batch) "
              "| overhead |", "|---|---|---|---|---|---|---|---|"]
    for r in result["attacks"]:
        run = next((f"{r[k]} {k.split('_')[1]}" for k in ("spsa_steps", "boundary_iterations")
                    if k in r), "suite budget")
        if "error" in r:
            lines.append(f"| {r['attack']} | {r['search']} | failed: {r['error']} | | | | | |")
        elif "forwards_per_second" in r:
            lines.append(f"| {r['attack']} | {r['search']} | {run} | {r['forwards']:.0f} | "
                         f"{r['seconds']:.2f} | {r['forwards_per_second']:.1f} | "
                         f"{r['bare_forwards_per_second']:.1f} ({r['mean_batch']}) | "
                         f"{100 * r['overhead']:.1f}% |")
        else:
            lines.append(f"| {r['attack']} | {r['search']} | {run} | 0 | {r['seconds']:.2f} "
                         "| - | - | - |")
    total = result["projection"]["total_seconds"]
    lines += ["", f"Projected full warm-up (upper-bound forwards, "
              f"{result['projection']['total_forwards']:,}): "
              + ("unknown" if total is None else f"{total / 3600:.2f} h") + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    parser.add_argument("--dry-run", action="store_true",
                        help="the same code on the CPU with tiny sizes")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the cuda tests")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU, or with --dry-run",
              file=sys.stderr)
        return 2
    sizes = DRY if args.dry_run else GPU
    device = torch.device("cpu" if args.dry_run else "cuda")
    if args.dry_run:
        torch.set_num_threads(1)  # tiny tensors: thread start-up would dominate
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    command = "python benchmarks/gpu_check.py" + " ".join(
        [""] + [a for a in (argv if argv is not None else sys.argv[1:]) if a])
    result: dict[str, Any] = {"dry_run": args.dry_run, "sizes": asdict(sizes),
                              "command": command.strip()}
    result["environment"] = environment(device, args.out)
    result["tests"] = None if args.skip_tests else cuda_tests(args.out, sizes.test_seconds)
    result["attacks"] = attacks(sizes, device, args.dry_run)
    result["projection"] = projection(result["attacks"])
    result["inference"], result["compile_skipped"] = inference(
        sizes, device, args.dry_run, not args.no_compile, start + BUDGET_SECONDS)
    result["seconds"] = time.perf_counter() - start
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
