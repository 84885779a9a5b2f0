"""Stream one module archive to a file: timeouts, retries, progress, content checks.
More: docs/hub.md, "llrnet.hub.remote.download"."""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import requests
from tqdm import tqdm

from llrnet.core.errors import InputError, RunError
from llrnet.core.http import (
    PermanentError,
    RetryPolicy,
    TransferLimits,
    check_status,
    get,
    read_body,
    redact_url,
    retrying,
)

GZIP_MAGIC = b"\x1f\x8b"
TAR_MAGIC_OFFSET = 257  # "ustar" in a plain tar header

#: Default cap of a module archive download, in bytes.
MAX_DOWNLOAD = 4 << 30
ENV_MAX_DOWNLOAD = "LLRNET_HUB_MAX_DOWNLOAD"


def download_limits(max_bytes: int | str | None = None) -> TransferLimits:
    """The limits of a module download: ``max_bytes`` (``--max-download``), else
    ``$LLRNET_HUB_MAX_DOWNLOAD``, else 4 GiB; the minimum rate from the environment."""
    return TransferLimits.from_env(max_bytes, env=ENV_MAX_DOWNLOAD, default=MAX_DOWNLOAD,
                                   flag="--max-download")


def _check_start(first: bytes, content_type: str, url: str) -> None:
    head = first.lstrip()[:64].lower()
    if "html" in content_type.lower() or head.startswith((b"<!doctype", b"<html", b"<?xml")):
        raise InputError(f"{url} answered with an HTML page, not a module archive (a "
                         "login, consent or error page; the handle may be wrong or the "
                         "service may have moved)")
    if not (first.startswith(GZIP_MAGIC) or first[TAR_MAGIC_OFFSET:TAR_MAGIC_OFFSET + 5]
            == b"ustar"):
        raise InputError(f"{url} did not serve a gzip tar archive (the body starts with "
                         f"{first[:16]!r})")


def _attempt(session: requests.Session, url: str, target: Path, policy: RetryPolicy,
             limits: TransferLimits, progress: bool) -> str:
    response, where = get(session, url, policy)
    shown = redact_url(where)
    with response:
        try:
            check_status(response)
        except PermanentError as error:
            raise InputError(f"{shown}: {error} (no module there)") from None
        announced = response.headers.get("Content-Length", "").strip()
        total = int(announced) if announced.isdigit() else None
        digest = hashlib.sha256()
        first = bytearray()
        content_type = response.headers.get("Content-Type", "")
        # disable=None: a bar on a terminal only (not in logs or tests)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="download", file=sys.stderr,
                   disable=None if progress else True, leave=False)
        try:
            with open(target, "wb") as handle:

                def sink(block: bytes) -> None:
                    if len(first) < 512:
                        first.extend(block[: 512 - len(first)])
                        if len(first) >= 512:
                            _check_start(bytes(first), content_type, shown)
                    handle.write(block)
                    digest.update(block)
                    bar.update(len(block))

                # the bytes as sent: a Content-Encoding is not undone, so the
                # sha256 is the archive's and Content-Length counts the same bytes
                received = read_body(response, limits, sink, policy=policy)
        finally:
            bar.close()
        if received == 0:
            raise InputError(f"{shown} served an empty body, not a module archive")
        if len(first) < 512:
            _check_start(bytes(first), content_type, shown)
        return digest.hexdigest()


def download(url: str, target: Path, *, policy: RetryPolicy | None = None,
             progress: bool = True, session: requests.Session | None = None,
             limits: TransferLimits | None = None) -> str:
    """GET ``url`` (following http(s) redirects) into the file ``target``; returns its sha256.

    ``limits``: the size cap and minimum rate (default :func:`download_limits`).

    Raises:
        InputError: a 4xx answer, an HTML page, a body that is not a tar archive,
            a redirect loop or to a non-http(s) URL, a TLS error, a body over the cap.
        RunError: still failing after ``policy.attempts`` tries (the last reason).
        OSError: ``target`` cannot be written (a full disk).
    """
    policy = policy or RetryPolicy(timeout=60.0, attempts=4, backoff=2.0)
    session = session or requests.Session()
    limits = limits or download_limits()
    shown = redact_url(url)
    return retrying(url, policy,
                    lambda: _attempt(session, url, target, policy, limits, progress),
                    give_up=lambda reason: RunError(f"could not download {shown}: {reason}"),
                    refuse=lambda reason: InputError(f"{shown}: {reason}"),
                    level=logging.WARNING)
