"""The demo's report: the leaderboard table, each model's cost and ``report.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llrnet.demo.recipe import FULL_IMAGES, MODELS, PGD_EPS, PGD_STEPS, QUICK_IMAGES

REPORT = "report.md"
TABLE = "table.txt"
RISK_COVERAGE = "risk_coverage.png"
TRAINING_CURVES = "training_curves.png"
EXAMPLES = "adversarial_examples.png"
SPATIAL_WORST = "spatial_worst.png"
COST = "cost.json"


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


def report_text(out: Path, table: str, results: dict[str, dict[str, dict[str, Any]]],
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


