"""tensorflow_hub's module cache, filled the way tensorflow_hub fills it.
More: docs/hub.md, "llrnet.hub.remote.cache"."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from llrnet.core.errors import InputError
from llrnet.core.fileio import atomic_write_text, temporary_folder
from llrnet.core.http import RetryPolicy, TransferLimits, redact_url
from llrnet.hub.formats.archive import DISK_FULL, cache_folder, extract_archive, module_root
from llrnet.hub.remote.download import download
from llrnet.hub.remote.sources import RemoteModule

SHA256_LINE = "Archive sha256: "


def llrnet_cache() -> Path:
    """``$LLRNET_CACHE`` or ``~/.cache/llrnet``: every cache of llrnet lives below."""
    return Path(os.environ.get("LLRNET_CACHE") or Path.home() / ".cache" / "llrnet")


def hub_cache_root() -> Path:
    """``$TFHUB_CACHE_DIR`` (shared with tensorflow_hub) or ``<llrnet cache>/hub``."""
    shared = os.environ.get("TFHUB_CACHE_DIR")
    return Path(shared) if shared else llrnet_cache() / "hub"


def checked_cache_root(root: Path | None = None) -> Path:
    """``root`` (default :func:`hub_cache_root`), checked to be a folder or creatable.

    Raises:
        InputError: it, or the nearest existing folder above it, is a file; the
            message names the variable that chose it.
    """
    if root is None:
        root = hub_cache_root()
        variable = ("$TFHUB_CACHE_DIR" if os.environ.get("TFHUB_CACHE_DIR") else
                    "$LLRNET_CACHE" if os.environ.get("LLRNET_CACHE") else "the default")
    else:
        variable = "the caller"
    return cache_folder(root, f"the module cache {root} (chosen by {variable})")


@dataclass(frozen=True)
class CachedModule:
    """A module in the cache: its folder, the archive's sha256 (None when the cache
    was filled by tensorflow_hub, which does not record it) and whether it was
    compared with a pinned value."""

    folder: Path
    sha256: str | None
    sha256_checked: bool
    downloaded: bool


def cached_folder(remote: RemoteModule, root: Path | None = None) -> Path:
    """Where ``remote`` lives in the cache (present or not)."""
    return (root or hub_cache_root()) / remote.cache_key


def is_cached(remote: RemoteModule, root: Path | None = None) -> bool:
    folder = cached_folder(remote, root)
    return folder.is_dir() and any(folder.iterdir())


def _descriptor(folder: Path) -> Path:
    return folder.with_name(folder.name + ".descriptor.txt")


def recorded_sha256(folder: Path) -> str | None:
    """The archive sha256 llrnet wrote into the descriptor, if any."""
    try:
        text = _descriptor(folder).read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(SHA256_LINE):
            return line[len(SHA256_LINE):].strip() or None
    return None


def fetch_module(remote: RemoteModule, *, offline: bool = False, root: Path | None = None,
                 expected_sha256: str | None = None, policy: RetryPolicy | None = None,
                 progress: bool = True, limits: TransferLimits | None = None) -> CachedModule:
    """The cached module folder of ``remote``, downloading it first if needed.

    Args:
        offline: never download; a module missing from the cache is an error.
        expected_sha256: the archive's hash (else the pinned one, if any).
        limits: the download's size cap and minimum rate (default
            :func:`llrnet.hub.remote.download.download_limits`); the extraction's
            caps come from :meth:`llrnet.hub.formats.archive.ExtractionLimits.from_env`.

    Raises:
        InputError: offline and not cached; a 4xx, HTML or non-tar answer; a
            sha256 mismatch; a cap passed; a redirect loop or to a non-http(s)
            URL; the cache root is a file. The cache is unchanged.
        RunError: the download kept failing (network).
        OSError: ``OSError(ENOSPC, "no space left on device", <cache root>)`` on a
            full disk (the cache is unchanged).
    """
    root = checked_cache_root(root)
    try:
        return _fetch(remote, offline, root, expected_sha256, policy, progress, limits)
    except OSError as error:
        if error.errno in DISK_FULL:
            raise OSError(errno.ENOSPC, "no space left on device", str(root)) from None
        raise


def _fetch(remote: RemoteModule, offline: bool, root: Path, expected_sha256: str | None,
           policy: RetryPolicy | None, progress: bool, limits: TransferLimits | None
           ) -> CachedModule:
    """:func:`fetch_module` in a checked ``root``."""
    folder = cached_folder(remote, root)
    expected = (expected_sha256 or remote.pinned_sha256 or "").lower() or None
    if is_cached(remote, root):
        recorded = recorded_sha256(folder)
        if expected is not None and recorded is not None and recorded != expected:
            raise InputError(f"{folder}: cached archive sha256 {recorded} does not match the "
                             f"expected {expected}; remove the folder to download again")
        return CachedModule(module_root(folder), recorded,
                            expected is not None and recorded == expected, False)
    if offline:
        raise InputError(f"{redact_url(remote.url)} is not in the cache ({folder}) and "
                         "downloads are off (offline); run once with network access, or set "
                         "TFHUB_CACHE_DIR to a cache that has it")
    work = temporary_folder(folder)
    try:
        archive = work / "module.tar.gz"
        digest = download(remote.fetch_url, archive, policy=policy, progress=progress,
                          limits=limits)
        shown = redact_url(remote.fetch_url)
        if expected is not None and digest != expected:
            raise InputError(f"{shown}: archive sha256 {digest} does not match the "
                             f"pinned {expected}; the download is corrupt or not the "
                             "published module (the cache is unchanged)")
        try:
            extract_archive(archive, work / "module")
        except InputError as error:
            raise InputError(f"{shown}: {error}") from None
        module_root(work / "module")  # exactly one saved_model.pb, before it is published
        if is_cached(remote, root):  # another process finished first: keep its copy
            return CachedModule(module_root(folder), recorded_sha256(folder), False, False)
        if folder.exists():
            shutil.rmtree(folder)  # an empty folder counts as absent
        os.replace(work / "module", folder)
        try:
            atomic_write_text(_descriptor(folder), (
                f"Module: {redact_url(remote.url)}\n"
                f"Download Time: {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                f"Downloader Hostname: {socket.gethostname()} (PID:{os.getpid()})\n"
                f"{SHA256_LINE}{digest}\n"))
        except OSError:  # (a full disk) no module without its descriptor
            shutil.rmtree(folder, ignore_errors=True)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CachedModule(module_root(folder), digest, expected is not None, True)
