"""Reporting an evaluation: the terminal table, the plots and the JSON files; it formats
and writes what :mod:`llrnet.eval.metrics` computed (docs/evaluation.md, "Outputs")."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from llrnet.core.fileio import atomic_path, atomic_write_json
from llrnet.eval.metrics import predictions

RESULTS = "results.json"
CONFIG = "config.json"
RISK_COVERAGE = "risk_coverage.png"
EXAMPLES = "examples.png"


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


BOUND_LABEL = "{} (white-box bound)"
"""How a white-box bound is named in the table and the plot, after its attack."""


def _cells(name: str, record: Mapping[str, Any]) -> list[str]:
    return [
        name,
        _fmt(100 * record["accuracy@80"], ".1f"),
        _fmt(100 * record["accuracy@100"], ".1f"),
        str(record["images"]),
        _fmt(record.get("model_evaluations_per_image"), ".1f"),
        _fmt(record.get("wall_time"), ".1f") + "s",
    ]


def _budget_cell(record: Mapping[str, Any]) -> str:
    check = record.get("budget_check")
    if check is None:
        return "-"
    verdict = "converged" if check["converged"] else "NOT CONVERGED"
    return f"{verdict} (x{check['factor']})"


def format_table(attacks: Mapping[str, Mapping[str, Any]]) -> str:
    """A leaderboard-style table (one row per attack, accuracy in percent).

    An attack's white-box bound (``white_box_bound``) is a row under it; a
    ``budget check`` column appears when some attack has a ``budget_check``
    (``NOT CONVERGED`` when more budget lowered its accuracy). Lines under the
    table say when unreadable images were skipped (``skipped_images``) and
    why bounds were skipped.
    """
    header = ["attack", "acc@80%", "acc@100%", "images", "evals/img", "time"]
    checked = any("budget_check" in record for record in attacks.values())
    if checked:
        header.append("budget check")
    rows = [header]
    skipped_bounds: set[str] = set()
    for name, record in attacks.items():
        rows.append(_cells(name, record) + ([_budget_cell(record)] if checked else []))
        bound = record.get("white_box_bound") or {}
        if "accuracy@80" in bound:
            rows.append(_cells(BOUND_LABEL.format(name), bound) + (["-"] if checked else []))
        elif "skipped" in bound:
            skipped_bounds.add(str(bound["skipped"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join(cells)

    rule = "  ".join("-" * w for w in widths)
    lines = [line(rows[0]), rule, *(line(row) for row in rows[1:])]
    skipped = max((int(r.get("skipped_images", 0)) for r in attacks.values()), default=0)
    if skipped:
        lines.append(f"({skipped} unreadable image(s) skipped, not scored: see results.json)")
    for reason in sorted(skipped_bounds):
        lines.append(f"(white-box bounds not run: {reason})")
    return "\n".join(lines)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    import matplotlib  # deferred: heavy, only when plotting

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # deferred: as above; after choosing the backend

    return plt


def draw_risk_coverage(axis: Any, curves: Mapping[str, Mapping[str, Any]]) -> None:
    """Risk against coverage on ``axis``, one line per label of ``curves`` (each a
    ``coverage_curve`` record of results.json), with the 80% coverage marked."""
    for label, curve in curves.items():
        axis.plot(curve["coverage"], curve["risk"], label=label)
    axis.axvline(0.8, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("coverage")
    axis.set_xlim(0, 1)
    # The nominal count makes risk exceed 1 at tiny coverages of small sets
    # (k = int(coverage * N) = 0 covers everything); clip the view, not the data.
    axis.set_ylim(0, 1.05)
    axis.grid(alpha=0.3)


RISK_LABEL = "risk (errors / (N x coverage))"
"""The y-axis label of risk-coverage plots."""


def save_figure(figure: Any, path: Path, *, dpi: int) -> None:
    """Write ``figure`` as a PNG at ``path`` (atomically) and close it."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(figure)


def plot_risk_coverage(attacks: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Risk (errors / (N * coverage)) against coverage, one curve per attack and per
    white-box bound."""
    figure, axis = pyplot().subplots(figsize=(6, 4.5))
    curves = {}
    for name, record in attacks.items():
        curves[name] = record["coverage_curve"]
        bound = record.get("white_box_bound") or {}
        if "coverage_curve" in bound:
            curves[BOUND_LABEL.format(name)] = bound["coverage_curve"]
    draw_risk_coverage(axis, curves)
    axis.set_ylabel(RISK_LABEL)
    axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path, dpi=120)


CELL = 112
"""Side of one image tile in ``examples.png`` (pixels)."""
CAPTION = 28


def _tile(image: torch.Tensor) -> Image.Image:
    array = (image.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    tile = Image.fromarray(array[0]) if array.shape[0] == 1 else \
        Image.fromarray(array.transpose(1, 2, 0))
    return tile.convert("RGB").resize((CELL, CELL), Image.Resampling.NEAREST)


def plot_examples(
    clean: torch.Tensor,
    labels: torch.Tensor,
    rows: Mapping[str, tuple[torch.Tensor, np.ndarray]],
    path: Path,
    class_names: Sequence[str] | None = None,
) -> None:
    """A grid: the clean inputs on top, then one row per attack, one column per image.

    ``clean`` [m, C, H, W] and ``labels`` [m] are the first images; ``rows`` maps
    attack name -> (its images [m', C, H, W], its logits [m', K]). Captions show
    the prediction and confidence (max logit), green when right, red when wrong.
    Drawn with Pillow (fast; no plotting library needed).
    """
    columns = len(clean)
    step = CELL + CAPTION
    canvas = Image.new("RGB", (columns * (CELL + 4), (len(rows) + 1) * step), "white")
    draw = ImageDraw.Draw(canvas)

    def name(c: int) -> str:
        return class_names[c] if class_names and c < len(class_names) else str(c)

    for j in range(columns):
        draw.text((j * (CELL + 4) + 2, 2), f"input\ntrue {name(int(labels[j]))}", fill="black")
        canvas.paste(_tile(clean[j]), (j * (CELL + 4), CAPTION))
    for i, (attack, (images, logits)) in enumerate(rows.items(), start=1):
        predicted = predictions(logits)
        for j in range(min(columns, len(images))):
            ok = int(predicted[j]) == int(labels[j])
            caption = f"{attack}\n{name(int(predicted[j]))} ({float(logits[j].max()):.2f})"
            draw.text((j * (CELL + 4) + 2, i * step + 2), caption,
                      fill=(0, 128, 0) if ok else (200, 0, 0))
            canvas.paste(_tile(images[j]), (j * (CELL + 4), i * step + CAPTION))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def write_results(out_dir: Path, summary: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Write ``results.json``, ``config.json`` and the risk-coverage plot."""
    atomic_write_json(out_dir / RESULTS, summary)
    atomic_write_json(out_dir / CONFIG, config)
    plot_risk_coverage(summary["attacks"], out_dir / RISK_COVERAGE)
