"""Exceptions raised by llrnet's library code. More: docs/core.md, "llrnet.core.errors"."""

from __future__ import annotations


class LlrnetError(Exception):
    """Base class of every error llrnet raises on purpose."""


class UsageError(LlrnetError, ValueError):
    """The caller asked for something invalid (unknown name, bad argument)."""


class InputError(LlrnetError, ValueError):
    """An input (file, array, tensor) does not satisfy its contract."""


class WeightsError(LlrnetError):
    """A weights file is missing, corrupt, or does not match its architecture."""


class RunError(LlrnetError):
    """A long job (training, evaluation, download) failed; the message says why."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name when it has none
    (what a one-line report of an error shows)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
