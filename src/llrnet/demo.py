"""The main demo (``llrnet demo``, what ``make demo`` runs): train, evaluate, report.

It sits at the package top level because it uses both halves of llrnet:
:mod:`llrnet.train` for the models and :mod:`llrnet.eval` (the runner and the
report's plotting helpers) for their evaluation.

On the bundled two-class digits it trains four models of the same small
architecture (:data:`MODELS`): three single-stage baselines (presets
``digits_standard``, ``digits_pgd``, ``digits_llr``) and the released model's
recipe in miniature, ``llr_adv``: LLR pre-training on the ten-class digits
(``digits10_llr``, the stand-in for ``imagenet_resnet152_llr4``), then
adversarial fine-tuning of that trunk with the bird-or-bicycle head, worst-of-k
spatial training and L-inf PGD (``digits_llr_adv``, the stand-in for
``bird_or_bicycle_adv``). Each stage is an ordinary training run of its preset,
the code path a GPU user runs at full scale; a later stage starts from the
previous stage's final weights (``model.init_weights``). Every model is
evaluated with the evaluation kit's ``digits`` suite plus white-box L-inf PGD
at :data:`PGD_EPS` (:func:`demo_suite`), every attack on all 108 test images,
and ``out_dir`` receives:

* ``report.md``: the leaderboard-style table (accuracy at 80% and 100% coverage
  per attack and model), each model's recipe and training cost, the figures
  below and where everything came from;
* ``table.txt``: the same table as plain text;
* ``risk_coverage.png``: risk-coverage curves of every model under every attack;
* ``training_curves.png``: loss (and LLR's gamma) against the step;
* ``adversarial_examples.png``: the evaluation kit's example grid of each model
  (clean image, then each attack's image with the prediction), stacked;
* ``spatial_worst.png``: the spatial grid's worst transform of the first test
  images for ``llr_adv``, with its prediction and confidence;
* ``<model>/train`` (the final stage's run), ``<model>/<preset>`` (earlier
  stages), ``<model>/cost.json`` and ``<model>/eval`` (the evaluation).

The work is a set of tasks run by ``jobs`` worker processes (one torch thread
each by default): each model's training (all its stages, in order), then its
evaluation in :data:`EVAL_GROUPS` of attacks, each group a task of its own
that writes its attacks' chunks into the model's one evaluation folder;
training first, then the costliest ready evaluation (:func:`_next_task`), so
the workers finish close together. A last pass in this process gathers each
model's records from the chunks. Results do not depend on ``jobs`` (each
attack's images are seeded on their own). Both training and evaluation
resume, so rerunning after an interruption skips what is finished.
``quick=True`` (for tests) trains a few steps and evaluates a few images with
small attack budgets: seconds, not minutes.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from llrnet.core.allocator import keep_freed_memory
from llrnet.core.errors import RunError
from llrnet.core.fileio import atomic_path, atomic_write_text
from llrnet.core.paths import output_folder
from llrnet.eval.report import RISK_LABEL, draw_risk_coverage, pyplot, save_figure
from llrnet.train import RunDir, load_config, train
from llrnet.train.logging import read_metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoModel:
    """One row of the demo: presets trained in order, and the recipe in one line.

    Each stage after the first starts from the previous stage's final weights
    (``model.init_weights``; the stage's preset decides what is re-initialized).
    """

    stages: tuple[str, ...]
    recipe: str


#: Display name -> model, in table order.
MODELS: dict[str, DemoModel] = {
    "standard": DemoModel(("digits_standard",), "cross-entropy on clean two-class digits"),
    "pgd": DemoModel(("digits_pgd",), "PGD-3 adversarial training at eps 0.1"),
    "llr": DemoModel(("digits_llr",), "LLR (2 inner steps) at eps 0.1"),
    "llr_adv": DemoModel(("digits10_llr", "digits_llr_adv"),
                         "LLR pre-training on ten-class digits (eps 0.1), then from that "
                         "trunk: sigmoid bird head, a quarter of the images at lowered "
                         "contrast, worst-of-8 rotations/translations, then PGD-3 at "
                         "eps 0.15, BCE with a logit margin of 1"),
}

#: Overrides of the quick mode: a handful of steps, no checkpoints in between.
QUICK_OVERRIDES = ("steps=4", "checkpoint_every=4", "log_every=1", "data.eval_images=16",
                   "eval.steps=2")
QUICK_IMAGES = 4
FULL_IMAGES = 108  # the whole test split of the two-class digits: every attack runs on all
PGD_EPS = 0.1  # the baselines' training radius; the same for every row
PGD_STEPS = 20
QUICK_SUITE_OPTIONS = {"spsa_steps": 2, "spsa_samples": 2, "boundary_iterations": 2,
                       "boundary_directions": 2}
#: The demo suite's attacks in the groups that worker processes evaluate side by side,
#: costliest first (the order in which ready groups are taken). Measured per model
#: (docs/benchmarks.md): Boundary ~40% of an evaluation, SPSA ~30%, the grid ~20%.
EVAL_GROUPS: tuple[tuple[str, ...], ...] = (
    ("boundary_with_random_spatial",),
    ("spsa_with_random_spatial",),
    ("spatial_grid",),
    ("clean", "common_corruptions", "pgd_linf"),
)
#: How many test images the figure of the spatial grid's worst transforms shows.
SPATIAL_FIGURE_IMAGES = 16

REPORT = "report.md"
TABLE = "table.txt"
RISK_COVERAGE = "risk_coverage.png"
TRAINING_CURVES = "training_curves.png"
EXAMPLES = "adversarial_examples.png"
SPATIAL_WORST = "spatial_worst.png"
COST = "cost.json"


@dataclass
class DemoResult:
    """What :func:`run_demo` returns: the report path, the table, per-model results."""

    out_dir: Path
    report: Path
    table: str
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def demo_suite(eps: float = PGD_EPS, *, quick: bool) -> Any:
    """The evaluation kit's ``digits`` suite plus white-box L-inf PGD at ``eps``.

    Every attack runs on every image the evaluation is given (all 108 test
    images; Boundary too). PGD: 20 steps of 2.5 eps / 20. Quick mode cuts every
    budget to a token size.
    """
    from llrnet.attacks import PGD
    from llrnet.eval import Suite, SuiteEntry, get_suite

    images = QUICK_IMAGES if quick else FULL_IMAGES
    budgets = QUICK_SUITE_OPTIONS if quick else {}
    digits = get_suite("digits", boundary_images=images, **budgets)
    entries = list(digits.entries)
    steps = 2 if quick else PGD_STEPS
    entries.append(SuiteEntry("pgd_linf", PGD(eps, steps, 2.5 * eps / steps), kind="white_box"))
    return Suite(name="demo_digits", entries=tuple(entries),
                 options={**digits.options, "images": images, "pgd_eps": eps,
                          "pgd_steps": steps},
                 batch_size=digits.batch_size, shuffle=digits.shuffle)


def _stage_dir(out: Path, name: str, index: int, preset: str) -> Path:
    stages = MODELS[name].stages
    return out / name / ("train" if index == len(stages) - 1 else preset)


def _train_one(name: str, out: Path, quick: bool, progress: bool, seed: int) -> Path:
    """Train every stage of model ``name`` (skipping finished ones); the final weights."""
    cost_path = out / name / COST
    cost: dict[str, Any] = (json.loads(cost_path.read_text()) if cost_path.is_file()
                            else {"stages": {}})
    weights: Path | None = None
    for index, preset in enumerate(MODELS[name].stages):
        overrides = [f"seed={seed}", *(QUICK_OVERRIDES if quick else ())]
        if weights is not None:
            overrides.append(f"model.init_weights={weights}")
        config = load_config(preset, overrides)
        run = RunDir(_stage_dir(out, name, index, preset))
        if run.is_finished():
            logger.info("%s: %s already trained (%s)", name, preset, run.final_weights)
            weights = run.final_weights
            continue
        logger.info("%s: training %s, %d steps (task %s)", name, preset, config.steps,
                    config.task.name)
        from llrnet.train.setup import build_task

        started = time.perf_counter()
        result = train(config, run.path, resume=True, progress=progress)
        if result.weights is None:
            raise RunError(f"{name}: {preset} stopped at step {result.step} without final "
                           "weights")
        passes = build_task(config.task).passes_per_step()
        cost["stages"][preset] = {
            "wall_s": time.perf_counter() - started, "steps": config.steps,
            "batch_size": config.batch_size,
            "forward_backward": config.steps * passes.forward_backward,
            "forward_only": config.steps * passes.forward_only,
        }
        atomic_write_text(cost_path, json.dumps(cost, indent=1) + "\n")
        weights = result.weights
    assert weights is not None
    return weights


def _evaluate_one(name: str, weights: Path, out: Path, quick: bool, progress: bool,
                  seed: int, attacks: tuple[str, ...] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Evaluate model ``name`` on ``attacks`` of the demo suite (None: all), resuming."""
    from llrnet.data import two_class_digits
    from llrnet.eval import evaluate
    from llrnet.models import load_weights

    model = load_weights(weights)
    config = load_config(MODELS[name].stages[-1])
    dataset = two_class_digits("test", size=config.data.size)
    logger.info("%s: evaluating %s", name, ", ".join(attacks) if attacks else "every attack")
    return evaluate(model, demo_suite(quick=quick), dataset,
                    out_dir=out / name / "eval", seed=seed, attacks=attacks,
                    max_images=QUICK_IMAGES if quick else FULL_IMAGES, progress=progress,
                    class_names=[str(c) for c in dataset.classes])


@dataclass(frozen=True)
class _Task:
    """One unit of a worker's work: train model ``name`` (every stage), or evaluate
    it on group ``group`` of :data:`EVAL_GROUPS`."""

    name: str
    group: int | None = None  # None: training


def _run_task(task: _Task, out: Path, quick: bool, progress: bool, seed: int) -> None:
    weights = _train_one(task.name, out, quick, progress, seed)
    if task.group is not None:
        _evaluate_one(task.name, weights, out, quick, progress, seed, EVAL_GROUPS[task.group])


def _start_worker(threads: int) -> None:
    """Initializer of a demo worker process: torch's threads (not inherited), malloc."""
    import torch

    keep_freed_memory()
    torch.set_num_threads(threads)


def _next_task(ready: list[_Task]) -> _Task:
    """Remove and return the task to start next: any training (it unblocks the
    evaluations), else the costliest evaluation group, the earliest model first."""
    best = min(ready, key=lambda t: -1 if t.group is None else t.group)
    ready.remove(best)
    return best


def _run_tasks(order: list[str], out: Path, quick: bool, progress: bool, jobs: int,
               threads: int, seed: int) -> None:
    """Train and evaluate the models of ``order`` (longest pipeline first) in ``jobs``
    worker processes (1: in this process), at most ``jobs`` tasks running at once."""
    ready = [_Task(name) for name in order]
    if jobs <= 1:
        while ready:
            task = _next_task(ready)
            _run_task(task, out, quick, progress, seed)
            if task.group is None:
                ready += [_Task(task.name, g) for g in range(len(EVAL_GROUPS))]
        return
    logger.info("training and evaluating %s in %d worker processes", ", ".join(order), jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                             initializer=_start_worker, initargs=(threads,)) as pool:
        running: dict[Future[None], _Task] = {}
        while ready or running:
            while ready and len(running) < jobs:
                task = _next_task(ready)
                running[pool.submit(_run_task, task, out, quick, False, seed)] = task
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                future.result()  # a worker's error stops the demo here
                if task.group is None:
                    logger.info("%s: trained", task.name)
                    ready += [_Task(task.name, g) for g in range(len(EVAL_GROUPS))]


def run_model(name: str, out: Path, quick: bool, progress: bool, seed: int = 0
              ) -> dict[str, dict[str, Any]]:
    """Train (every stage) and evaluate model ``name`` in this process, resuming: its
    results per attack."""
    weights = _train_one(name, out, quick, progress, seed)
    return _evaluate_one(name, weights, out, quick, progress, seed)


def leaderboard(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table: one row per model, one column per attack; each cell is
    ``accuracy@80 / accuracy@100`` in percent."""
    attacks: list[str] = []
    for records in results.values():
        attacks += [a for a in records if a not in attacks]
    header = "| model | " + " | ".join(attacks) + " |"
    rule = "|---|" + "---|" * len(attacks)
    rows = []
    for model, records in results.items():
        cells = []
        for attack in attacks:
            record = records.get(attack)
            cells.append("-" if record is None else
                         f"{100 * record['accuracy@80']:.1f} / {100 * record['accuracy@100']:.1f}")
        rows.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *rows])


def plot_risk_coverage_per_attack(results: dict[str, dict[str, dict[str, Any]]],
                                  path: Path) -> None:
    """One panel per attack, one risk-coverage curve per model."""
    attacks = list(next(iter(results.values())))
    figure, axes = pyplot().subplots(1, len(attacks), figsize=(3.2 * len(attacks), 3.2),
                                     squeeze=False)
    for axis, attack in zip(axes[0], attacks):
        draw_risk_coverage(axis, {model: records[attack]["coverage_curve"]
                                  for model, records in results.items() if attack in records})
        axis.set_title(attack, fontsize=9)
    axes[0][0].set_ylabel(RISK_LABEL)
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=110)


def plot_training_curves(run_dirs: dict[str, Path], path: Path) -> None:
    """Training loss of each model against the step, and LLR's gamma."""
    figure, (loss_axis, gamma_axis) = pyplot().subplots(1, 2, figsize=(9, 3.4))
    for model, run_dir in run_dirs.items():
        records = [r for r in read_metrics(run_dir) if r.get("loss") is not None]
        loss_axis.plot([r["step"] for r in records], [r["loss"] for r in records], label=model)
        gammas = [r for r in records if r.get("gamma") is not None]
        if gammas:
            gamma_axis.plot([r["step"] for r in gammas], [r["gamma"] for r in gammas],
                            label=f"{model} gamma")
    loss_axis.set_title("training loss (task's objective)", fontsize=9)
    gamma_axis.set_title("LLR: local linearity deviation gamma", fontsize=9)
    for axis in (loss_axis, gamma_axis):
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=110)


def stack_examples(images: dict[str, Path], path: Path) -> None:
    """The evaluation kit's example grids of each model, stacked with a caption."""
    from PIL import Image, ImageDraw

    tiles = {name: Image.open(p).convert("RGB") for name, p in images.items() if p.is_file()}
    if not tiles:
        return
    caption = 22
    width = max(t.width for t in tiles.values())
    height = sum(t.height + caption for t in tiles.values())
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for name, tile in tiles.items():
        draw.text((6, top + 5), f"model: {name}", fill="black")
        canvas.paste(tile, (0, top + caption))
        top += tile.height + caption
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def plot_spatial_worst(model: Any, images: Any, labels: Any, class_names: list[str],
                       path: Path) -> None:
    """The spatial grid's worst transform of each image for ``model``, with the prediction.

    Each pair of panels: the test image, then the grid transform the attack
    chose (the largest wrong-class margin), titled with the prediction and the
    confidence (the larger challenge logit; for a sigmoid bird head ``|l|``).
    """
    import torch

    from llrnet.eval import get_suite
    from llrnet.models import challenge_view

    grid = next(e.attack for e in get_suite("digits").entries if e.name == "spatial_grid")
    view = challenge_view(model).eval()
    with torch.no_grad():
        worst = grid(view, images, labels)
        logits = view(worst)
    confidence, predicted = logits.max(dim=1).values, logits.argmax(dim=1)
    n = images.shape[0]
    columns = min(n, 8)
    rows = -(-n // columns)
    figure, axes = pyplot().subplots(2 * rows, columns, figsize=(1.3 * columns, 2.9 * rows),
                                     squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for i in range(n):
        row, column = 2 * (i // columns), i % columns
        top, bottom = axes[row][column], axes[row + 1][column]
        top.imshow(images[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        top.set_title(f"label {class_names[int(labels[i])]}", fontsize=7)
        bottom.imshow(worst[i, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        ok = int(predicted[i]) == int(labels[i])
        bottom.set_title(f"{class_names[int(predicted[i])]} conf {float(confidence[i]):.2f}",
                         fontsize=7, color="black" if ok else "red")
    figure.suptitle("spatial grid: test image (top), worst of 275 transforms (bottom)",
                    fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=110)


def _spatial_figure(name: str, out: Path, quick: bool) -> None:
    from llrnet.data import two_class_digits
    from llrnet.models import load_weights

    dataset = two_class_digits("test")
    n = QUICK_IMAGES if quick else SPATIAL_FIGURE_IMAGES
    plot_spatial_worst(load_weights(out / name / "train" / "final.safetensors"),
                       dataset.images[:n], dataset.labels[:n],
                       [str(c) for c in dataset.classes], out / SPATIAL_WORST)


def _cost_line(out: Path, name: str) -> str:
    path = out / name / COST
    stages = json.loads(path.read_text())["stages"] if path.is_file() else {}
    parts = []
    for preset in MODELS[name].stages:
        record = stages.get(preset)
        if record is None:
            parts.append(f"`{preset}`: cost not recorded")
            continue
        parts.append(f"`{preset}` {record['steps']} steps of {record['batch_size']}, "
                     f"{record['wall_s']:.0f} s, {record['forward_backward']:,} "
                     "forward-backward passes"
                     + (f" + {record['forward_only']:,} forward-only" if record["forward_only"]
                        else ""))
    return "; ".join(parts)


def _report(out: Path, table: str, results: dict[str, dict[str, dict[str, Any]]],
            quick: bool, threads: int, jobs: int, seed: int) -> str:
    suite_names = {str(r.get("kind")) for records in results.values() for r in records.values()}
    lines = [
        "# llrnet demo: standard, PGD, LLR and the two-stage LLR -> adversarial recipe",
        "",
        "Four models of the same architecture (WRN-10-1 softplus) trained on the bundled "
        "digits, then attacked with the evaluation kit's `digits` suite plus white-box L-inf "
        f"PGD at eps {PGD_EPS} ({PGD_STEPS} steps), every attack on all "
        f"{QUICK_IMAGES if quick else FULL_IMAGES} test images (6 vs 7). Cells: accuracy "
        "(%) at 80% coverage (the 80% most confident images; a model abstains through "
        "small logits) / at 100% coverage."
        + (" **Quick mode**: a few steps and images, numbers are not meaningful." if quick
           else ""),
        "",
        table,
        "",
        f"Attack kinds evaluated: {', '.join(sorted(suite_names))}. Seed {seed}. Training "
        f"and evaluation ran with {threads} torch thread(s) per process in {jobs} worker "
        "process(es); the results are deterministic for a fixed seed and thread count.",
        "",
        "## Recipes and training cost",
        "",
        "Forward-backward passes count passes of a training batch through the model "
        "(attack and LLR inner steps included); forward-only passes are worst-of-k's "
        "selection. Wall time is each stage's training in this run (on a shared machine "
        "it varies).",
        "",
    ]
    for name, model in MODELS.items():
        lines.append(f"- `{name}`: {model.recipe}. Cost: {_cost_line(out, name)}.")
    lines += [
        "",
        "## Spatial grid: the worst transforms for `llr_adv`",
        "",
        f"![spatial grid worst transforms]({SPATIAL_WORST})",
        "",
        "## Risk-coverage curves",
        "",
        f"![risk-coverage]({RISK_COVERAGE})",
        "",
        "## Training curves",
        "",
        f"![training curves]({TRAINING_CURVES})",
        "",
        "## Adversarial examples",
        "",
        "First test images, clean and after each attack, with each model's prediction.",
        "",
        f"![examples]({EXAMPLES})",
        "",
        "## Where everything is",
        "",
    ]
    for name, model in MODELS.items():
        earlier = ", ".join(f"`{name}/{p}`" for p in model.stages[:-1])
        lines.append(f"- `{name}`: presets " + " -> ".join(f"`{p}`" for p in model.stages)
                     + (f"; earlier stages {earlier}" if earlier else "")
                     + f"; final run `{name}/train` (config.yaml, metrics.jsonl, "
                     f"final.safetensors); cost `{name}/{COST}`; evaluation `{name}/eval` "
                     "(results.json, risk_coverage.png, examples.png)")
    return "\n".join(lines) + "\n"


def run_demo(out_dir: str | Path = "demo_out", *, quick: bool = False,
             progress: bool = True, jobs: int = 1, threads: int | None = None,
             seed: int = 0) -> DemoResult:
    """Train, evaluate and report the four digits models into ``out_dir`` (resumable).

    ``jobs`` worker processes run the models' pipelines (:func:`run_model`) side by
    side (1: all in this process); ``threads`` is torch's CPU threads per process
    (None: this process's current setting). ``seed`` seeds every training stage
    (``seed=`` override) and the evaluation. Results do not depend on ``jobs``.
    """
    import torch

    out = output_folder(out_dir, what="demo output (--out)")
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads() if threads is None else threads
    torch.set_num_threads(threads)
    keep_freed_memory()
    # Longest pipeline first, so the workers finish close together.
    order = sorted(MODELS, key=lambda n: -len(MODELS[n].stages))
    _run_tasks(order, out, quick, progress, jobs, threads, seed)
    # Every chunk is on disk now: this gathers the records (and writes each model's
    # complete results.json and examples.png).
    results = {name: run_model(name, out, quick, False, seed) for name in MODELS}
    table = leaderboard(results)
    atomic_write_text(out / TABLE, table + "\n")
    plot_risk_coverage_per_attack(results, out / RISK_COVERAGE)
    plot_training_curves({name: out / name / "train" for name in MODELS}, out / TRAINING_CURVES)
    stack_examples({name: out / name / "eval" / "examples.png" for name in MODELS},
                   out / EXAMPLES)
    _spatial_figure("llr_adv", out, quick)
    report = out / REPORT
    atomic_write_text(report, _report(out, table, results, quick, threads, jobs, seed))
    return DemoResult(out, report, table, results)
