"""``llrnet eval``: score a classifier under an attack suite (argument parsing only)."""

from __future__ import annotations

import argparse
import shutil
import textwrap
from pathlib import Path
from typing import Any

from llrnet.cli.arguments import at_least, seed
from llrnet.core.errors import UsageError


class _HelpWithSuites(argparse.Action):
    """``-h/--help``: the usual help, then every registered suite with its one-line help and
    the data it scores by default (its facts, :func:`llrnet.eval.suites.suite_facts`).

    The suites are read only when help is asked for: importing them takes seconds that
    building the parser, done for every command, must not pay."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"{parser.format_help()}\n{suite_listing()}")
        parser.exit()


def suite_listing(width: int | None = None) -> str:
    """Each registered suite: its name and one-line help, then the data it scores by default,
    wrapped to ``width`` columns (default: the terminal's, as argparse does)."""
    # deferred: heavy (the suites and data), read only when help is asked for
    from llrnet.data.held_out import HELD_OUT_SETS
    from llrnet.eval.suites import list_suites, suite_facts  # deferred: heavy, as above

    width = width or shutil.get_terminal_size().columns - 2
    lines = ["suites (data: what each scores without --data):"]
    for name in list_suites():
        facts = suite_facts(name)
        data = HELD_OUT_SETS.get(facts.data).help
        for label, text in ((name, facts.help), ("", f"data: {data}")):
            lines += textwrap.wrap(text, width, initial_indent=f"  {label:<18}",
                                   subsequent_indent=" " * 20, break_on_hyphens=False)
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a classifier under an attack suite (resumable)",
        description="Run an attack suite, write results.json, plots and the resolved config "
        "to --out, and print a leaderboard table. Rerunning with the same arguments resumes. "
        "The suites, and the data each scores by default, are listed below.",
        add_help=False,
    )
    parser.add_argument("-h", "--help", action=_HelpWithSuites,
                        help="show this help message and the suites, then exit")
    parser.add_argument("--suite", required=True,
                        help="a registered suite (listed at the end of --help)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--weights", help="a .safetensors weights file written by llrnet, or "
                       "hf-hub:OWNER/REPO[@REVISION] (pip install 'llrnet[hf]')")
    model.add_argument("--model", help="a registered model name, initialized from --seed "
                       "(untrained: for smoke tests); see `llrnet models`")
    model.add_argument("--imagenet-model", metavar="SPEC",
                       help="an ImageNet classifier read as bird-or-bicycle (max log-probability "
                       "over the kit's bird and bicycle classes): torchvision:NAME (published "
                       "weights), torchvision:NAME=FILE, timm:NAME[=FILE] or llrnet:FILE")
    parser.add_argument("--data", help="dataset folder (default depends on the suite)")
    parser.add_argument("--out", required=True, help="output folder (also the resume state)")
    parser.add_argument("--restart", action="store_true",
                        help="start over: move OUT/state to OUT/discarded/state first (for a "
                        "damaged state or a missing manifest)")
    parser.add_argument("--seed", type=seed, default=0, help="the run's seed, in [0, 2**63 - 1]")
    parser.add_argument("--max-images", type=int, default=None,
                        help="evaluate the first N images only")
    parser.add_argument("--attacks", default=None,
                        help="comma-separated subset of the suite's attacks, "
                        "e.g. clean,spatial_grid")
    parser.add_argument("--suite-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the suite's builder, e.g. eps=0.1 for linf "
                        "(repeatable; values are YAML)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=_batch_size, default=None,
                        help="images per batch (default: the suite's); auto: sized from "
                        "free memory on CUDA, the suite's elsewhere")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="score the readable images and report the unreadable ones "
                        "(default: stop before any attack and list them)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="search precision: fp32 (default); bf16: attacks whose measured "
                        "policy allows it search with a bf16 channels_last copy, and every "
                        "result is judged by the fp32 model; auto: bf16 where the hardware has "
                        "native bf16 (AMX-BF16 or AVX512-BF16 CPUs, CUDA sm_80+), else fp32. "
                        "A run resumes only under the precision it started with")
    parser.add_argument("--check-budget", type=at_least(1), nargs="?", const=4, default=None,
                        metavar="K", help="re-run each budgeted attack at K times its budget "
                        "(K = 4 without a value) on the images it left correct, with the same "
                        "per-image seeds, and mark it NOT CONVERGED when its accuracy@80 drops "
                        "by more than max(2 points, 1 image)")
    parser.add_argument("--check-budget-images", type=at_least(1), default=32, metavar="N",
                        help="recheck at most the first N such images per attack (default 32)")
    parser.add_argument("--white-box-bounds", action=argparse.BooleanOptionalAction,
                        default=None, help="run each black-box attack's white-box bound (a "
                        "gradient attack in the same ball, the same random transforms) as a "
                        "row under it (default: the suite's choice; on for digits and linf)")
    parser.add_argument("--bound-attack", choices=("pgd", "apgd-ce"), default="pgd",
                        help="the white-box bounds' attack: PGD-100 (default) or, in L-inf "
                        "balls, the authors' APGD-CE (pip install 'llrnet[autoattack]')")
    parser.add_argument("--compile", action="store_true",
                        help="run the model and its search copies through torch.compile "
                        "(warmed up before the first attack; not part of the resume check; "
                        "eager with a warning where it cannot run)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_eval)


def _batch_size(value: str) -> int | str:
    """``--batch-size``: an integer, or ``auto`` (sized from free memory on CUDA)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or 'auto': {value!r}") from None


def _model(args: argparse.Namespace) -> Any:
    # deferred: heavy, per command
    from llrnet.models import create_model, load_imagenet_model, load_weights

    if args.imagenet_model is not None:

        return load_imagenet_model(args.imagenet_model, device=args.device)
    if args.weights is not None:
        if not args.weights.startswith("hf-hub:") and not Path(args.weights).is_file():
            raise FileNotFoundError(f"weights file not found: {args.weights}")
        return load_weights(args.weights, device=args.device)
    import torch  # deferred: heavy, per command

    torch.manual_seed(args.seed)  # the same untrained model on a rerun, so it resumes
    return create_model(args.model)


def _suite_options(texts: list[str]) -> dict[str, Any]:
    from llrnet.train.presets import parse_override  # deferred: heavy, per command

    options: dict[str, Any] = {}
    for text in texts:
        path, value = parse_override(text)
        if len(path) != 1:
            raise UsageError(f"--suite-option {text!r}: suite options have no dots")
        options[path[0]] = value
    return options


def _eval(args: argparse.Namespace) -> int:
    # deferred: heavy (torch, the data sets, the evaluation), loaded per command
    from llrnet.core import distributed
    from llrnet.data import BirdOrBicycle  # deferred: heavy, per command
    from llrnet.eval import evaluate, format_table, get_suite, list_suites  # deferred: heavy
    from llrnet.eval.suites import suite_dataset, suite_facts  # deferred: heavy, per command
    from llrnet.models.imagenet_adapter import check_spec  # deferred: heavy, per command

    if args.suite not in list_suites():
        raise UsageError(f"unknown suite {args.suite!r}; choose from {', '.join(list_suites())}")
    facts = suite_facts(args.suite)
    if args.max_images is not None and args.max_images < 1:
        raise UsageError(f"--max-images must be >= 1, got {args.max_images}")
    attacks = None
    if args.attacks is not None:
        attacks = [name.strip() for name in args.attacks.split(",") if name.strip()]
        if not attacks:
            raise UsageError("--attacks is empty; give names such as clean,spatial_grid")
    if args.imagenet_model is not None:
        if facts.class_names != BirdOrBicycle.classes:
            fitting = [name for name in list_suites()
                       if suite_facts(name).class_names == BirdOrBicycle.classes]
            raise UsageError("--imagenet-model gives a bird-or-bicycle model; use it with "
                             f"--suite {' or --suite '.join(fitting)}")
        check_spec(args.imagenet_model)  # before loading any data
    suite = get_suite(args.suite, **_suite_options(args.suite_option))
    suite.select(attacks)  # unknown names fail here, before loading data or model
    dataset = suite_dataset(args.suite, args.data)
    model = _model(args)
    results = evaluate(model, suite, dataset, out_dir=args.out, seed=args.seed,
                       device=args.device, batch_size=args.batch_size,
                       max_images=args.max_images, attacks=attacks,
                       progress=not args.no_progress,
                       class_names=facts.class_names, skip_unreadable=args.skip_unreadable,
                       precision=args.precision, check_budget=args.check_budget,
                       check_budget_images=args.check_budget_images,
                       white_box_bounds=args.white_box_bounds,
                       bound_attack=args.bound_attack, restart=args.restart,
                       compile=args.compile)
    if distributed.rank() == 0:
        print(format_table(results))
        print(f"results: {Path(args.out) / 'results.json'}")
    return 0
