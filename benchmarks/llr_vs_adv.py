"""The experiment behind the paper's claim: robustness against training cost, LLR vs PGD.

Qin et al. (2019) claim LLR reaches adversarial training's robustness with far
fewer inner steps. On the bundled two-class digits (6 vs 7, 16x16, the
``digits_*`` presets: WRN-10-1 softplus, 150 SGD steps of batch 32, eps 0.1 and 0.3,
eps warmed up over 30 steps) this trains, for several seeds, with
llrnet's own loop (:func:`llrnet.train.loop.train`):

* standard training;
* PGD-K adversarial training, K in {1, 2, 10} (step size 2.5 eps / K, and
  1.25 eps for K = 1 as in Wong et al.'s "fast" FGSM training; random start);
* LLR with S in {1, 2, 10} inner steps (the digits_llr preset: w_nom 2,
  lambda 4, mu 0.3).

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
        [--configs standard,pgd-1,...] [--no-spsa] [--out runs/llr_vs_adv] [--write]
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
from llrnet.data import two_class_digits
from llrnet.fileio import atomic_write_json
from llrnet.train import config_from_dict, train
from llrnet.train.presets import preset_values
from llrnet.train.setup import build_task

#: SPSA (black-box) runs on the first test images only: it costs 33 forwards per step.
SPSA_IMAGES = 36
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
            return self.task(model, batch, step)  # type: ignore[no-any-return]
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


def evaluate(model: nn.Module, eps: float, spsa: bool) -> dict[str, Any]:
    test = two_class_digits("test", size=16)
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


def run_one(name: str, seed: int, steps: int, eps: float, out_dir: Path, spsa: bool
            ) -> dict[str, Any]:
    out_dir = out_dir / f"eps{eps:g}"
    out_dir.mkdir(parents=True, exist_ok=True)
    result_path = out_dir / f"{name}-seed{seed}.json"
    if result_path.exists():
        return json.loads(result_path.read_text())  # type: ignore[no-any-return]
    preset, make_options, inner_steps, passes = CONFIGS[name]
    options = make_options(inner_steps, eps)
    values = preset_values(preset)
    values["eval"]["eps"] = eps
    values["seed"] = seed
    values["steps"] = steps
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
        "task": config.task.options,
        **evaluate(task.model, eps, spsa),
    }
    atomic_write_json(result_path, result)
    return result


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


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
        for name in CONFIGS:
            rows = [r for r in at_eps if r["config"] == name]
            if not rows:
                continue
            spsa = [r for r in rows if "spsa_accuracy" in r]
            spsa_acc = (f"{100 * spsa[0]['white_box_accuracy_spsa_images']:.1f} / "
                        f"{100 * spsa[0]['spsa_accuracy']:.1f}") if spsa else "-"
            spsa_beats = str(spsa[0]["spsa_beats_white_box"]) if spsa else "-"
            lines.append(
                f"| {name} | {rows[0]['fwd_bwd_per_step']:g} "
                f"| {statistics.mean(r['forward_passes_per_step'] for r in rows):.1f} "
                f"| {statistics.mean(r['train_seconds'] for r in rows):.0f} "
                f"| {_mean_std([r['clean_accuracy'] for r in rows])} "
                f"| {_mean_std([r['robust_accuracy'] for r in rows])} "
                f"| {spsa_acc} | {spsa_beats} |"
            )
        seeds = sorted({r["seed"] for r in at_eps})
        parts.append(
            f"**eps = {eps:g}**: {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), "
            f"{at_eps[0]['steps']} training steps each, {at_eps[0]['images']} test images"
            f"{'; mean ± std over seeds' if len(seeds) > 1 else ''}.\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_eps = sorted({r["eps"] for r in results})
    fig, grid = plt.subplots(len(all_eps), 2, figsize=(8, 2.8 * len(all_eps)), dpi=80,
                             sharey="row", squeeze=False)
    colors = {"standard": "gray", "pgd": "tab:red", "llr": "tab:blue"}
    for axes, eps in zip(grid, all_eps, strict=True):
        for name in CONFIGS:
            rows = [r for r in results if r["config"] == name and r["eps"] == eps]
            if not rows:
                continue
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
    return [json.loads(p.read_text()) for p in sorted(out_dir.glob("eps*/*-seed*.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eps", default="0.1,0.3", help="radii, for training and evaluation")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--configs", default=",".join(CONFIGS))
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
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {', '.join(CONFIGS)}")
    for eps in (float(e) for e in args.eps.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            for name in names:
                result = run_one(name, seed, args.steps, eps, out_dir,
                                 spsa=not args.no_spsa and seed == 0)
                print(f"eps {eps:g} {name} seed {seed}: clean {result['clean_accuracy']:.3f} "
                      f"robust {result['robust_accuracy']:.3f} "
                      f"({result['train_seconds']:.0f} s)", flush=True)
    # The report covers every finished run under --out (earlier invocations included).
    results = _cached(out_dir)
    report = summarize(results)
    command = (f"`.venv/bin/python benchmarks/llr_vs_adv.py --eps {args.eps} --seeds {args.seeds} "
               f"--steps {args.steps} --threads {args.threads}"
               f"{' --no-spsa' if args.no_spsa else ''} --write`")
    text = (f"### Robustness vs training cost on the two-class digits\n\n"
            f"Machine: {machine_description()}. Command: {command}\n\n{report}\n")
    print(text)
    if args.write:
        plot(results, PLOT)
        write_section("llr_vs_adv", text + "\n![robustness vs cost](llr_vs_adv.png)\n")


if __name__ == "__main__":
    main()
