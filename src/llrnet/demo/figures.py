"""The demo's figures: risk-coverage per attack, training curves, examples, spatial worst."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from llrnet.core.fileio import atomic_path
from llrnet.data import two_class_digits
from llrnet.demo.recipe import QUICK_IMAGES
from llrnet.demo.report import SPATIAL_WORST
from llrnet.eval import get_suite
from llrnet.eval.report import RISK_LABEL, draw_risk_coverage, pyplot, save_figure
from llrnet.models import challenge_view, load_weights
from llrnet.train.logging import read_metrics

SPATIAL_FIGURE_IMAGES = 16

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


def spatial_figure(name: str, out: Path, quick: bool) -> None:
    dataset = two_class_digits("test")
    n = QUICK_IMAGES if quick else SPATIAL_FIGURE_IMAGES
    plot_spatial_worst(load_weights(out / name / "train" / "final.safetensors"),
                       dataset.images[:n], dataset.labels[:n],
                       [str(c) for c in dataset.classes], out / SPATIAL_WORST)


