"""TF-Hub ``.tar.gz`` archives: sha256 check and safe extraction.
More: docs/hub.md, "llrnet.hub.formats.archive"."""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llrnet.core.errors import InputError
from llrnet.core.fileio import publish_mode, temporary_folder
from llrnet.core.http import env_number, format_size, parse_size

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
"""``errno`` values of a full disk (or quota)."""

KNOWN_SHA256: dict[str, str] = {
    "deepmind/local-linearity/imagenet/1.tar.gz":
        "12b60e87833b67dc9f0ee8559de16b5a44b6db2cf0398ae633fb2f8eed66f7f3",
}
"""Published archives whose sha256 is known, by their URL path suffix."""

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: str | os.PathLike[str]) -> bool:
    """True for a file named like a (compressed) tar archive."""
    return Path(path).is_file() and str(path).endswith(ARCHIVE_SUFFIXES)


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def known_sha256(path: str | os.PathLike[str]) -> str | None:
    """The published sha256 of ``path`` if its name ends like a known archive URL.

    ``.../deepmind/local-linearity/imagenet/1.tar.gz`` and the flattened
    ``deepmind_local-linearity_imagenet_1.tar.gz`` both match.
    """
    text = str(path).replace(os.sep, "/")
    for suffix, digest in KNOWN_SHA256.items():
        if text.endswith(suffix) or text.endswith(suffix.replace("/", "_")):
            return digest
    return None


def check_sha256(path: str | os.PathLike[str], expected: str | None) -> str:
    """sha256 of ``path``; raises if ``expected`` is given and differs."""
    actual = file_sha256(path)
    if expected is not None and actual != expected.lower():
        raise InputError(
            f"{path}: sha256 {actual} does not match the expected {expected}; the download "
            "is corrupt or not the published module"
        )
    return actual


