"""Argument types and the parser class of the ``llrnet`` command.
More: docs/core.md, "llrnet.cli.arguments"."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from llrnet.core.errors import UsageError
from llrnet.core.seeding import check_seed


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit 2."""
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def seed(value: str) -> int:
    """``--seed``: an integer in [0, 2**63 - 1]."""
    try:
        return check_seed(int(value))
    except ValueError as error:  # int() of a non-number, or UsageError (a ValueError)
        message = str(error) if isinstance(error, UsageError) else f"not an integer: {value!r}"
        raise argparse.ArgumentTypeError(message.removeprefix("seed ")) from None


def at_least(minimum: int) -> Callable[[str], int]:
    """A type for an integer option that must be >= ``minimum``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
        return number

    parse.__name__ = f"integer >= {minimum}"
    return parse
