"""The validation-split runs behind the demo's ``digits_llr_adv`` settings, and its diagnostics.

``select`` (the default): trains stage 1 (``digits10_llr``) once per seed, then
stage 2 (``digits_llr_adv``) from its trunk with the given ``--set`` overrides
(for example ``data.photometric=0.25 data.min_contrast=0.5``), and scores it on
the two-class digits' ``val`` split (51 images carved from train; the test split
is never read) with the demo's suite (:func:`llrnet.demo.demo_suite`) plus two
diagnostics: fog alone, and PGD at eps 0.15 (the training radius; val has no
errors under PGD at 0.1 to rank settings by). Prints one JSON line: accuracy (%)
at 80% / 100% coverage per attack. Another task is an override too:
``--set task.name=trades --set "task.options={eps: 0.15, ...}"``.

``--per-corruption DEMO_OUT``: each of the 17 corruptions alone on the test
split, for the models a finished demo trained (``llrnet demo --out DEMO_OUT``):
which corruptions still break them (a diagnostic of final models, not a choice).

Runs are cached under ``--out``; a rerun with the same name skips training.

Usage::

    .venv/bin/python benchmarks/demo_selection.py NAME [--seed 0] [--attacks a,b]
        [--set KEY=VALUE ...] [--out runs/demo_selection]
    .venv/bin/python benchmarks/demo_selection.py --per-corruption DEMO_OUT [--model llr_adv]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from llrnet.attacks import PGD, CommonCorruptions
from llrnet.attacks.corruptions import CHALLENGE_CORRUPTIONS
from llrnet.core.allocator import keep_freed_memory
from llrnet.data import two_class_digits
from llrnet.demo import PGD_STEPS, demo_suite
from llrnet.eval import Suite, SuiteEntry, evaluate
from llrnet.models import load_weights
from llrnet.train import RunDir, load_config, train

ROOT = Path(__file__).resolve().parent.parent
#: The stronger PGD radius of the selection's last diagnostic: stage 2's training eps.
HARD_EPS = 0.15


def _cells(results: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    return {name: [round(100 * r["accuracy@80"], 1), round(100 * r["accuracy@100"], 1)]
            for name, r in results.items()}


def _corruptions(names: tuple[str, ...]) -> tuple[SuiteEntry, ...]:
    return tuple(SuiteEntry(name, CommonCorruptions((name,), workers=0), kind="corruption")
                 for name in names)


def select(name: str, seed: int, overrides: list[str], attacks: list[str] | None,
           out: Path) -> dict[str, Any]:
    """Stage 1 (cached per seed), stage 2 with ``overrides``, scores on ``val``."""
    stage1 = RunDir(out / f"stage1_seed{seed}")
    if not stage1.is_finished():
        train(load_config("digits10_llr", [f"seed={seed}"]), stage1.path, resume=True,
              progress=False)
    stage2 = RunDir(out / f"{name}_seed{seed}")
    if not stage2.is_finished():
        config = load_config("digits_llr_adv", [f"seed={seed}",
                                                f"model.init_weights={stage1.final_weights}",
                                                *overrides])
        train(config, stage2.path, resume=True, progress=False)
    base = demo_suite(quick=False)
    # Two diagnostics beside the demo's six: fog alone, and PGD at the training radius
    # (HARD_EPS), whose errors the 51 val images do have where PGD at 0.1 has none.
    hard = SuiteEntry(f"pgd_linf_eps{HARD_EPS}",
                      PGD(HARD_EPS, PGD_STEPS, 2.5 * HARD_EPS / PGD_STEPS), kind="white_box")
    suite = Suite(name="demo_selection",
                  entries=(*base.entries, *_corruptions(("fog",)), hard),
                  options=base.options, batch_size=base.batch_size, shuffle=base.shuffle)
    held_out = two_class_digits("val", size=28)
    results = evaluate(load_weights(stage2.final_weights), suite, held_out,
                       out_dir=stage2.path / "eval_val", seed=seed, attacks=attacks,
                       max_images=len(held_out), progress=False)
    return {"name": name, "seed": seed, "overrides": overrides, **_cells(results)}


def per_corruption(demo_out: Path, model: str, seed: int) -> dict[str, Any]:
    """Each corruption alone on the test split for ``model`` of a finished demo."""
    weights = demo_out / model / "train" / "final.safetensors"
    suite = Suite(name="per_corruption", entries=_corruptions(CHALLENGE_CORRUPTIONS),
                  batch_size=108)
    test = two_class_digits("test", size=28)
    results = evaluate(load_weights(weights), suite, test,
                       out_dir=demo_out / model / "eval_per_corruption", seed=seed,
                       max_images=len(test), progress=False)
    return {"model": model, "seed": seed, **_cells(results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="a name for this stage-2 setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="an override of digits_llr_adv (repeatable)")
    parser.add_argument("--attacks", default=None, help="comma-separated subset of attacks")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "demo_selection")
    parser.add_argument("--per-corruption", type=Path, metavar="DEMO_OUT", default=None)
    parser.add_argument("--model", default="llr_adv", help="with --per-corruption")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    keep_freed_memory()  # as the demo's workers do: speed only (llrnet.core.allocator)
    torch.set_num_threads(args.threads)
    if args.per_corruption is not None:
        print(json.dumps(per_corruption(args.per_corruption, args.model, args.seed)))
        return
    if not args.name:
        parser.error("give a NAME for the setting (or --per-corruption DEMO_OUT)")
    attacks = args.attacks.split(",") if args.attacks else None
    print(json.dumps(select(args.name, args.seed, args.overrides, attacks, args.out)))


if __name__ == "__main__":
    main()
