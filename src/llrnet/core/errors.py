"""Exceptions raised by llrnet's library code. More: docs/core.md, "llrnet.core.errors"."""

from __future__ import annotations

import re


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


def pickle_refusal(error: BaseException) -> str:
    """One line for a file ``torch.load(weights_only=True)`` refused: what it holds
    (e.g. ``Unsupported global: GLOBAL builtins.exec``), never torch's advice to
    retry with ``weights_only=False``. Other errors give their first line."""
    text = str(error)
    if "weights_only" not in text and "WeightsUnpickler" not in text:
        return first_line(error)
    match = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    detail = match.group(1).strip() if match else ""
    detail = re.split(r" was not an allowed| Please use|\. ", detail)[0].rstrip(".")
    what = f" ({detail})" if detail else ""
    return f"it holds objects other than tensors and plain values{what}; llrnet never " \
           "unpickles such a file"
