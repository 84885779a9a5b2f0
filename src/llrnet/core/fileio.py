"""Atomic file writes: write to a temporary file in the same folder, then rename. A killed job
leaves the old file or none, never a half-written one; its leftovers are swept by the next run.
More: docs/core.md, "llrnet.core.fileio"."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from llrnet.core.paths import output_file

logger = logging.getLogger(__name__)

STALE_AFTER = 3600.0
"""Seconds without change after which a temporary of unknown liveness is stale."""

_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"
_OURS = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
# Names from versions before the writer was recorded: atomic files, hub extractions.
_LEGACY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$|^\.[0-9a-f]{16}\.[a-z0-9_]{8}$")
_swept: set[str] = set()


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
    A ``path`` that is a folder (or below a file) is refused before anything is
    written (:func:`llrnet.core.paths.output_file`).
    The final file gets the mode ``open()`` would give it (0644 under umask 022),
    not ``mkstemp``'s 0600.

    Example::

        with atomic_path("out/results.json") as tmp:
            tmp.write_text(text)
    """
    target = output_file(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(target.parent)
    fd, name = tempfile.mkstemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        publish_mode(tmp)
        os.replace(tmp, target)
    except Exception as error:
        if _disk_full(error):  # named by the file being written, not its hidden temporary
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)) from error
        raise
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


@contextmanager
def utf8_name(path: str | os.PathLike[str]) -> Iterator[str]:
    """``path`` as a UTF-8 ``str`` that a library refusing other names (safetensors)
    can open while the context lasts: ``path`` itself when its name is UTF-8, else
    ``/proc/self/fd/N`` of the file opened here (Linux; elsewhere ``path`` as given).
    """
    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes kept as surrogates (PEP 383)
        if Path("/proc/self/fd").is_dir():
            fd = os.open(name, os.O_RDONLY)
            try:
                yield f"/proc/self/fd/{fd}"
            finally:
                os.close(fd)
            return
    yield name


def temporary_folder(target: str | os.PathLike[str]) -> Path:
    """A new empty folder beside ``target``, named as a temporary of it, to be
    renamed to ``target`` when complete (the caller removes it on failure)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(target.parent)
    return Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent))


def remove_stale_temporaries(folder: str | os.PathLike[str], *,
                             max_age: float = STALE_AFTER) -> list[Path]:
    """Remove the stale temporaries (see the module docstring) in ``folder``.

    Returns the paths removed; each is also logged. Entries that are not
    temporaries of ours are never touched.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        match = _OURS.match(name)
        if match is None and not _LEGACY.match(name):
            continue
        dead = (match is not None and match["host"] == _HOST
                and not _alive(int(match["pid"])))
        try:
            if not dead and now - _last_change(entry) <= max_age:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # removed meanwhile (its writer finished, or another sweep)
            continue
        except OSError as error:
            logger.warning("cannot remove the stale temporary %s (%s)", entry, error)
            continue
        logger.info("removed the stale temporary %s", entry)
        removed.append(entry)
    return removed


def _disk_full(error: BaseException) -> bool:
    """True for a full disk or quota, whether raised as ``OSError`` or as another
    library's error whose text carries the system's (safetensors' ``IoError``)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(error)
    return any(sign in text for sign in (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT),
                                         f"os error {errno.ENOSPC}", "StorageFull"))


SHORT_NAME = 64
"""Bytes of a target's name kept in its temporary's name; a longer name is replaced by
its hash, so a temporary is at most ~130 bytes and any legal (<= 255 bytes) name works."""


def _prefix(target: Path) -> str:
    name = target.name
    if len(os.fsencode(name)) > SHORT_NAME:
        name = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return f".{name}.{_HOST}-{os.getpid()}."


def _sweep_once(folder: Path) -> None:
    key = str(folder.resolve())
    if key not in _swept:
        _swept.add(key)
        remove_stale_temporaries(folder)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or a pid we cannot judge): assume alive
    return True


def _last_change(path: Path) -> float:
    """The newest modification time of ``path`` (of anything under it, for a folder)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except FileNotFoundError:
                    continue
    return newest


class NotRegularFileError(OSError):
    """A path names a FIFO, socket, device or folder where a regular file is needed."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "something else"


def open_regular_file(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (symlinks followed).

    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open
    descriptor, so a FIFO (or a device) is refused at once instead of blocking
    the reader forever, with no window between the check and the open.

    Raises:
        FileNotFoundError: no such file.
        NotRegularFileError: a FIFO, socket, device or folder; the message names
            which.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise NotRegularFileError(errno.EISDIR, "is a folder, not a regular file",
                                  os.fspath(path)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(errno.EINVAL, f"is {_kind(mode)}, not a regular file",
                                      os.fspath(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
