"""A TF1 Hub module on disk: folder or archive, its checkpoint and its graphs."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from llrnet.core.errors import InputError
from llrnet.hub.formats.archive import (
    cache_folder,
    check_sha256,
    extract_archive,
    is_archive,
    known_sha256,
    module_root,
)
from llrnet.hub.formats.bundle import CheckpointReader
from llrnet.hub.formats.savedmodel import MetaGraph, read_saved_model

logger = logging.getLogger(__name__)



def extraction_cache() -> Path:
    """Where local archives are extracted: ``$LLRNET_HUB_CACHE``, else
    ``$LLRNET_CACHE/hub``, else ``~/.cache/llrnet/hub`` (read at each call)."""
    if os.environ.get("LLRNET_HUB_CACHE"):
        return Path(os.environ["LLRNET_HUB_CACHE"])
    return Path(os.environ.get("LLRNET_CACHE") or Path.home() / ".cache" / "llrnet") / "hub"


@dataclass
class HubModule:
    """A module folder with its checkpoint reader and meta-graphs.

    ``sha256`` is the archive's hash when opened from an archive, else a hash
    over the module's files (relative path and bytes, sorted); ``sha256_checked``
    says whether it was compared with a known or given value.
    """

    path: Path
    source: str
    reader: CheckpointReader
    graphs: list[MetaGraph]
    sha256: str
    sha256_checked: bool
    sha256_of: str = "module files"  # or "archive"


def folder_sha256(folder: Path) -> str:
    """sha256 over every file of ``folder`` (relative path, then bytes), sorted by path."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def open_module(path: str | os.PathLike[str], *, verify: bool = True,
                expected_sha256: str | None = None,
                cache_dir: str | os.PathLike[str] | None = None) -> HubModule:
    """Open a module folder or a published ``.tar.gz`` (sha256-checked, safely extracted).

    Args:
        path: module folder or archive.
        verify: check CRC32C of the checkpoint index and tensors.
        expected_sha256: the archive's (or folder's) expected hash; for known
            published archives it is filled in automatically.
        cache_dir: where archives are extracted (``<cache>/<sha256[:16]>``).
    """
    source = Path(path)
    if not source.exists():
        raise InputError(f"no module at {source}")
    if is_archive(source):
        expected = expected_sha256 or known_sha256(source)
        digest = check_sha256(source, expected)
        cache = Path(cache_dir) if cache_dir else extraction_cache()
        variable = ("the caller" if cache_dir else "$LLRNET_HUB_CACHE"
                    if os.environ.get("LLRNET_HUB_CACHE") else "$LLRNET_CACHE"
                    if os.environ.get("LLRNET_CACHE") else "the default")
        target = cache_folder(cache, f"the extraction cache {cache} (chosen by {variable})"
                              ) / digest[:16]
        if not target.exists():
            logger.debug("extracting %s to %s", source, target)
            extract_archive(source, target)
        folder = module_root(target)
        checked = expected is not None
    else:
        if not source.is_dir():
            raise InputError(f"{source} is neither a module folder nor a .tar.gz archive")
        folder = module_root(source)
        digest = folder_sha256(folder)
        checked = expected_sha256 is not None
        if checked and digest != str(expected_sha256).lower():
            raise InputError(f"{folder}: sha256 {digest} does not match the expected "
                             f"{expected_sha256}")
    return HubModule(folder, str(source), CheckpointReader(folder, verify=verify),
                     read_saved_model(folder), digest, checked,
                     "archive" if is_archive(source) else "module files")
