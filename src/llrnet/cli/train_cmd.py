"""``llrnet train`` and ``llrnet demo`` (:mod:`llrnet.demo`): argument parsing only.
More: docs/core.md, "llrnet.cli.train_cmd"."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from llrnet.cli.arguments import at_least, seed
from llrnet.core import distributed
from llrnet.core.errors import UsageError


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``train`` and ``demo``."""
    train = subparsers.add_parser(
        "train", help="train a model from a preset (LLR, PGD, TRADES, standard)",
        description="Train a model. The configuration is a preset (or YAML file) plus "
        "--set key=value overrides; the resolved configuration is saved as OUT/config.yaml "
        "and in the final weights' metadata. Run under torchrun for several processes.")
    train.add_argument("--preset", "--config", dest="preset", metavar="NAME_OR_YAML",
                       help="a preset name (see --list-presets) or a path to a YAML file")
    train.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a setting, e.g. optim.lr=0.05 "
                       "(repeatable; values are YAML: 0.1, true, [1, 2], {width: 1})")
    train.add_argument("--out", help="run folder (checkpoints, metrics, final weights)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its newest intact checkpoint")
    train.add_argument("--restart", action="store_true",
                       help="start the run in --out again from step 0 (its checkpoints and "
                       "final files are moved to OUT/discarded/); needed when every "
                       "checkpoint is damaged")
    train.add_argument("--until-step", type=at_least(1), default=None, metavar="N",
                       help="stop (with a checkpoint) after N steps; resume later")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--threads", type=at_least(1), default=None,
                       help="CPU threads for torch (default: torch's choice)")
    train.add_argument("--compile", action="store_true",
                       help="run the model through torch.compile (the same as --set "
                       "compile=true; eager with a warning where it cannot run)")
    train.add_argument("--list-presets", action="store_true", help="list presets and exit")
    train.add_argument("--print-config", action="store_true",
                       help="print the resolved configuration as YAML and exit")
    train.set_defaults(func=_train)

    demo = subparsers.add_parser(
        "demo", help="train standard, PGD, LLR and two-stage LLR -> adversarial models on "
        "digits and compare them",
        description="The main demo: trains a standard, a PGD, an LLR and the two-stage "
        "LLR -> adversarial (llr_adv) model of the same small architecture on the bundled "
        "digits, evaluates each with the digits suite and writes OUT/report.md with plots. "
        "Rerunning skips finished parts.")
    demo.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    demo.add_argument("--quick", action="store_true",
                      help="a seconds-long version (few steps, few images) for tests")
    demo.add_argument("--threads", type=at_least(1), default=1,
                      help="CPU threads for torch (default 1: the demo's tiny convolutions "
                      "gain little from more, and lose a lot on a busy machine)")
    demo.add_argument("--jobs", type=at_least(1), default=min(2, os.cpu_count() or 1),
                      help="worker processes training and evaluating the models side by "
                      "side (default: 2, or 1 on a one-core machine; results do not "
                      "depend on it; 1 shows progress bars)")
    demo.add_argument("--seed", type=seed, default=0,
                      help="seed of every training stage and of the evaluation (default 0)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def _train(args: argparse.Namespace) -> int:
    from llrnet.train import (  # deferred: heavy, per command
        dump_config,
        list_presets,
        load_config,
        load_run_config,
        train,
    )

    if args.list_presets:
        for name in list_presets():
            print(name)
        return 0
    if args.compile:
        args.overrides.append("compile=true")
    if args.preset is None and (args.resume or args.restart) and args.out:
        config = load_run_config(args.out, args.overrides)
    elif args.preset is None and not args.print_config:
        raise UsageError("give --preset NAME (see --list-presets), or --out DIR --resume")
    else:
        config = load_config(args.preset, args.overrides)
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    if not args.out:
        raise UsageError("give --out DIR: the run folder")
    _set_threads(args.threads)
    result = train(config, args.out, resume=args.resume, until_step=args.until_step,
                   progress=not args.no_progress, restart=args.restart)
    if distributed.rank() == 0:
        if result.finished:
            print(f"finished {result.step} steps: {result.weights}")
            if result.metrics:
                print(json.dumps(result.metrics, sort_keys=True))
        else:
            print(f"stopped at step {result.step}; continue with: llrnet train --out "
                  f"{Path(args.out)} --resume")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from llrnet.demo import run_demo  # deferred: heavy, per command

    _set_threads(args.threads)
    result = run_demo(args.out, quick=args.quick, progress=not args.no_progress,
                      jobs=args.jobs, threads=args.threads, seed=args.seed)
    print()
    print(result.table)
    print()
    print(f"report: {result.report}")
    return 0
