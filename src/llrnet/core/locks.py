"""Folder locks: ``fcntl.flock`` on a lock file that names its holder (pid, host, start time), so
a second process on the same folder stops at once with one line saying who holds it.
More: docs/core.md, "llrnet.core.locks"."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llrnet.core.errors import RunError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, nothing is locked
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".llrnet.lock"
"""The lock file's name in a locked folder (it stays there; only the lock is released)."""


def holder_line() -> str:
    """``pid P on HOST since YYYY-MM-DDTHH:MM:SSZ`` for this process, now."""
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"pid {os.getpid()} on {socket.gethostname()} since {started}"


def read_holder(path: str | os.PathLike[str]) -> str:
    """The holder recorded in lock file ``path`` (its first line), or ``another process``
    when it is empty or unreadable (the holder has not written it yet)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(400).strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "another process"


@contextmanager
def folder_lock(folder: str | os.PathLike[str], *, what: str, name: str = LOCK_FILE,
                shared: bool = False, wait: bool = False) -> Iterator[Path]:
    """Hold a lock on ``folder`` (created if missing) for the ``with`` body.

    The lock is ``fcntl.flock`` on ``folder/name``, exclusive (or ``shared``:
    several shared holders, no exclusive one), taken without waiting (``wait``:
    waiting for the holder, for locks only ever held for a moment); the
    holder writes :func:`holder_line` into the file. The kernel releases it when
    the process ends, however it ends, so a killed holder never leaves a stale
    lock. ``what`` names the folder in the error (e.g. ``"run folder"``).
    Yields the lock file's path. When the body wrote nothing beside the lock
    file into a folder the lock created, the file and that folder are removed
    on exit, so a run refused early leaves no trace.

    Raises:
        RunError: another process holds the lock; the message names the folder,
            the holder (pid, host, start time) and what to do.
    """
    root = Path(folder)
    created = _missing_folders(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    if fcntl is None:  # pragma: no cover
        yield path
        return
    try:
        with _locked(root, path, what, shared, wait):
            yield path
    finally:
        _tidy(created, path)


def _missing_folders(root: Path) -> list[Path]:
    """``root`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    current = root.absolute()
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    return missing


def _tidy(created: list[Path], path: Path) -> None:
    """Remove the lock file and the folders the lock created when nothing else was
    written into them (a run refused before it wrote anything leaves no folder)."""
    if not created:
        return
    try:
        if [entry.name for entry in created[0].iterdir()] != [path.name]:
            return
        path.unlink()
        for folder in created:
            folder.rmdir()
    except OSError:  # another process wrote there meanwhile: leave it
        return


@contextmanager
def _locked(root: Path, path: Path, what: str, shared: bool, wait: bool) -> Iterator[None]:
    assert fcntl is not None
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                        | (0 if wait else fcntl.LOCK_NB))
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunError(f"{what} {root} is in use by {read_holder(path)}; wait for that "
                           "process to finish (or stop it), or use another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder_line() + "\n").encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
