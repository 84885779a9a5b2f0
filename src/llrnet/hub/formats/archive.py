"""TF-Hub ``.tar.gz`` archives: sha256 check and safe extraction.
More: docs/hub.md, "llrnet.hub.formats.archive"."""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
from pathlib import Path

from llrnet.core.errors import InputError
from llrnet.core.fileio import publish_mode, temporary_folder

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
    elif not (member.isfile() or member.isdir()):
        raise InputError(f"{archive}: refusing member {name!r}: not a regular file or folder")


def extract_archive(path: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Extract ``path`` safely into the folder ``target`` (created; must not exist).

    Raises:
        InputError: an unsafe member (named in the message) or a corrupt archive.
    """
    target = Path(target)
    if target.exists():
        raise InputError(f"extraction target {target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(target)
    try:
        with tarfile.open(path, "r:*") as archive:
            members = archive.getmembers()
            for member in members:
                _check_member(member, str(path))
            archive.extractall(tmp, members=members, filter="data")
        publish_mode(tmp, folder=True)  # mkdtemp's 0700 -> what mkdir would have made
        os.replace(tmp, target)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise InputError(f"{path}: not a readable tar archive ({error})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def module_root(folder: Path) -> Path:
    """The folder holding ``saved_model.pb`` (the archive root or its only subfolder)."""
    if (folder / "saved_model.pb").is_file():
        return folder
    candidates = [p.parent for p in folder.rglob("saved_model.pb")]
    if len(candidates) == 1:
        return candidates[0]
    raise InputError(f"{folder}: expected exactly one saved_model.pb, found {len(candidates)}")
