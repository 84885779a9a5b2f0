"""Stream one module archive to a file: timeouts, retries, progress, content checks.
More: docs/hub.md, "llrnet.hub.remote.download"."""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import requests
import urllib3
from tqdm import tqdm

from llrnet.core.errors import InputError, RunError
from llrnet.core.http import (
    PERMANENT_STATUS,
    RetryableError,
    RetryPolicy,
    request_failure,
    retrying,
)

BLOCK = 1 << 16  # a read returns once this much arrived: small keeps progress live
GZIP_MAGIC = b"\x1f\x8b"
TAR_MAGIC_OFFSET = 257  # "ustar" in a plain tar header


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
             progress: bool) -> str:
    try:
        response = session.get(url, stream=True, timeout=policy.timeout, allow_redirects=True)
    except requests.RequestException as error:
        raise RetryableError(request_failure(error, policy)) from error
    with response:
        where = response.url if response.url != url else url
        if response.status_code in PERMANENT_STATUS:
            raise InputError(f"{where}: HTTP {response.status_code} (no module there)")
        if response.status_code >= 400:
            raise RetryableError(f"HTTP {response.status_code}")
        total = int(response.headers.get("Content-Length") or 0) or None
        digest = hashlib.sha256()
        received = 0
        first = b""
        checked = False
        content_type = response.headers.get("Content-Type", "")
        # disable=None: a bar on a terminal only (not in logs or tests)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="download", file=sys.stderr,
                   disable=None if progress else True, leave=False)
        try:
            with open(target, "wb") as handle:
                # the bytes as sent: a Content-Encoding is not undone, so the
                # sha256 is the archive's and Content-Length counts the same bytes
                for block in response.raw.stream(BLOCK, decode_content=False):
                    if not checked:
                        first += block[: 512 - len(first)]
                        if len(first) >= 512:
                            _check_start(first, content_type, where)
                            checked = True
                    handle.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
        except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
            raise RetryableError(f"transfer broken after {received} bytes ({type(error).__name__})"
                             ) from error
        finally:
            bar.close()
        if received == 0:
            raise InputError(f"{where} served an empty body, not a module archive")
        if not checked:
            _check_start(first, content_type, where)
        if total is not None and received != total:
            raise RetryableError(f"truncated: {received} of {total} bytes")
        return digest.hexdigest()


def download(url: str, target: Path, *, policy: RetryPolicy | None = None,
             progress: bool = True, session: requests.Session | None = None) -> str:
    """GET ``url`` (following redirects) into the file ``target``; returns its sha256.

    Raises:
        InputError: a 4xx answer, an HTML page or a body that is not a tar archive.
        RunError: still failing after ``policy.attempts`` tries (the last reason).
    """
    policy = policy or RetryPolicy(timeout=60.0, attempts=4, backoff=2.0)
    session = session or requests.Session()
    return retrying(url, policy, lambda: _attempt(session, url, target, policy, progress),
                    give_up=lambda reason: RunError(f"could not download {url}: {reason}"),
                    level=logging.WARNING)