def _check_member(member: tarfile.TarInfo, archive: str) -> None:
    name = member.name
    parts = posixpath.normpath(name).split("/")
    if name.startswith("/") or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise InputError(f"{archive}: refusing member {name!r}: path escapes the target folder")
    if member.issym() or member.islnk():
        base = posixpath.dirname(posixpath.normpath(name)) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(base, member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise InputError(f"{archive}: refusing link {name!r} -> {member.linkname!r}: "
                             "it points outside the target folder")
    elif member.issparse() or not (member.isfile() or member.isdir()):
        raise InputError(f"{archive}: refusing member {name!r}: not a regular file or folder")


MAX_EXTRACT = 16 << 30
"""Default cap on the total uncompressed size of an archive's files, in bytes."""
MAX_MEMBERS = 10_000
"""Default cap on the number of members of an archive."""
MAX_RATIO = 100.0
"""Default cap on (uncompressed size) / (archive size), applied beyond :data:`RATIO_FLOOR`."""
RATIO_FLOOR = 64 << 20
"""Uncompressed bytes below which the ratio is not checked (small archives compress well)."""
ENV_MAX_EXTRACT = "LLRNET_HUB_MAX_EXTRACT"
ENV_MAX_MEMBERS = "LLRNET_HUB_MAX_MEMBERS"
ENV_MAX_RATIO = "LLRNET_HUB_MAX_RATIO"
_HEADER_ALLOWANCE = 2048  # tar stream bytes per member beyond its data: header(s) and padding


@dataclass(frozen=True)
class ExtractionLimits:
    """Caps on what extracting one archive may write, checked before each member.

    Attributes:
        max_total: bytes of all files together (uncompressed).
        max_members: members (files, folders, links).
        max_ratio: uncompressed bytes per archive byte, once past ``ratio_floor``.
        ratio_floor: uncompressed bytes always allowed, whatever the ratio.
    """

    max_total: int = MAX_EXTRACT
    max_members: int = MAX_MEMBERS
    max_ratio: float = MAX_RATIO
    ratio_floor: int = RATIO_FLOOR

    @classmethod
    def from_env(cls) -> ExtractionLimits:
        """The defaults, overridden by ``$LLRNET_HUB_MAX_EXTRACT`` (a size such as
        ``32G``), ``$LLRNET_HUB_MAX_MEMBERS`` and ``$LLRNET_HUB_MAX_RATIO``."""
        total = os.environ.get(ENV_MAX_EXTRACT)
        return cls(parse_size(total, f"${ENV_MAX_EXTRACT}") if total else MAX_EXTRACT,
                   env_number(ENV_MAX_MEMBERS, int, MAX_MEMBERS),
                   env_number(ENV_MAX_RATIO, float, MAX_RATIO))

    def allowed(self, archive_bytes: int) -> int:
        """Uncompressed bytes allowed for an archive of ``archive_bytes``."""
        return min(self.max_total, max(self.ratio_floor, int(self.max_ratio * archive_bytes)))


class _Capped(io.RawIOBase):
    """The decompressed tar stream, read until ``limit`` bytes and no further."""

    def __init__(self, stream: io.BufferedIOBase, limit: int,
                 refuse: Callable[[], InputError]) -> None:
        self._stream, self._limit, self._refuse = stream, limit, refuse

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._stream.read(size if size is not None and size >= 0 else 1 << 16)
        if self._stream.tell() > self._limit:
            raise self._refuse()
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()


def _decompressed(path: str | os.PathLike[str]) -> io.BufferedIOBase:
    """The tar stream of ``path``: gzip, bzip2 and xz undone, a plain tar as is."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if magic.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    return open(path, "rb")


def _members(archive: tarfile.TarFile, path: str, size: int,
             limits: ExtractionLimits) -> Iterator[tarfile.TarInfo]:
    """The members of ``archive``, each checked (safety, then every cap counting it)
    before it is yielded."""
    total = 0
    allowed = limits.allowed(size)
    for count, member in enumerate(archive, start=1):
        _check_member(member, path)
        if count > limits.max_members:
            raise InputError(f"{path}: more than {limits.max_members} members, over the "
                             f"member cap (${ENV_MAX_MEMBERS}); refusing to extract")
        total += member.size if member.isfile() else 0
        if total > limits.max_total:
            raise InputError(f"{path}: uncompressed size passes {format_size(total)} at "
                             f"{member.name!r}, over the cap of {format_size(limits.max_total)}"
                             f" (${ENV_MAX_EXTRACT}); refusing to extract")
        if total > allowed:
            raise InputError(f"{path}: uncompressed size passes {format_size(total)} at "
                             f"{member.name!r}, over {limits.max_ratio:g} times the archive's "
                             f"{format_size(size)} (the ratio cap, ${ENV_MAX_RATIO}); refusing"
                             " to extract (a decompression bomb?)")
        yield member


def extract_archive(path: str | os.PathLike[str], target: str | os.PathLike[str], *,
                    limits: ExtractionLimits | None = None) -> Path:
    """Extract ``path`` safely into the folder ``target`` (created; must not exist).

    Every member is checked before anything is written (paths, links, types,
    and the caps of ``limits``: total uncompressed bytes, member count, ratio to
    the archive's size; default :meth:`ExtractionLimits.from_env`), and the caps
    are checked again before each member is written; the decompressed stream is
    never read past the caps. On any failure ``target`` does not exist.

    Raises:
        InputError: an unsafe member or a cap (named in the message), or a corrupt archive.
        OSError: the target cannot be written; a full disk is
            ``OSError(ENOSPC, "no space left on device", <target's folder>)``.
    """
    target = Path(target)
    if target.exists():
        raise InputError(f"extraction target {target} already exists")
    limits = limits or ExtractionLimits.from_env()
    size = os.path.getsize(path)
    allowed = limits.allowed(size)
    stream_cap = allowed + _HEADER_ALLOWANCE * (limits.max_members + 1)

    def refuse() -> InputError:
        return InputError(f"{path}: the uncompressed tar stream passes "
                          f"{format_size(stream_cap)}, over the extraction caps "
                          f"(${ENV_MAX_EXTRACT}, ${ENV_MAX_RATIO}); refusing to extract")

    @contextmanager
    def opened() -> Iterator[tarfile.TarFile]:
        with _decompressed(path) as stream, tarfile.open(
                fileobj=io.BufferedReader(_Capped(stream, stream_cap, refuse)), mode="r:") as tar:
            yield tar

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        with opened() as archive:  # every member checked before anything is written
            for _ in _members(archive, str(path), size, limits):
                pass
        tmp = temporary_folder(target)
        with opened() as archive:
            for member in _members(archive, str(path), size, limits):
                archive.extract(member, tmp, filter="data")
        publish_mode(tmp, folder=True)  # mkdtemp's 0700 -> what mkdir would have made
        os.replace(tmp, target)
    except OSError as error:
        if error.errno in DISK_FULL:
            raise OSError(errno.ENOSPC, "no space left on device", str(target.parent)) from None
        if error.errno is not None and not isinstance(error, gzip.BadGzipFile):
            raise
        raise InputError(f"{path}: not a readable tar archive ({error})") from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as error:
        raise InputError(f"{path}: not a readable tar archive ({error})") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def cache_folder(root: Path, what: str) -> Path:
    """``root`` if it is a folder or can be made one.

    Raises:
        InputError: ``{what} is not a folder: <the file in the way> is a file``.
    """
    for path in (root, *root.parents):
        if path.exists():
            if not path.is_dir():
                raise InputError(f"{what} is not a folder: {path} is a file; point the "
                                 "variable at a folder, or unset it")
            break
    return root


def module_root(folder: Path) -> Path:
    """The folder holding ``saved_model.pb`` (the archive root or its only subfolder)."""
    if (folder / "saved_model.pb").is_file():
        return folder
    candidates = [p.parent for p in folder.rglob("saved_model.pb")]
    if len(candidates) == 1:
        return candidates[0]
    raise InputError(f"{folder}: expected exactly one saved_model.pb, found {len(candidates)}")
