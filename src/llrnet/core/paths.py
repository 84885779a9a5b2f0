"""Output paths checked before any work: a folder to write into, or a file to write.
More: docs/core.md, "llrnet.core.paths"."""

from __future__ import annotations

import os
from pathlib import Path

from llrnet.core.errors import InputError

__all__ = ["output_file", "output_folder"]


def _check_parents(path: Path, shown: str | os.PathLike[str]) -> None:
    """Raise if the nearest existing ancestor of ``path`` is not a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{shown}: {parent} is a file, so nothing can be written "
                                 "below it")
            return


def output_folder(path: str | os.PathLike[str], *, what: str = "output folder") -> Path:
    """``path`` (``~`` expanded) as a folder to write into, which may not exist yet.

    Raises:
        InputError: ``path`` exists and is not a folder, or one of its parents is a file.
    """
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{path} exists and is not a folder; give a folder for the {what}")
    _check_parents(folder, path)
    return folder


def output_file(path: str | os.PathLike[str], *, what: str = "output file") -> Path:
    """``path`` (``~`` expanded) as a file to write (or overwrite).

    Raises:
        InputError: ``path`` is a folder, or one of its parents is a file.
    """
    file = Path(path).expanduser()
    if file.is_dir():
        raise InputError(f"{path} is a folder; give a file name for the {what}")
    _check_parents(file, path)
    return file
