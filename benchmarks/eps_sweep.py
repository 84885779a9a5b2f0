"""White-box robust accuracy of the demo's models against the radius, L-inf and L2.

For each model of ``llrnet demo`` and each eps: llrnet's PGD (cross-entropy, step
2.5 eps / steps, random start, restarts keeping the worst) on the 108 test digits
through the challenge view, accuracy at 80% and 100% coverage, both after the demo
suite's random spatial stage (the per-image draws of ``spsa_with_random_spatial``
for L-inf, of ``boundary_with_random_spatial`` for L2) and without it. Prints
markdown tables, writes ``eps_sweep.json`` to ``--out`` and the figure to
``--plot``::

    python benchmarks/eps_sweep.py --demo demo_out --out sweep --plot docs/eps_sweep.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import write_section
from peer_check import (
    BOUNDARY_COLUMN,
    MODELS,
    SPSA_COLUMN,
    Setup,
    command_line,
    score,
    spatial_stage,
    start,
    white_box,
)

LINF_EPS = "0,0.05,0.1,0.15,0.2,0.25,0.3"
L2_EPS = "0,0.5,1,1.5,2,3,4"
NORMS = {"linf": ("L-inf", SPSA_COLUMN), "l2": ("L2", BOUNDARY_COLUMN)}
SECTION = "eps_sweep"


def sweep(setup: Setup, name: str, radii: dict[str, list[float]], steps: int,
          restarts: int) -> list[dict[str, Any]]:
    """Rows (norm, spatial, eps, acc@80, acc@100) of model ``name``; eps 0 is the clean
    (or spatially moved) images unattacked."""
    model = setup.models[name]
    rows = []
    for norm, (_, column) in NORMS.items():
        for spatial in (True, False):
            start = spatial_stage(setup, model, column) if spatial else setup.x
            for eps in radii[norm]:
                adv = white_box(setup, model, start, eps, norm, steps, restarts,
                                f"eps_sweep_{norm}_{spatial}")
                rows.append({"model": name, "norm": norm, "spatial": spatial, "eps": eps,
                             **score(model, adv, setup.y)})
    return rows


def tables(rows: Sequence[dict[str, Any]]) -> str:
    """One markdown table per (norm, spatial stage): models x eps, ``acc@80 / acc@100`` %."""
    out = []
    models = list(dict.fromkeys(r["model"] for r in rows))
    for norm, (label, _) in NORMS.items():
        for spatial in (True, False):
            mine = [r for r in rows if r["norm"] == norm and r["spatial"] == spatial]
            radii = list(dict.fromkeys(r["eps"] for r in mine))
            title = f"{label} PGD, " + ("after the random spatial stage" if spatial
                                        else "no spatial stage")
            lines = [f"**{title}** (accuracy % at 80% / 100% coverage)", "",
                     "| model | " + " | ".join(f"eps {e:g}" for e in radii) + " |",
                     "|---|" + "---|" * len(radii)]
            for model in models:
                cells = {r["eps"]: r for r in mine if r["model"] == model}
                lines.append(f"| {model} | " + " | ".join(
                    f"{100 * cells[e]['acc@80']:.1f} / {100 * cells[e]['acc@100']:.1f}"
                    for e in radii) + " |")
            out.append("\n".join(lines))
    return "\n\n".join(out)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Accuracy at 80% coverage (solid) and 100% (dotted) against eps, one panel per
    (norm, spatial stage), one colour per model."""
    from llrnet.eval.report import pyplot, save_figure

    figure, axes = pyplot().subplots(2, 2, figsize=(8.5, 6.0), sharey=True)
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = {m: f"C{i}" for i, m in enumerate(models)}
    for i, (norm, (label, _)) in enumerate(NORMS.items()):
        for j, spatial in enumerate((True, False)):
            axis = axes[i][j]
            for model in models:
                mine = [r for r in rows if r["model"] == model and r["norm"] == norm
                        and r["spatial"] == spatial]
                radii = [r["eps"] for r in mine]
                axis.plot(radii, [100 * r["acc@80"] for r in mine], "-o", markersize=3,
                          color=colours[model], label=f"{model} @80%")
                axis.plot(radii, [100 * r["acc@100"] for r in mine], ":", color=colours[model],
                          label=f"{model} @100%")
            axis.set_title(f"{label} PGD, " + ("after random spatial" if spatial
                                               else "no spatial stage"), fontsize=9)
            axis.set_xlabel(f"{label} eps", fontsize=8)
            axis.grid(alpha=0.3)
        axes[i][0].set_ylabel("robust accuracy %", fontsize=8)
    axes[0][1].legend(fontsize=6, ncol=2)
    figure.tight_layout()
    save_figure(figure, path, dpi=80)
    from PIL import Image

    with Image.open(path) as image:  # a 64-colour palette: a quarter of the bytes
        small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--demo", type=Path, help="the folder of `llrnet demo --out`")
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON")
    parser.add_argument("--plot", type=Path, help="the figure (PNG); default <out>/eps_sweep.png")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--images", type=int, default=108, help="first test images")
    parser.add_argument("--seed", type=int, default=0, help="the demo evaluation's seed")
    parser.add_argument("--linf-eps", default=LINF_EPS, help="comma-separated L-inf radii")
    parser.add_argument("--l2-eps", default=L2_EPS, help="comma-separated L2 radii")
    parser.add_argument("--steps", type=int, default=20, help="PGD steps")
    parser.add_argument("--restarts", type=int, default=1, help="PGD restarts")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--doc", action="store_true",
                        help="also write the tables into docs/benchmarks.md")
    parser.add_argument("--dry-run", action="store_true",
                        help="seconds: a tiny linear model, 8 images, 3 radii, 5 steps")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.images, args.steps, args.restarts = min(args.images, 8), 5, 1
        args.linf_eps, args.l2_eps = "0,0.1,0.3", "0,1,4"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    setup, machine = start(args)
    radii = {"linf": [float(e) for e in args.linf_eps.split(",")],
             "l2": [float(e) for e in args.l2_eps.split(",")]}
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in setup.models:
        rows += sweep(setup, name, radii, args.steps, args.restarts)
        print(f"{name}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    markdown = tables(rows)
    command = command_line("eps_sweep.py", argv)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eps_sweep.json").write_text(json.dumps({
        "machine": machine, "command": command, "images": len(setup.indices),
        "seed": setup.seed, "steps": args.steps, "restarts": args.restarts,
        "weights": setup.weights, "seconds": time.perf_counter() - started, "rows": rows,
    }, indent=1) + "\n")
    plot(rows, args.plot or args.out / "eps_sweep.png")
    print(markdown)
    if args.doc and not args.dry_run:
        write_section(SECTION, f"{machine}.\n\n`{command}`\n\n{markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
