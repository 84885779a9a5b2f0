"""What a module source string names, and where a remote one is fetched from.
More: docs/hub.md, "llrnet.hub.remote.sources"."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from llrnet.core.errors import InputError
from llrnet.core.http import redact_url
from llrnet.hub.formats.archive import ARCHIVE_SUFFIXES, known_sha256

TFHUB = "https://tfhub.dev"
COMPRESSED = "tf-hub-format=compressed"
HANDLE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){1,3}/[0-9]+$")
KAGGLE = re.compile(r"^/models/(?P<owner>[^/]+)/(?P<model>[^/]+)/(?P<framework>[^/]+)/"
                    r"(?P<variation>[^/]+)/(?P<version>[0-9]+)/?$")


@dataclass(frozen=True)
class RemoteModule:
    """A module to fetch.

    Attributes:
        url: the module's identity without a query or userinfo (so no secret):
            the canonical tfhub.dev URL of a handle, else the URL as given; its
            sha1 names the cache folder.
        fetch_url: what is requested (base URL override and query applied); it
            may hold credentials: show it only through
            :func:`llrnet.core.http.redact_url`.
        handle: ``owner/model/[variation/]version`` when known (pinned hashes).
        pinned_sha256: the archive's published sha256, when llrnet knows it.
    """

    url: str
    fetch_url: str
    handle: str | None
    pinned_sha256: str | None

    @property
    def cache_key(self) -> str:
        """sha1 hex of :attr:`url` (tensorflow_hub's cache folder name)."""
        return hashlib.sha1(self.url.encode("utf-8")).hexdigest()


def hub_base_url() -> str:
    """``$LLRNET_HUB_URL`` (a mirror or a test server) or ``https://tfhub.dev``."""
    return os.environ.get("LLRNET_HUB_URL", TFHUB).rstrip("/")


def _with_query(url: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{COMPRESSED}" if parts.query else COMPRESSED
    return urlunsplit(parts._replace(query=query))


def _without_query(url: str) -> str:
    """``url`` without its query, fragment and userinfo (``user:password@``)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], query="",
                                     fragment=""))


def _pinned(handle: str | None) -> str | None:
    return None if handle is None else known_sha256(f"{handle}.tar.gz")


def from_handle(handle: str) -> RemoteModule:
    """The module ``owner/model/[variation/]version`` on tfhub.dev (or ``$LLRNET_HUB_URL``)."""
    handle = handle.strip("/")
    if not HANDLE.match(handle):
        raise InputError(f"{handle!r} is not a module handle (owner/model/version)")
    return RemoteModule(f"{TFHUB}/{handle}", _with_query(f"{hub_base_url()}/{handle}"), handle,
                        _pinned(handle))


def from_url(url: str) -> RemoteModule:
    """A tfhub.dev, Kaggle Models or direct archive URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"{redact_url(url)!r} is not an http(s) URL")
    plain = _without_query(url)  # the identity: no secret in it
    keyed = urlunsplit(parts._replace(query="", fragment=""))  # userinfo kept for the request
    if parts.path.endswith(ARCHIVE_SUFFIXES):
        return RemoteModule(plain, url, None, known_sha256(parts.path))
    if parts.hostname == "tfhub.dev" and HANDLE.match(parts.path.strip("/")):
        handle = parts.path.strip("/")
        return RemoteModule(plain, _with_query(keyed), handle, _pinned(handle))
    kaggle = KAGGLE.match(parts.path) if (parts.hostname or "").endswith("kaggle.com") else None
    if kaggle is not None:
        # tfhub.dev's handle of a Kaggle TF1 model (variation, version): unverified
        # for these modules, used only to look up a pinned hash
        handle = "/".join(kaggle.group("owner", "model", "variation", "version"))
        return RemoteModule(plain, _with_query(keyed), handle, _pinned(handle))
    return RemoteModule(plain, _with_query(urlunsplit(parts._replace(fragment=""))), None, None)


def resolve_source(source: str | os.PathLike[str]) -> Path | RemoteModule:
    """An existing path as is; a URL or handle as a :class:`RemoteModule`.

    Raises:
        InputError: neither an existing path, nor a URL, nor a handle.
    """
    text = os.fspath(source)
    path = Path(text)
    if path.exists():
        return path
    if re.match(r"^https?://", text):
        return from_url(text)
    if HANDLE.match(text.strip("/")) and not text.startswith(("/", ".")):
        return from_handle(text)
    raise InputError(f"no module at {redact_url(text)}: not an existing folder or archive, nor "
                     "a handle (owner/model/version) or an http(s) URL")
