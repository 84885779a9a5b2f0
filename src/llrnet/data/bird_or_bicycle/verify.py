"""``llrnet data verify``: is the dataset on disk complete and well-formed?
More: docs/data.md, "llrnet.data.bird_or_bicycle.verify"."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llrnet.core.errors import InputError
from llrnet.data.bird_or_bicycle.dataset import split_folder
from llrnet.data.bird_or_bicycle.download import parse_splits
from llrnet.data.bird_or_bicycle.idlists import parse_id_list, split_ids
from llrnet.data.bird_or_bicycle.process import check_stored_image
from llrnet.data.bird_or_bicycle.sources import CLASSES, SPLIT_SIZES


@dataclass
class VerifyReport:
    """Counts and problems found by :func:`verify`.

    Attributes:
        counts: ``{split: {class: number of .jpg files}}``.
        expected: ``{split: {class: expected number}}``.
        problems: ``(path, what is wrong)``, one per problem.
    """

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    expected: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True iff no problem was found."""
        return not self.problems


def verify(root: str | Path, splits: str | Sequence[str] = ("train", "test")) -> VerifyReport:
    """Check the given splits under ``root``; never raises for a bad dataset.

    Raises:
        InputError: ``root`` does not exist (nothing to verify; the message
            names the command that downloads it).
    """
    if not Path(root).expanduser().exists():
        raise InputError(f"no dataset at {root}; download it with: llrnet data download "
                         f"--root {root}")
    report = VerifyReport()
    for split in parse_splits(splits):
        folder = split_folder(root, split)
        expected_ids = _expected_ids(folder.parent, split)
        report.counts[split] = {}
        report.expected[split] = {}
        for name in CLASSES:
            expected = SPLIT_SIZES[split]
            if split == "extras" and expected_ids is not None:
                expected = _extras_per_class(folder.parent, expected)
            class_folder = folder / name
            files = sorted(class_folder.glob("*.jpg")) if class_folder.is_dir() else []
            report.counts[split][name] = len(files)
            report.expected[split][name] = expected
            if not class_folder.is_dir():
                report.problems.append((str(class_folder), "folder missing"))
                continue
            if len(files) != expected:
                report.problems.append(
                    (str(class_folder), f"{len(files)} images, expected {expected}"))
            for path in files:
                reason = check_stored_image(path)
                if reason is not None:
                    report.problems.append((str(path), reason))
            if expected_ids is not None:
                have = {p.stem for p in files}
                want = set(expected_ids[name])
                for image_id in sorted(want - have):
                    report.problems.append((str(class_folder / f"{image_id}.jpg"), "missing"))
                for image_id in sorted(have - want):
                    report.problems.append(
                        (str(class_folder / f"{image_id}.jpg"), f"not an id of the {split} split"))
    return report


def _extras_per_class(base: Path, default: int) -> int:
    """The per-class extras count the cached selection was made for."""
    try:
        stored = json.loads((base / "metadata" / "extras_ids.json").read_text())
        return int(stored["key"]["rule"]["per_class"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


def _expected_ids(base: Path, split: str) -> dict[str, list[str]] | None:
    """The split's ids from the stored id lists (None if unknown, e.g. for extras)."""
    if split == "extras":
        cache = base / "metadata" / "extras_ids.json"
        try:
            stored = json.loads(cache.read_text())
            return {c: list(stored["ids"][c]) for c in CLASSES}
        except (OSError, ValueError, KeyError, TypeError):
            return None
    lists = {c: base / "metadata" / f"{c}_image_ids.csv" for c in CLASSES}
    if not all(p.is_file() for p in lists.values()):
        return None
    return {c: split_ids(parse_id_list(p.read_bytes(), c), split) for c, p in lists.items()}
