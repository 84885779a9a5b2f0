"""The pinned id lists: fetch, check sha256, parse, and split into test/train."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import requests

from llrnet.core.errors import RunError, UsageError
from llrnet.core.http import FetchError, RetryPolicy, TransferLimits, fetch, redact_url
from llrnet.data.bird_or_bicycle.sources import SPLIT_SIZES, Sources

_ID = re.compile(r"^[0-9a-f]{16}$")


def fetch_id_lists(
    sources: Sources,
    *,
    policy: RetryPolicy,
    session: requests.Session | None = None,
    cache: Path | None = None,
    limits: TransferLimits | None = None,
) -> dict[str, bytes]:
    """Download both id lists and check them against the pinned sha256 digests.

    A list already in ``cache`` (``<class>_image_ids.csv``) whose digest matches
    the pin is used without a request, so a resumed download needs no GitHub.
    Returns ``{"bicycle": bytes, "bird": bytes}``; nothing is written to disk.

    Raises:
        RunError: a list could not be fetched, or its sha256 differs from the pin.
    """
    raw: dict[str, bytes] = {}
    for name in sorted(sources.id_list_sha256):
        expected = sources.id_list_sha256[name]
        cached = cache / f"{name}_image_ids.csv" if cache is not None else None
        if cached is not None and cached.is_file():
            data = cached.read_bytes()
            if hashlib.sha256(data).hexdigest() == expected:
                raw[name] = data
                continue
        url = sources.id_list_url(name)
        try:
            data = fetch(url, policy=policy, session=session, process=bytes, limits=limits)
        except FetchError as error:
            raise RunError(f"could not fetch the {name} id list: {error}") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise RunError(
                f"sha256 mismatch for {redact_url(url)}: got {digest}, expected {expected}; "
                "nothing was written (is the id-list URL pointing at version 0.0.4?)"
            )
        raw[name] = data
    return raw


def parse_id_list(data: bytes, name: str) -> list[str]:
    """One 16-hex OpenImages id per line -> list of ids in file order.

    Raises:
        RunError: a non-empty line is not an id.
    """
    ids: list[str] = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        if not _ID.match(text):
            raise RunError(f"{name} id list line {number} is not a 16-hex id: {text[:40]!r}")
        ids.append(text)
    return ids


def split_ids(ids: list[str], split: str) -> list[str]:
    """The ids of ``split`` ('test' or 'train') from one class's list.

    test = the first 125 ids, train = ids 126..250 (docs/challenge.md section 1).
    """
    n_test, n_train = SPLIT_SIZES["test"], SPLIT_SIZES["train"]
    if split == "test":
        return ids[:n_test]
    if split == "train":
        return ids[n_test : n_test + n_train]
    raise UsageError(f"split_ids handles 'train' and 'test', not {split!r}")
