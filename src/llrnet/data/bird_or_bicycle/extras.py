"""Selecting the 'extras' split from OpenImages V4 box annotations.
More: docs/data.md, "llrnet.data.bird_or_bicycle.extras"."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import requests
from tqdm import tqdm

from llrnet.core.errors import InputError
from llrnet.core.http import (
    FetchError,
    PermanentError,
    RetryableError,
    RetryPolicy,
    TransferLimits,
    check_status,
    get,
    iter_body,
    redact_url,
)
from llrnet.data.bird_or_bicycle.sources import LABEL_IDS, SPLIT_SIZES

log = logging.getLogger(__name__)

#: Minimum box area (normalized, strict '>') for an extras image.
MIN_BOX_AREA = 0.04

_COLUMNS = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")


@dataclass(frozen=True)
class ExtrasRule:
    """Parameters of the extras selection (defaults: the original's)."""

    per_class: int = SPLIT_SIZES["extras"]
    min_area: float = MIN_BOX_AREA
    exclude_ambiguous: bool = False

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, stored next to the cached selection."""
        return {
            "per_class": self.per_class,
            "min_area": self.min_area,
            "exclude_ambiguous": self.exclude_ambiguous,
        }


def select_extras(
    lines: Iterable[str],
    exclude: Mapping[str, Iterable[str]],
    rule: ExtrasRule | None = None,
) -> dict[str, list[str]]:
    """Apply the extras rule to the lines of a box CSV (header first).

    Args:
        lines: text lines of ``train-annotations-bbox.csv``, header included.
        exclude: class name -> that class's train/test ids.
        rule: selection parameters.

    Returns:
        ``{"bicycle": [...], "bird": [...]}``, each sorted, at most
        ``rule.per_class`` ids (fewer if the CSV has fewer candidates).

    Raises:
        InputError: the header lacks a needed column or a row is malformed.
    """
    rule = rule or ExtrasRule()
    label_to_class = {label: name for name, label in LABEL_IDS.items()}
    qualifying: dict[str, set[str]] = {name: set() for name in LABEL_IDS}
    present: dict[str, set[str]] = {name: set() for name in LABEL_IDS}
    iterator = iter(lines)
    header = next(csv.reader([next(iterator, "")]), [])
    missing = [c for c in _COLUMNS if c not in header]
    if missing:
        raise InputError(f"box CSV header lacks columns {missing}; got {header[:13]}")
    col = {name: header.index(name) for name in _COLUMNS}
    for number, line in enumerate(iterator, start=2):
        # Cheap pre-filter: nearly all of the 14.6 M rows are other classes.
        if not any(label in line for label in label_to_class):
            continue
        row = next(csv.reader([line]))
        class_name = label_to_class.get(row[col["LabelName"]])
        if class_name is None:
            continue
        image_id = row[col["ImageID"]]
        present[class_name].add(image_id)
        try:
            width = float(row[col["XMax"]]) - float(row[col["XMin"]])
            height = float(row[col["YMax"]]) - float(row[col["YMin"]])
        except (ValueError, IndexError):
            raise InputError(f"box CSV line {number} is malformed: {line.strip()[:120]}") from None
        if width * height > rule.min_area:
            qualifying[class_name].add(image_id)

    all_excluded = {i for ids in exclude.values() for i in ids}
    selected: dict[str, list[str]] = {}
    for name in sorted(LABEL_IDS):
        candidates = qualifying[name] - set(exclude.get(name, ()))
        if rule.exclude_ambiguous:
            others = set().union(*(present[o] for o in LABEL_IDS if o != name))
            candidates -= others | all_excluded
        selected[name] = sorted(candidates)[: rule.per_class]
        if len(selected[name]) < rule.per_class:
            log.warning("only %d extras candidates for %s (wanted %d)",
                        len(selected[name]), name, rule.per_class)
    return selected


#: Default cap on the box CSV download (14.6 M rows, about 1.2 GB), in bytes.
MAX_BOXES_BYTES = 4 << 30
ENV_MAX_BOXES_BYTES = "LLRNET_BOB_MAX_BOXES_SIZE"


def stream_csv_lines(
    url: str, *, policy: RetryPolicy, session: requests.Session, progress: bool = True
) -> Iterator[str]:
    """Yield the text lines of a (large) CSV at ``url`` without storing it.

    The transfer is bounded like every download (:class:`TransferLimits`: the
    cap is ``$LLRNET_BOB_MAX_BOXES_SIZE``, default 4 GiB, and the minimum rate).
    A progress bar shows bytes received. A broken transfer raises
    :class:`FetchError`; the caller restarts the whole stream.
    """
    limits = TransferLimits.from_env(None, env=ENV_MAX_BOXES_BYTES, default=MAX_BOXES_BYTES)
    try:
        response, _ = get(session, url, policy, headers={"Accept-Encoding": "identity"})
    except (RetryableError, PermanentError) as error:
        raise FetchError(url, str(error)) from None
    with response:
        try:
            check_status(response)
        except (RetryableError, PermanentError) as error:
            raise FetchError(url, str(error)) from None
        total = int(response.headers.get("Content-Length", 0) or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc="box annotations",
                  disable=not progress) as bar:
            rest = b""
            try:
                for block in iter_body(response, limits, policy=policy, decode=True):
                    bar.update(len(block))
                    lines = (rest + block).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        yield line.rstrip(b"\r").decode("utf-8")
            except RetryableError as error:
                raise FetchError(url, str(error)) from None
            except PermanentError as error:
                raise FetchError(url, str(error), permanent=True) from None
            if rest:
                yield rest.rstrip(b"\r").decode("utf-8")


def select_extras_from_url(
    url: str,
    exclude: Mapping[str, Iterable[str]],
    rule: ExtrasRule,
    *,
    policy: RetryPolicy,
    session: requests.Session | None = None,
    progress: bool = True,
) -> dict[str, list[str]]:
    """Stream the box CSV at ``url`` and select the extras (restarting on failures).

    Raises:
        FetchError: the CSV could not be read completely in ``policy.attempts`` tries.
    """
    session = session or requests.Session()
    last: FetchError | None = None
    for attempt in range(1, policy.attempts + 1):
        try:
            return select_extras(
                stream_csv_lines(url, policy=policy, session=session, progress=progress),
                exclude,
                rule,
            )
        except FetchError as error:
            if error.permanent:
                raise
            last = error
            log.warning("reading %s failed (%s); attempt %d of %d",
                        redact_url(url), error.reason, attempt, policy.attempts)
            if attempt < policy.attempts:
                time.sleep(policy.wait(attempt))
    assert last is not None  # the loop ran at least once
    raise FetchError(url, f"{last.reason} (after {policy.attempts} attempts)")
