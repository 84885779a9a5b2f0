"""The experiment behind the paper's claim: robustness against training cost, LLR vs PGD.

Qin et al. (2019) claim LLR reaches adversarial training's robustness with far
fewer inner steps. On the bundled two-class digits (6 vs 7, at :data:`SIZE` =
16 px and :data:`BATCH` = 32 images per step, whatever the presets' own size
and batch; otherwise the ``digits_*`` presets: WRN-10-1 softplus, 150 SGD
steps, eps warmed up over 30 steps) this trains, for several seeds, with
llrnet's own loop (:func:`llrnet.train.loop.train`):

* standard training;
* PGD-K adversarial training, K in {1, 2, 10} (step size 2.5 eps / K, and
  1.25 eps for K = 1 as in Wong et al.'s "fast" FGSM training; random start);
* LLR with S in {1, 2, 10} inner steps (the digits_llr preset's weights: w_nom 2,
  lambda 4, mu 0.3, inner Adam lr 0.1, unless ``--llr KEY=VALUE,...`` sets others,
  for example the ones the sweep chose).

``--sweep`` chooses the LLR weights first: LLR-2 and LLR-10 (or ``--configs``)
at each ``--eps`` with every weight setting of :data:`SWEEP`, trained on the
``fit`` split and scored on ``val`` (never the test split), every setting
with the first seed and the ``--top`` best again with every seed; the best is
the highest robust accuracy, averaged over the configurations and seeds, among
the settings with which no run collapsed (clean accuracy above
:data:`COLLAPSED`).

Each model is evaluated on the test split with a strong white-box attack: per
image the worst of L-inf PGD on cross-entropy (20 steps of 0.01, 2 random
restarts) and multi-targeted PGD on the margin (20 steps, 1 restart); sized
for a shared 2-core CPU (a tiny model: 20 steps of 0.01 travel twice eps). Cost is
measured: wall time of the training run and forward passes per step (a hook
counts images forwarded). For seed 0, a black-box SPSA attack (40 steps, 32
probes, on the first 36 test images) looks for gradient masking: images SPSA
breaks that the white-box attack did not.

CIFAR-10 (``--cifar10 ROOT``) is optional and not run by default: it needs a
local copy and a GPU-sized budget.

Each run's result is saved atomically as JSON under ``--out``; a rerun skips
finished runs (a killed experiment resumes). ``--write`` updates
docs/benchmarks.md and docs/llr_vs_adv.png.

Usage::

    .venv/bin/python benchmarks/llr_vs_adv.py [--eps 0.1,0.3] [--seeds 0,1,2] [--steps 150]
        [--configs standard,pgd-1,...] [--llr lam=1,mu=0.1] [--no-spsa]
        [--out runs/llr_vs_adv] [--write]
    .venv/bin/python benchmarks/llr_vs_adv.py --sweep --eps 0.2 [--seeds 0,1,2] [--top 3]
        [--write]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from common import machine_description, write_section
from torch import Tensor, nn

from llrnet.attacks import PGD, MultiTargetedPGD
from llrnet.attacks.spsa import SPSA
from llrnet.core.fileio import atomic_write_json
from llrnet.data import two_class_digits
from llrnet.train import config_from_dict, train
from llrnet.train.build import build_task
from llrnet.train.presets import preset_values

#: SPSA (black-box) runs on the first test images only: it costs 33 forwards per step.
SPSA_IMAGES = 36
#: Image side (px) and batch of every run, fixed here so results stay comparable when
#: the presets' own settings change.
SIZE = 16
BATCH = 32
#: A run whose clean accuracy is at most this is a (near-)constant classifier.
COLLAPSED = 0.6
#: The LLR weights the sweep tries (LLR-2): the preset's, then smaller lambda / mu, a
#: larger nominal weight, a smaller inner learning rate.
SWEEP: tuple[dict[str, float], ...] = (
    {"lam": 4.0, "mu": 0.3, "nominal_weight": 2.0, "lr": 0.1},
    {"lam": 1.0, "mu": 0.3, "nominal_weight": 2.0, "lr": 0.1},
    {"lam": 1.0, "mu": 0.03, "nominal_weight": 2.0, "lr": 0.1},
    {"lam": 0.25, "mu": 0.3, "nominal_weight": 2.0, "lr": 0.1},
    {"lam": 0.25, "mu": 0.03, "nominal_weight": 2.0, "lr": 0.1},
    {"lam": 1.0, "mu": 0.3, "nominal_weight": 4.0, "lr": 0.1},
    {"lam": 1.0, "mu": 0.3, "nominal_weight": 2.0, "lr": 0.02},
    {"lam": 4.0, "mu": 0.3, "nominal_weight": 2.0, "lr": 0.02},
)
ROOT = Path(__file__).resolve().parent.parent
PLOT = ROOT / "docs" / "llr_vs_adv.png"


def _pgd_options(k: int, eps: float) -> dict[str, Any]:
    return {"eps": eps, "steps": k, "step_size": 1.25 * eps if k == 1 else 2.5 * eps / k}


def _llr_options(s: int, eps: float) -> dict[str, Any]:
    return {"eps": eps, "steps": s}


def _standard_options(_k: int, _eps: float) -> dict[str, Any]:
    return {}


#: name -> (preset, task options as a function of (K or S, eps), analytic fwd-bwd per step)
CONFIGS: dict[str, tuple[str, Any, int, float]] = {
    "standard": ("digits_standard", _standard_options, 0, 1.0),
    "pgd-1": ("digits_pgd", _pgd_options, 1, 2.0),
    "pgd-2": ("digits_pgd", _pgd_options, 2, 3.0),
    "pgd-10": ("digits_pgd", _pgd_options, 10, 11.0),
    "llr-1": ("digits_llr", _llr_options, 1, 5.0),
    "llr-2": ("digits_llr", _llr_options, 2, 6.0),
    "llr-10": ("digits_llr", _llr_options, 10, 14.0),
}


class CountingTask:
    """Wraps a task: counts images forwarded through the model during task calls."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.images = 0
        self.steps = 0
        self.model: nn.Module | None = None
        self._inside = False

    def _hook(self, _module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        if self._inside:  # not the loop's own evaluation passes
            self.images += int(inputs[0].shape[0])

    def __call__(self, model: nn.Module, batch: tuple[Tensor, Tensor], step: int
                 ) -> dict[str, Tensor]:
        if self.model is None:
            self.model = model
            model.register_forward_pre_hook(self._hook)
        self.steps += 1
        self._inside = True
        try:
            return self.task(model, batch, step)
        finally:
            self._inside = False


def _worst_case(model: nn.Module, x: Tensor, y: Tensor, attacks: list[Any]) -> Tensor:
    """Per image: correct under every attack (bool [N])."""
    correct = torch.ones_like(y, dtype=torch.bool)
    for attack in attacks:
        x_adv = attack(model, x, y, seeds=0)
        with torch.no_grad():
            correct &= model(x_adv).argmax(1) == y
    return correct


def evaluate(model: nn.Module, eps: float, spsa: bool, split: str = "test"
             ) -> dict[str, Any]:
    test = two_class_digits(split, size=SIZE)  # type: ignore[arg-type]
    x, y = test.images, test.labels
    model.eval()
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    white = _worst_case(model, x, y, [
        PGD(eps, 20, eps / 10, loss="ce", restarts=2),
        MultiTargetedPGD(eps, 20, eps / 10, restarts=1),
    ])
    out: dict[str, Any] = {
        "clean_accuracy": float(clean.float().mean()),
        "robust_accuracy": float(white.float().mean()),
        "images": len(y),
    }
    if spsa:
        n = SPSA_IMAGES
        black = _worst_case(model, x[:n], y[:n],
                            [SPSA(eps, 40, samples=32, lr=0.01, delta=0.01)])
        out["spsa_accuracy"] = float(black.float().mean())
        out["white_box_accuracy_spsa_images"] = float(white[:n].float().mean())
        out["spsa_beats_white_box"] = int((white[:n] & ~black).sum())
    return out


def _weights_tag(llr: dict[str, float]) -> str:
    return "-".join(f"{key}{value:g}" for key, value in sorted(llr.items()))


def run_one(name: str, seed: int, steps: int, eps: float, out_dir: Path, spsa: bool,
            llr: dict[str, float] | None = None, split: str = "test") -> dict[str, Any]:
    """Train one configuration and score it on ``split``; cached as JSON under ``out_dir``.

    ``llr`` overrides the LLR task's weights (LLR configurations only); runs with
    other weights or another split are cached apart.
    """
    preset, make_options, inner_steps, passes = CONFIGS[name]
    llr = llr if preset == "digits_llr" and llr else {}
    folder = f"eps{eps:g}" + (f"-{_weights_tag(llr)}" if llr else "")
    out_dir = out_dir / ("sweep" if split == "val" else "") / folder
    out_dir.mkdir(parents=True, exist_ok=True)
    result_path = out_dir / f"{name}-seed{seed}.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    options = {**make_options(inner_steps, eps), **llr}
    values = preset_values(preset)
    values["eval"]["eps"] = eps
    values["seed"] = seed
    values["steps"] = steps
    values["batch_size"] = BATCH
    values["data"]["size"] = SIZE
    values["data"]["eval_split"] = split  # val: trains on `fit`, the rest of train
    values["checkpoint_every"] = steps
    values["tensorboard"] = False
    values["task"]["options"] = {**values["task"].get("options", {}), **options}
    config = config_from_dict(values)
    task = CountingTask(build_task(config.task))
    run_dir = out_dir / f"{name}-seed{seed}"
    if run_dir.exists():
        for path in sorted(run_dir.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        run_dir.rmdir()
    start = time.perf_counter()
    train(config, run_dir, progress=False, task=task)
    seconds = time.perf_counter() - start
    assert task.model is not None
    result = {
        "config": name, "seed": seed, "eps": eps, "steps": steps,
        "batch_size": config.batch_size,
        "train_seconds": seconds,
        "forward_passes_per_step": task.images / (task.steps * config.batch_size),
        "fwd_bwd_per_step": passes,
        "task": config.task.options, "llr_weights": llr, "split": split,
        "size": SIZE,
        **evaluate(task.model, eps, spsa, split),
    }
    atomic_write_json(result_path, result)
    return result


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def _groups(results: list[dict[str, Any]], eps: float) -> list[tuple[str, list[dict[str, Any]]]]:
    """The runs at ``eps`` by row: configuration, then LLR weights (default first)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in CONFIGS:
        for r in results:
            if r["config"] == name and r["eps"] == eps:
                tag = _weights_tag(r.get("llr_weights") or {})
                rows.setdefault(f"{name} ({tag})" if tag else name, []).append(r)
    return sorted(rows.items(), key=lambda item: (list(CONFIGS).index(
        item[1][0]["config"]), "(" in item[0]))


def summarize(results: list[dict[str, Any]]) -> str:
    """One markdown table per eps (mean ± std over the seeds present)."""
    parts = []
    for eps in sorted({r["eps"] for r in results}):
        at_eps = [r for r in results if r["eps"] == eps]
        lines = [
            "| method | fwd-bwd per step (cost model, llr.md) | forward passes per step (measured) "
            "| train time (s) "
            "| clean acc (%) | robust acc (%), PGD-20x2 + MT-PGD-20 "
            "| seed 0, 36 images: white-box / SPSA acc (%) | SPSA breaks, white-box not |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, rows in _groups(at_eps, eps):
            spsa = [r for r in rows if "spsa_accuracy" in r]
            spsa_acc = (f"{100 * spsa[0]['white_box_accuracy_spsa_images']:.1f} / "
                        f"{100 * spsa[0]['spsa_accuracy']:.1f}") if spsa else "-"
            spsa_beats = str(spsa[0]["spsa_beats_white_box"]) if spsa else "-"
            lines.append(
                f"| {label} | {rows[0]['fwd_bwd_per_step']:g} "
                f"| {statistics.mean(r['forward_passes_per_step'] for r in rows):.1f} "
                f"| {statistics.mean(r['train_seconds'] for r in rows):.0f} "
                f"| {_mean_std([r['clean_accuracy'] for r in rows])} "
                f"| {_mean_std([r['robust_accuracy'] for r in rows])} "
                f"| {spsa_acc} | {spsa_beats} |"
            )
        seeds = sorted({r["seed"] for r in at_eps})
        parts.append(
            f"**eps = {eps:g}**: seeds {', '.join(map(str, seeds))} (the rows' counts may "
            f"differ), {at_eps[0]['steps']} training steps each, {at_eps[0]['images']} test "
            f"images; mean ± std over a row's seeds.\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


def _sweep_row(weights: dict[str, float], configs: list[str], seeds: list[int], steps: int,
               eps: float, out_dir: Path) -> dict[str, Any]:
    """The val-split runs of one weight setting: per-config cells and the summary."""
    cells, robust, clean, collapsed, images = [], [], [], [], 0
    for name in configs:
        runs = [run_one(name, seed, steps, eps, out_dir, spsa=False, llr=weights, split="val")
                for seed in seeds]
        images = runs[0]["images"]
        c = [r["clean_accuracy"] for r in runs]
        rb = [r["robust_accuracy"] for r in runs]
        clean += c
        robust += rb
        # One collapsed seed is enough: the setting is unstable.
        collapsed += [f"{name} seed {r['seed']}" for r in runs if r["clean_accuracy"] <= COLLAPSED]
        cells.append(f"{_mean_std(c)} / {_mean_std(rb)}")
    return {"cells": cells, "robust": statistics.mean(robust), "clean": statistics.mean(clean),
            "collapsed": collapsed, "images": images, "seeds": seeds}


def sweep(eps_values: list[float], seeds: list[int], steps: int, out_dir: Path,
          configs: list[str], top: int = 3) -> tuple[str, dict[float, dict[str, float]]]:
    """The LLR ``configs`` with the weight settings of :data:`SWEEP`, scored on ``val``.

    Two rounds: every setting with the first seed, then the ``top`` best of
    them (by robust accuracy, among those that did not collapse) with every
    seed. The chosen weights, per eps: among the settings run with every seed,
    those with which no run collapsed (clean accuracy above :data:`COLLAPSED`),
    the highest robust accuracy on ``val`` averaged over the configurations and
    seeds (ties: the higher clean accuracy, then the earlier setting).
    Returns a markdown table per eps and the chosen weights.
    """
    parts, chosen = [], {}
    for eps in eps_values:
        rows = [_sweep_row(w, configs, seeds[:1], steps, eps, out_dir) for w in SWEEP]
        ranked = sorted((i for i, r in enumerate(rows) if not r["collapsed"]),
                        key=lambda i: (-rows[i]["robust"], -rows[i]["clean"], i))
        if len(seeds) > 1:
            for i in ranked[:top]:
                rows[i] = _sweep_row(SWEEP[i], configs, seeds, steps, eps, out_dir)
        final = [i for i in (ranked[:top] if len(seeds) > 1 else ranked)
                 if not rows[i]["collapsed"]]
        best = min(final, key=lambda i: (-rows[i]["robust"], -rows[i]["clean"], i),
                   default=None)
        lines = ["| lambda | mu | w_nom | inner lr | seeds | "
                 + " | ".join(f"{name}: clean / robust, val (%)" for name in configs)
                 + " | mean robust (%) | collapsed runs |",
                 "|---:|---:|---:|---:|---|" + "---:|" * len(configs) + "---:|---|"]
        for i, (weights, row) in enumerate(zip(SWEEP, rows, strict=True)):
            mark = "**" if i == best else ""
            lines.append(f"| {mark}{weights['lam']:g}{mark} | {weights['mu']:g} "
                         f"| {weights['nominal_weight']:g} | {weights['lr']:g} "
                         f"| {', '.join(map(str, row['seeds']))} | " + " | ".join(row["cells"])
                         + f" | {100 * row['robust']:.1f} | {', '.join(row['collapsed']) or '-'} |")
            print(f"sweep eps {eps:g} {_weights_tag(weights)} seeds {row['seeds']}: clean "
                  f"{row['clean']:.3f} robust {row['robust']:.3f} collapsed {row['collapsed']}",
                  flush=True)
        if best is not None:
            chosen[eps] = SWEEP[best]
        parts.append(
            f"**eps = {eps:g}**, {', '.join(configs)}, {steps} steps on `fit`, scored on the "
            f"{rows[0]['images']} `val` images; every setting with seed {seeds[0]}"
            + (f", the {top} best again with seeds {', '.join(map(str, seeds))}"
               if len(seeds) > 1 else "")
            + f"; chosen (bold): {_weights_tag(SWEEP[best]) if best is not None else 'none'}."
            "\n\n" + "\n".join(lines))
    return "\n\n".join(parts), chosen


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_eps = sorted({r["eps"] for r in results})
    fig, grid = plt.subplots(len(all_eps), 2, figsize=(8, 2.8 * len(all_eps)), dpi=80,
                             sharey="row", squeeze=False)
    colors = {"standard": "gray", "pgd": "tab:red", "llr": "tab:blue"}
    for axes, eps in zip(grid, all_eps, strict=True):
        for name, rows in _groups(results, eps):
            color = colors[name.split("-")[0]]
            robust = [100 * r["robust_accuracy"] for r in rows]
            xs = (statistics.mean(r["train_seconds"] for r in rows), rows[0]["fwd_bwd_per_step"])
            # A (near-)constant classifier scores 50% clean and "robust": mark it.
            collapsed = statistics.mean(r["clean_accuracy"] for r in rows) <= 0.6
            label = f"{name} (constant)" if collapsed else name
            for ax, x in zip(axes, xs, strict=True):
                ax.scatter([x] * len(robust), robust, color=color, alpha=0.4, s=12)
                ax.errorbar([x], [statistics.mean(robust)], fmt="x" if collapsed else "o",
                            color=color)
                ax.annotate(label, (x, statistics.mean(robust)), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        axes[0].set_ylabel(f"robust acc. (%), eps {eps:g}")
        for ax in axes:
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
            ax.set_ylim(-5, 108)
    grid[-1][0].set_xlabel("training wall time (s)")
    grid[-1][1].set_xlabel("forward-backward passes per step")
    fig.suptitle("two-class digits: robustness vs training cost", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _cached(out_dir: Path) -> list[dict[str, Any]]:
    """Every finished test-split run under ``out_dir`` (the sweep's live in ``sweep/``)."""
    return [json.loads(p.read_text()) for p in sorted(out_dir.glob("eps*/*-seed*.json"))]


def _parse_llr(text: str | None) -> dict[str, float]:
    """``lam=1,mu=0.1`` -> ``{"lam": 1.0, "mu": 0.1}`` (keys of the LLR task)."""
    if not text:
        return {}
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    bad = [item for item in pairs if len(item) != 2 or item[0].strip() not in SWEEP[0]]
    if bad:
        raise ValueError(f"--llr takes KEY=VALUE pairs with keys {', '.join(SWEEP[0])}")
    return {key.strip(): float(value) for key, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eps", default="0.1,0.3", help="radii, for training and evaluation")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--configs", default=None,
                        help="comma-separated (default: all; with --sweep: llr-2,llr-10)")
    parser.add_argument("--llr", metavar="KEY=VALUE,...",
                        help="LLR weights for the llr-* configs, e.g. lam=1,mu=0.03 "
                             "(keys lam, mu, nominal_weight, lr)")
    parser.add_argument("--sweep", action="store_true",
                        help="choose the LLR weights on the val split (LLR-2, the SWEEP grid)")
    parser.add_argument("--top", type=int, default=3,
                        help="with --sweep: how many settings the later seeds rerun")
    parser.add_argument("--no-spsa", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "runs" / "llr_vs_adv"))
    parser.add_argument("--cifar10", metavar="ROOT",
                        help="also run on CIFAR-10 (not implemented on this CPU budget)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.cifar10:
        parser.error("the CIFAR-10 arm needs a GPU budget; use the cifar10_* presets with "
                     "`llrnet train` instead")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    default = "llr-2,llr-10" if args.sweep else ",".join(CONFIGS)
    names = [n.strip() for n in (args.configs or default).split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    try:
        llr = _parse_llr(args.llr)
    except ValueError as error:
        parser.error(str(error))
    eps_values = [float(e) for e in args.eps.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.sweep:
        if any(CONFIGS[name][0] != "digits_llr" for name in names):
            parser.error("--sweep takes LLR configurations only (llr-1, llr-2, llr-10)")
        table, chosen = sweep(eps_values, seeds, args.steps, out_dir, names, args.top)
        command = (f"`.venv/bin/python benchmarks/llr_vs_adv.py --sweep --eps {args.eps} "
                   f"--seeds {args.seeds} --top {args.top} --configs {','.join(names)} "
                   f"--steps {args.steps} "
                   f"--threads {args.threads} --write`")
        text = (f"### LLR weights at larger radii (sweep on the val split)\n\n"
                f"Machine: {machine_description()}. Command: {command}\n\n{table}\n")
        print(text)
        for eps, weights in chosen.items():
            print(f"eps {eps:g}: --llr " + ",".join(f"{k}={v:g}" for k, v in weights.items()))
        if args.write:
            write_section("llr_vs_adv_sweep", text)
        return
    for eps in eps_values:
        for seed in seeds:
            for name in names:
                result = run_one(name, seed, args.steps, eps, out_dir,
                                 spsa=not args.no_spsa and seed == 0, llr=llr)
                print(f"eps {eps:g} {name} seed {seed}: clean {result['clean_accuracy']:.3f} "
                      f"robust {result['robust_accuracy']:.3f} "
                      f"({result['train_seconds']:.0f} s)", flush=True)
    # The report covers every finished run under --out (earlier invocations included).
    results = _cached(out_dir)
    report = summarize(results)
    command = (f"`.venv/bin/python benchmarks/llr_vs_adv.py --eps {args.eps} --seeds {args.seeds} "
               f"--steps {args.steps} --threads {args.threads}"
               f"{' --llr ' + args.llr if args.llr else ''}"
               f"{' --no-spsa' if args.no_spsa else ''} --write`")
    text = (f"### Robustness vs training cost on the two-class digits\n\n"
            f"Machine: {machine_description()}. Command: {command}\n\n{report}\n")
    print(text)
    if args.write:
        plot(results, PLOT)
        write_section("llr_vs_adv", text + "\n![robustness vs cost](llr_vs_adv.png)\n")


if __name__ == "__main__":
    main()
