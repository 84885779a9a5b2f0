"""The ``llrnet`` command: argument parsing only; each subcommand calls a library function.
More: docs/core.md, "llrnet.cli"."""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from llrnet import __version__
from llrnet.cli import data_cmd, eval_cmd, hf_cmd, hub_cmd, models_cmd, train_cmd
from llrnet.cli.arguments import Parser
from llrnet.core.allocator import keep_freed_memory
from llrnet.core.errors import LlrnetError, RunError, first_line

COMMAND_MODULES = (models_cmd, eval_cmd, train_cmd, data_cmd, hub_cmd, hf_cmd)
"""Each area's subcommands, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every area's subcommands."""
    parser = Parser(
        prog="llrnet",
        description="Robust bird-or-bicycle classification: models, evaluation, training, "
        "data and TF-Hub import.",
    )
    parser.add_argument("--version", action="version", version=f"llrnet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMAND_MODULES:
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
    if not args.verbose:  # huggingface_hub's HTTP client logs every request at INFO
        for name in ("httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)
    prog = " ".join(["llrnet", args.command, *filter(None, [getattr(args, "data_command", None)])])
    debug = os.environ.get("LLRNET_DEBUG") == "1"
    keep_freed_memory()  # a quarter less time in page faults (llrnet.core.allocator)
    with warnings.catch_warnings(), _any_path_printable():
        warnings.showwarning = _one_line_warnings(prog)
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("llrnet: interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            if debug:
                raise
            message, code = describe(error)
            print(f"{prog}: {message}", file=sys.stderr)
            return code


def describe(error: Exception) -> tuple[str, int]:
    """The one stderr line (after ``llrnet CMD: ``) and exit code for ``error``.

    * llrnet's own errors, ``ValueError``: ``error: <first line>``; exit 1 for a
      failed run (:class:`RunError`), else 2.
    * ``OSError``: ``error: <reason>: <path>``; exit 2 when the path is the
      mistake (missing, a folder, not a folder, no permission), else 1 (a full
      disk, an I/O error).
    * anything else is a defect of llrnet, not the user's: ``internal error``
      with the exception's type, exit 1, and how to see the traceback.
    """
    if isinstance(error, LlrnetError | ValueError):
        return f"error: {first_line(error)}", 1 if isinstance(error, RunError) else 2
    if isinstance(error, OSError):
        reason = error.strerror or first_line(error)
        where = f": {error.filename}" if error.filename else ""
        user = isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError
                          | NotADirectoryError | FileExistsError)
        return f"error: {reason}{where}", 2 if user else 1
    return (f"internal error: {type(error).__name__}: {first_line(error)} (a bug in llrnet; "
            "rerun with LLRNET_DEBUG=1 for the traceback)", 1)


@contextmanager
def _any_path_printable() -> Iterator[None]:
    """Let stdout and stderr print a path whose name is not valid in their encoding
    instead of failing: the terminal gets its original bytes (as ``ls`` shows them),
    a replaced stream (a test's capture) a backslash escape."""
    changed = []
    for stream, real in ((sys.stdout, sys.__stdout__), (sys.stderr, sys.__stderr__)):
        errors = getattr(stream, "errors", None)
        if errors == "strict" and isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape" if stream is real else "backslashreplace")
            changed.append((stream, errors))
    try:
        yield
    finally:
        for stream, errors in changed:
            stream.reconfigure(errors=errors)


def _one_line_warnings(prog: str) -> Callable[..., None]:
    """A ``warnings.showwarning`` printing ``llrnet CMD: warning: <message>``.

    The library reports each condition once, through :mod:`warnings` (so API
    users can filter or catch it); the command shows it as one line, without
    the source line Python's default adds.
    """

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        text = str(message).splitlines()[0] if str(message).strip() else category.__name__
        print(f"{prog}: warning: {text}", file=sys.stderr)

    return show
