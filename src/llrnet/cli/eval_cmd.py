"""``llrnet eval``: score a classifier under an attack suite (argument parsing only)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llrnet.cli.arguments import at_least, seed

#: Help text: the data each suite scores (``llrnet.data.evaluation_dataset`` decides).
SUITE_DATA = {
    "bird_or_bicycle": "the bird-or-bicycle test split under llrnet.data.DEFAULT_ROOT",
    "digits": "the bundled two-class digits test split (6 vs 7)",
    "linf": "the bundled two-class digits test split; with --data, CIFAR-10 test "
            "(DIR/cifar-10-batches-bin) or ImageNet val (DIR/val/<class>/)",
    "two_class_mnist": "MNIST test digits 6 and 7 from a local copy (--data, default "
                       "~/datasets/mnist; torchvision's layout or the raw idx files)",
}


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a classifier under an attack suite (resumable)",
        description="Run an attack suite, write results.json, plots and the resolved config "
        "to --out, and print a leaderboard table. Rerunning with the same arguments resumes. "
        "Data defaults: " + "; ".join(f"{k}: {v}" for k, v in SUITE_DATA.items()) + ".",
    )
    parser.add_argument("--suite", required=True,
                        help=f"a registered suite: {', '.join(SUITE_DATA)}")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--weights", help="a .safetensors weights file written by llrnet")
    model.add_argument("--model", help="a registered model name, initialized from --seed "
                       "(untrained: for smoke tests); see `llrnet models`")
    model.add_argument("--imagenet-model", metavar="SPEC",
                       help="an ImageNet classifier read as bird-or-bicycle (max log-probability "
                       "over the kit's bird and bicycle classes): torchvision:NAME (published "
                       "weights), torchvision:NAME=FILE, timm:NAME[=FILE] or llrnet:FILE")
    parser.add_argument("--data", help="dataset folder (default depends on the suite)")
    parser.add_argument("--out", required=True, help="output folder (also the resume state)")
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
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per batch (default: the suite's)")
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
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_eval)


def _model(args: argparse.Namespace) -> Any:
    from llrnet.models import create_model, load_weights

    if args.imagenet_model is not None:
        from llrnet.models import load_imagenet_model

        return load_imagenet_model(args.imagenet_model, device=args.device)
    if args.weights is not None:
        if not Path(args.weights).is_file():
            raise FileNotFoundError(f"weights file not found: {args.weights}")
        return load_weights(args.weights, device=args.device)
    import torch

    torch.manual_seed(args.seed)  # the same untrained model on a rerun, so it resumes
    return create_model(args.model)


def _suite_options(texts: list[str]) -> dict[str, Any]:
    from llrnet.core.errors import UsageError
    from llrnet.train.presets import parse_override

    options: dict[str, Any] = {}
    for text in texts:
        path, value = parse_override(text)
        if len(path) != 1:
            raise UsageError(f"--suite-option {text!r}: suite options have no dots")
        options[path[0]] = value
    return options


def _eval(args: argparse.Namespace) -> int:
    from llrnet.core import distributed
    from llrnet.core.errors import UsageError
    from llrnet.data import evaluation_dataset
    from llrnet.eval import evaluate, format_table, get_suite, list_suites

    if args.suite not in list_suites():
        raise UsageError(f"unknown suite {args.suite!r}; choose from {', '.join(list_suites())}")
    if args.max_images is not None and args.max_images < 1:
        raise UsageError(f"--max-images must be >= 1, got {args.max_images}")
    attacks = None
    if args.attacks is not None:
        attacks = [name.strip() for name in args.attacks.split(",") if name.strip()]
        if not attacks:
            raise UsageError("--attacks is empty; give names such as clean,spatial_grid")
    if args.imagenet_model is not None:
        from llrnet.models.imagenet_adapter import check_spec

        if args.suite != "bird_or_bicycle":
            raise UsageError("--imagenet-model gives a bird-or-bicycle model; use it with "
                             "--suite bird_or_bicycle")
        check_spec(args.imagenet_model)  # before loading any data
    suite = get_suite(args.suite, **_suite_options(args.suite_option))
    suite.select(attacks)  # unknown names fail here, before loading data or model
    dataset = evaluation_dataset(args.suite, args.data)
    model = _model(args)
    class_names = ("bicycle", "bird") if args.suite == "bird_or_bicycle" else None
    results = evaluate(model, suite, dataset, out_dir=args.out, seed=args.seed,
                       device=args.device, batch_size=args.batch_size,
                       max_images=args.max_images, attacks=attacks,
                       progress=not args.no_progress,
                       class_names=class_names, skip_unreadable=args.skip_unreadable,
                       precision=args.precision, check_budget=args.check_budget,
                       check_budget_images=args.check_budget_images,
                       white_box_bounds=args.white_box_bounds)
    if distributed.rank() == 0:
        print(format_table(results))
        print(f"results: {Path(args.out) / 'results.json'}")
    return 0
