"""The ``llrnet`` command: argument parsing only; each subcommand calls a library function.

Each area of the library registers its subcommands from its own module here
(``models_cmd``, ``eval_cmd``, ``train_cmd``, ``data_cmd``, ``hub_cmd``), so the
areas grow independently. Errors raised on purpose by the library become one
line on stderr and an exit code: 2 for bad usage or input, 1 for a failed run,
130 when interrupted. No traceback reaches the user unless ``LLRNET_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from llrnet import __version__
from llrnet.errors import LlrnetError, RunError

COMMAND_MODULES = ("models_cmd", "eval_cmd", "train_cmd", "data_cmd", "hub_cmd")


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every area's subcommands."""
    parser = argparse.ArgumentParser(
        prog="llrnet",
        description="Robust bird-or-bicycle classification: models, evaluation, training, "
        "data and TF-Hub import.",
    )
    parser.add_argument("--version", action="version", version=f"llrnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"llrnet.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llrnet`` and ``python -m llrnet``. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("llrnet: interrupted", file=sys.stderr)
        return 130
    except (LlrnetError, ValueError, FileNotFoundError, PermissionError) as error:
        if os.environ.get("LLRNET_DEBUG") == "1":
            raise
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"llrnet {args.command}: error: {message}", file=sys.stderr)
        return 1 if isinstance(error, RunError) else 2
