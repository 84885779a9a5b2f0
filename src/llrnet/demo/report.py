"""The demo's report: the leaderboard table, each model's cost and ``report.md``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llrnet.demo.recipe import (
    CHECK_BUDGET,
    CHECK_IMAGES,
    FULL_IMAGES,
    MODELS,
    PGD_EPS,
    PGD_STEPS,
    QUICK_IMAGES,
    QUICK_SUITE_OPTIONS,
    SUITE_OPTIONS,
)

REPORT = "report.md"
TABLE = "table.txt"
RISK_COVERAGE = "risk_coverage.png"
TRAINING_CURVES = "training_curves.png"
EXAMPLES = "adversarial_examples.png"
SPATIAL_WORST = "spatial_worst.png"
COST = "cost.json"


BOUND = " (white-box bound)"
"""Suffix of a black-box column's white-box bound column."""


def _columns(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Every attack in order, each black-box attack followed by its bound's column."""
    columns: list[str] = []
    for records in results.values():
        for attack, record in records.items():
            if attack not in columns:
                columns.append(attack)
            if "accuracy@80" in record.get("white_box_bound", {}) and \
                    attack + BOUND not in columns:
                columns.append(attack + BOUND)
    return columns


def _record(records: dict[str, dict[str, Any]], column: str) -> dict[str, Any] | None:
    """A column's record: the attack's, or for a bound column its attack's bound."""
    if column.endswith(BOUND):
        return records.get(column.removesuffix(BOUND), {}).get("white_box_bound")
    return records.get(column)


def _cell(record: dict[str, Any] | None) -> str:
    if record is None or "accuracy@80" not in record:
        return "-"
    cell = f"{100 * record['accuracy@80']:.1f} / {100 * record['accuracy@100']:.1f}"
    check = record.get("budget_check")
    if check is not None:
        cell += " ✓" if check["converged"] else " ✗"
    return cell


def leaderboard(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table: one row per model, one column per attack and one per white-box
    bound; each cell is ``accuracy@80 / accuracy@100`` in percent, marked ✓ when the
    convergence check at a larger budget held it and ✗ when it did not."""
    columns = _columns(results)
    header = "| model | " + " | ".join(columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    rows = []
    for model, records in results.items():
        cells = [_cell(_record(records, column)) for column in columns]
        rows.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *rows])


def budget_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table of the convergence check: per model and budgeted attack, accuracy@80
    at the suite's budget and with the rechecked images at the larger budget, and how many
    of the rechecked images flipped."""
    attacks: list[str] = []
    for records in results.values():
        attacks += [a for a, r in records.items() if "budget_check" in r and a not in attacks]
    if not attacks:
        return ""
    lines = ["| model | " + " | ".join(attacks) + " |", "|---|" + "---|" * len(attacks)]
    for model, records in results.items():
        cells = []
        for attack in attacks:
            check = records.get(attack, {}).get("budget_check")
            if check is None:
                cells.append("-")
                continue
            cells.append(f"{100 * check['accuracy@80']:.1f} -> "
                         f"{100 * check['scaled_accuracy@80']:.1f} "
                         f"({len(check['flipped'])}/{check['images']} flipped)"
                         + ("" if check["converged"] else " NOT CONVERGED"))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    budgets = QUICK_SUITE_OPTIONS if quick else SUITE_OPTIONS
    lines = [
        "# llrnet demo: standard, PGD, LLR and the two-stage LLR -> adversarial recipe",
        "",
        "Four models of the same architecture (WRN-10-1 softplus) trained on the bundled "
        "digits, then attacked with the evaluation kit's `digits` suite (SPSA "
        f"{budgets['spsa_steps']} steps of {budgets['spsa_samples']} probes, Boundary "
        f"{budgets['boundary_iterations']} iterations of {budgets['boundary_directions']} "
        f"candidates) plus white-box L-inf PGD at eps {PGD_EPS} ({PGD_STEPS} steps), every "
        "attack on all "
        f"{QUICK_IMAGES if quick else FULL_IMAGES} test images (6 vs 7). Cells: accuracy "
        "(%) at 80% coverage (the 80% most confident images; a model abstains through "
        "small logits) / at 100% coverage. Beside each black-box column, its white-box "
        "bound: a gradient attack in the same threat model after the same random spatial "
        "transform (L-inf PGD in SPSA's ball, L2 PGD in Boundary's), which caps what the "
        "black-box column can claim. ✓ / ✗: the convergence check (below) held the number "
        "/ lowered it."
        + (" **Quick mode**: a few steps and images, numbers are not meaningful." if quick
           else ""),
        "",
        table,
        "",
        f"## Convergence check ({CHECK_BUDGET}x budget)",
        "",
        f"Each budgeted attack re-run at {CHECK_BUDGET} times its budget on up to "
        f"{CHECK_IMAGES} of the images it left correct, with the same per-image seeds: "
        "accuracy@80 at the suite's budget -> with those images' results at the larger "
        "budget. NOT CONVERGED: it dropped by more than max(2 points, 1 image), so the "
        "column overstates robustness.",
        "",
        budget_table(results),
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


