"""``llrnet data download`` and ``llrnet data verify``: the bird-or-bicycle dataset."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from llrnet.core.errors import UsageError
from llrnet.core.http import RetryPolicy

_DEFAULT_ROOT = "~/datasets/bird_or_bicycle"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``data`` with its ``download`` and ``verify`` subcommands."""
    data = subparsers.add_parser("data", help="download and verify the bird-or-bicycle dataset")
    commands = data.add_subparsers(dest="data_command", metavar="{download,verify}")
    commands.required = True

    download = commands.add_parser(
        "download",
        help="download (or complete) the dataset; resumable",
        description="Fetch the pinned 0.0.4 id lists (sha256-checked), download and "
        "process the OpenImages images into <root>/0.0.4/<split>/<class>/<id>.jpg, and write "
        "<root>/0.0.4/download_report.json. Exits 1 if any image is missing. URLs can be "
        "overridden with LLRNET_BOB_ID_LIST_URL, LLRNET_BOB_IMAGE_URL, LLRNET_BOB_BOXES_URL.",
    )
    download.add_argument("--root", default=_DEFAULT_ROOT, help=f"dataset root ({_DEFAULT_ROOT})")
    download.add_argument("--splits", default="train,test",
                          help="comma-separated: train, test, extras (default train,test)")
    download.add_argument("--workers", type=int, default=16, help="parallel downloads (16)")
    download.add_argument("--mirror", default=None,
                          help="base URL replacing https://open-images-dataset.s3.amazonaws.com")
    download.add_argument("--exclude-ambiguous", action="store_true",
                          help="extras: drop images that also show the other class")
    download.add_argument("--timeout", type=float, default=30.0,
                          help="seconds to connect / between received bytes (30)")
    download.add_argument("--retries", type=int, default=3,
                          help="retries per image after the first attempt (3)")
    download.add_argument("--no-progress", action="store_true", help="no progress bars")
    download.add_argument("--max-image-size", default=None, metavar="SIZE",
                          help="cap on one image download, e.g. 128M (default: "
                          "$LLRNET_BOB_MAX_IMAGE_SIZE, else 64M)")
    download.set_defaults(func=_download)

    verify = commands.add_parser("verify", help="check counts, sizes and decodability")
    verify.add_argument("--root", default=_DEFAULT_ROOT, help=f"dataset root ({_DEFAULT_ROOT})")
    verify.add_argument("--split", default="train,test",
                        help="split(s) to check, comma-separated (default train,test)")
    verify.add_argument("--max-problems", type=int, default=50,
                        help="print at most this many problems (50)")
    verify.set_defaults(func=_verify)


def _download(args: argparse.Namespace) -> int:
    from llrnet.data.bird_or_bicycle import (  # deferred: heavy, per command
        ExtrasRule,
        Sources,
        download,
    )

    if args.retries < 0:
        raise UsageError(f"--retries must be >= 0, got {args.retries}")
    report = download(
        args.root,
        args.splits,
        workers=args.workers,
        sources=Sources(image_base=args.mirror),
        policy=RetryPolicy(timeout=args.timeout, attempts=args.retries + 1),
        extras_rule=ExtrasRule(exclude_ambiguous=args.exclude_ambiguous),
        progress=not args.no_progress,
        max_image_bytes=args.max_image_size,
    )
    print(report.summary())
    for failure in report.failed[:20]:
        print(f"failed {failure['split']}/{failure['class']}/{failure['id']}: "
              f"{failure['reason']}", file=sys.stderr)
    if len(report.failed) > 20:
        print(f"... and {len(report.failed) - 20} more failures", file=sys.stderr)
    if not report.complete:
        print("llrnet data download: error: the dataset is incomplete; see "
              f"{report.root}/0.0.4/download_report.json and rerun to fetch what is missing",
              file=sys.stderr)
        return 1
    return 0


def _verify(args: argparse.Namespace) -> int:
    from llrnet.data.bird_or_bicycle import verify  # deferred: heavy, per command

    report = verify(args.root, args.split)
    for split, counts in report.counts.items():
        for name, count in counts.items():
            expected = report.expected[split][name]
            mark = "ok" if count == expected else "WRONG"
            print(f"{split}/{name}: {count} of {expected} images  {mark}")
    for path, problem in report.problems[: args.max_problems]:
        print(f"{path}: {problem}", file=sys.stderr)
    if len(report.problems) > args.max_problems:
        print(f"... and {len(report.problems) - args.max_problems} more problems",
              file=sys.stderr)
    if report.ok:
        print("dataset ok")
        return 0
    print(f"llrnet data verify: error: {len(report.problems)} problem(s)", file=sys.stderr)
    return 1
