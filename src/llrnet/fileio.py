"""Atomic file writes: write to a temporary file in the same folder, then rename.

A job killed mid-write leaves either the old file or no file under the final
name, never a half-written one that looks complete. Used by weights,
checkpoints, evaluation state, reports and downloads.

Modes: ``mkstemp`` creates its file 0600 (and safetensors' ``save_file``
keeps or sets 0600), which would make every output private to its owner. The
final file is given the mode ``open()`` would have given it, 0666 less the
process umask (0644 under the usual 022), just before the rename; folders
published by a rename get 0777 less the umask (:func:`publish_mode`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask, read without changing it where the system allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is read by setting
    and restoring it (``os.umask`` has no read-only form), which is only racy
    against another thread creating files in the same instant.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike[str], *, folder: bool = False) -> None:
    """Give ``path`` the mode a plain ``open()`` (or ``mkdir``) would: 0666 (0777 for
    a folder) less the umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    The final file gets the mode ``open()`` would give it (0644 under umask 022),
    not ``mkstemp``'s 0600.

    Example::

        with atomic_path("out/results.json") as tmp:
            tmp.write_text(text)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        publish_mode(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
