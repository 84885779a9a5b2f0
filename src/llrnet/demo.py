"""The main demo (``llrnet demo``, what ``make demo`` runs): train, evaluate, report.

It sits at the package top level because it uses both halves of llrnet:
:mod:`llrnet.train` for the models and :mod:`llrnet.eval` (the runner and the
report's plotting helpers) for their evaluation.

On the bundled two-class digits it trains three models of the same small
architecture (presets ``digits_standard``, ``digits_pgd``, ``digits_llr``),
evaluates each with the evaluation kit's ``digits`` suite plus white-box L-inf
PGD at the training radius (:func:`demo_suite`), and writes into ``out_dir``:

* ``report.md``: the leaderboard-style table (accuracy at 80% and 100% coverage
  per attack and model), the figures below and where everything came from;
* ``table.txt``: the same table as plain text;
* ``risk_coverage.png``: risk-coverage curves of every model under every attack;
* ``training_curves.png``: loss (and LLR's gamma) against the step;
* ``adversarial_examples.png``: the evaluation kit's example grid of each model
  (clean image, then each attack's image with the prediction), stacked;
* ``<model>/train`` (the training run) and ``<model>/eval`` (the evaluation).

Both training and evaluation resume, so rerunning after an interruption skips
what is finished. ``quick=True`` (for tests) trains a few steps and evaluates
a few images with small attack budgets: seconds, not minutes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llrnet.errors import RunError
from llrnet.eval.report import RISK_LABEL, draw_risk_coverage, pyplot, save_figure
from llrnet.fileio import atomic_path, atomic_write_text
from llrnet.paths import output_folder
from llrnet.train import RunDir, load_config, train
from llrnet.train.logging import read_metrics

logger = logging.getLogger(__name__)

#: Display name -> preset, in table order.
MODELS = {"standard": "digits_standard", "pgd": "digits_pgd", "llr": "digits_llr"}

#: Overrides of the quick mode: a handful of steps, no checkpoints in between.
QUICK_OVERRIDES = ("steps=4", "checkpoint_every=4", "log_every=1", "data.eval_images=16",
                   "eval.steps=2")
QUICK_IMAGES = 4
FULL_IMAGES = 108  # the whole test split of the two-class digits: PGD runs on all
SUITE_IMAGES = 24  # the digits suite's (slower) attacks run on the first 24
PGD_STEPS = 20
QUICK_SUITE_OPTIONS = {"spsa_steps": 2, "spsa_samples": 2, "boundary_iterations": 2,
                       "boundary_directions": 2, "boundary_images": 2}

REPORT = "report.md"
TABLE = "table.txt"
RISK_COVERAGE = "risk_coverage.png"
TRAINING_CURVES = "training_curves.png"
EXAMPLES = "adversarial_examples.png"


@dataclass
class DemoResult:
    """What :func:`run_demo` returns: the report path, the table, per-model results."""

    out_dir: Path
    report: Path
    table: str
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def demo_suite(eps: float, *, quick: bool) -> Any:
    """The evaluation kit's ``digits`` suite plus white-box L-inf PGD at ``eps``.

    The ``digits`` attacks (spatial grid, corruptions, SPSA and Boundary after
    random spatial) run on the first :data:`SUITE_IMAGES` test images to keep the
    demo in minutes on a CPU; PGD (20 steps, the training radius) runs on all of
    them. Quick mode cuts every budget to a token size.
    """
    from llrnet.attacks import PGD
    from llrnet.eval import Suite, SuiteEntry, get_suite

    budgets = QUICK_SUITE_OPTIONS if quick else {}
    digits = get_suite("digits", **budgets)
    cap = QUICK_IMAGES if quick else SUITE_IMAGES
    entries = [replace(e, max_images=min(e.max_images or cap, cap)) for e in digits.entries]
    steps = 2 if quick else PGD_STEPS
    entries.append(SuiteEntry("pgd_linf", PGD(eps, steps, 2.5 * eps / steps), kind="white_box"))
    return Suite(name="demo_digits", entries=tuple(entries),
                 options={**digits.options, "images": cap, "pgd_eps": eps, "pgd_steps": steps},
                 batch_size=digits.batch_size, shuffle=digits.shuffle)


def _train_one(name: str, preset: str, out: Path, quick: bool, progress: bool) -> Path:
    config = load_config(preset, QUICK_OVERRIDES if quick else ())
    run = RunDir(out / name / "train")
    if run.is_finished():
        logger.info("%s: already trained (%s)", name, run.final_weights)
        return run.final_weights
    logger.info("%s: training %d steps (%s, task %s)", name, config.steps, preset,
                config.task.name)
    result = train(config, run.path, resume=True, progress=progress)
    if result.weights is None:
        raise RunError(f"{name}: training stopped at step {result.step} without final weights")
    return result.weights


def _evaluate_one(name: str, weights: Path, out: Path, quick: bool,
                  progress: bool) -> dict[str, dict[str, Any]]:
    from llrnet.data import two_class_digits
    from llrnet.eval import evaluate
    from llrnet.models import load_weights

    model = load_weights(weights)
    config = load_config(MODELS[name])
    dataset = two_class_digits("test", size=config.data.size)
    logger.info("%s: evaluating", name)
    return evaluate(model, demo_suite(config.eval.eps, quick=quick), dataset,
                    out_dir=out / name / "eval", seed=0,
                    max_images=QUICK_IMAGES if quick else FULL_IMAGES, progress=progress,
                    class_names=[str(c) for c in dataset.classes])


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


def _report(out: Path, table: str, results: dict[str, dict[str, dict[str, Any]]],
            quick: bool) -> str:
    suite_names = {str(r.get("kind")) for records in results.values() for r in records.values()}
    lines = [
        "# llrnet demo: standard vs PGD vs LLR training on two-class digits",
        "",
        "Three models of the same architecture (presets "
        + ", ".join(f"`{p}`" for p in MODELS.values())
        + ") trained on the bundled digits (6 vs 7), then attacked with the evaluation "
        "kit. Cells: accuracy (%) at 80% coverage / at 100% coverage on the test split."
        + (" **Quick mode**: a few steps and images, numbers are not meaningful." if quick
           else ""),
        "",
        table,
        "",
        f"Attack kinds evaluated: {', '.join(sorted(suite_names))}.",
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
    for name, preset in MODELS.items():
        lines.append(f"- `{name}`: preset `{preset}`; run `{name}/train` (config.yaml, "
                     f"metrics.jsonl, final.safetensors); evaluation `{name}/eval` "
                     "(results.json, risk_coverage.png, examples.png)")
    return "\n".join(lines) + "\n"


def run_demo(out_dir: str | Path = "demo_out", *, quick: bool = False,
             progress: bool = True) -> DemoResult:
    """Train, evaluate and report the three digits models into ``out_dir`` (resumable)."""
    out = output_folder(out_dir, what="demo output (--out)")
    out.mkdir(parents=True, exist_ok=True)
    weights = {name: _train_one(name, preset, out, quick, progress)
               for name, preset in MODELS.items()}
    results = {name: _evaluate_one(name, path, out, quick, progress)
               for name, path in weights.items()}
    table = leaderboard(results)
    atomic_write_text(out / TABLE, table + "\n")
    plot_risk_coverage_per_attack(results, out / RISK_COVERAGE)
    plot_training_curves({name: out / name / "train" for name in MODELS}, out / TRAINING_CURVES)
    stack_examples({name: out / name / "eval" / "examples.png" for name in MODELS},
                   out / EXAMPLES)
    report = out / REPORT
    atomic_write_text(report, _report(out, table, results, quick))
    return DemoResult(out, report, table, results)
