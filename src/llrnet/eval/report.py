"""Results of an evaluation: per-attack summaries, the terminal table, plots, JSON.
More: docs/evaluation.md, "llrnet.eval.report"."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from llrnet.core.fileio import atomic_path, atomic_write_json
from llrnet.eval.metrics import accuracy_at_coverage, coverage_curve, predictions

RESULTS = "results.json"
CONFIG = "config.json"
RISK_COVERAGE = "risk_coverage.png"
EXAMPLES = "examples.png"


def error_indices(logits: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                  coverage: float) -> list[int]:
    """Global indices of covered, misclassified images at ``coverage`` (the challenge's
    rule: see docs/challenge.md)."""
    conf = logits.max(axis=1)
    ordered = np.sort(conf)[::-1]
    threshold = ordered[int(coverage * len(conf)) - 1]
    wrong = (conf >= threshold) & (predictions(logits) != labels)
    return sorted(int(i) for i in indices[wrong])


def summarize_attack(
    logits: np.ndarray,
    labels: np.ndarray,
    indices: np.ndarray,
    *,
    kind: str,
    model_evaluations: float | None,
    wall_time: float,
) -> dict[str, Any]:
    """The results.json record of one attack.

    ``logits`` [n, K] on the attack's final images, ``labels`` and global
    ``indices`` [n], both in index order.
    """
    count = len(labels)
    curve = coverage_curve(logits, labels)
    record: dict[str, Any] = {
        "kind": kind,
        "images": count,
        "accuracy@80": accuracy_at_coverage(logits, labels, 0.8),
        "accuracy@100": accuracy_at_coverage(logits, labels, 1.0),
        "error_indices": error_indices(logits, labels, indices, 1.0),
        "error_indices@80": error_indices(logits, labels, indices, 0.8),
        "wall_time": wall_time,
        "model_evaluations": model_evaluations,
        "model_evaluations_per_image": (
            None if model_evaluations is None else model_evaluations / count
        ),
        "coverage_curve": curve.as_dict(),
    }
    return record


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_table(attacks: Mapping[str, Mapping[str, Any]]) -> str:
    """A leaderboard-style table (one row per attack, accuracy in percent), with a
    line under it when unreadable images were skipped (``skipped_images``)."""
    header = ("attack", "acc@80%", "acc@100%", "images", "evals/img", "time")
    rows = [header]
    for name, record in attacks.items():
        rows.append((
            name,
            _fmt(100 * record["accuracy@80"], ".1f"),
            _fmt(100 * record["accuracy@100"], ".1f"),
            str(record["images"]),
            _fmt(record.get("model_evaluations_per_image"), ".1f"),
            _fmt(record.get("wall_time"), ".1f") + "s",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join(cells)

    rule = "  ".join("-" * w for w in widths)
    lines = [line(rows[0]), rule, *(line(row) for row in rows[1:])]
    skipped = max((int(r.get("skipped_images", 0)) for r in attacks.values()), default=0)
    if skipped:
        lines.append(f"({skipped} unreadable image(s) skipped, not scored: see results.json)")
    return "\n".join(lines)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

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
    """Risk (errors / (N * coverage)) against coverage, one curve per attack."""
    figure, axis = pyplot().subplots(figsize=(6, 4.5))
    draw_risk_coverage(axis, {name: record["coverage_curve"] for name, record in attacks.items()})
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
