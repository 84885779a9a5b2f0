"""``llrnet data download``: fetch, process and verify the bird-or-bicycle images.
More: docs/data.md, "llrnet.data.bird_or_bicycle.download"."""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from llrnet.core.errors import RunError, UsageError
from llrnet.core.fileio import atomic_write_bytes, atomic_write_json
from llrnet.core.http import FetchError, RetryPolicy, TransferLimits, fetch, redact_url
from llrnet.core.paths import output_folder
from llrnet.data.bird_or_bicycle.extras import ExtrasRule, select_extras_from_url
from llrnet.data.bird_or_bicycle.idlists import fetch_id_lists, parse_id_list, split_ids
from llrnet.data.bird_or_bicycle.process import check_stored_image, process_image_bytes
from llrnet.data.bird_or_bicycle.sources import CLASSES, SPLIT_SIZES, SPLITS, VERSION, Sources

log = logging.getLogger(__name__)

#: Where datasets live unless told otherwise.
DEFAULT_ROOT = Path("~/datasets/bird_or_bicycle").expanduser()

REPORT_NAME = "download_report.json"

#: Default cap on one image (or id list) download, in bytes.
MAX_IMAGE_BYTES = 64 << 20
ENV_MAX_IMAGE_BYTES = "LLRNET_BOB_MAX_IMAGE_SIZE"
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class _DiskFullError(Exception):
    """A worker could not write an image: the disk (or quota) is full."""


@dataclass(frozen=True)
class ImageJob:
    """One image to have on disk."""

    split: str
    class_name: str
    image_id: str
    path: Path


@dataclass
class DownloadReport:
    """Summary of one ``download`` run (also written as JSON).

    Attributes:
        downloaded: images fetched and written by this run.
        skipped: images already present and valid (not fetched again).
        failed: one entry per image that is still missing, with the reason.
        expected: ``{split: {class: count}}`` the dataset should hold.
        present: ``{split: {class: count}}`` valid images on disk at the end.
    """

    root: str
    splits: list[str]
    downloaded: int = 0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    expected: dict[str, dict[str, int]] = field(default_factory=dict)
    present: dict[str, dict[str, int]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    extras_rule: dict[str, object] | None = None
    started: str = ""
    finished: str = ""

    @property
    def complete(self) -> bool:
        """True iff nothing failed and every split holds its expected count."""
        return not self.failed and self.present == self.expected

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the content of ``download_report.json``)."""
        return {
            "version": VERSION,
            "root": self.root,
            "splits": self.splits,
            "complete": self.complete,
            "downloaded": self.downloaded,
            "skipped": self.skipped,
            "failed_count": len(self.failed),
            "failed": self.failed,
            "expected": self.expected,
            "present": self.present,
            "sources": self.sources,
            "extras_rule": self.extras_rule,
            "started": self.started,
            "finished": self.finished,
        }

    def summary(self) -> str:
        """One line for humans."""
        missing = sum(self.expected[s][c] - self.present[s][c]
                      for s in self.expected for c in self.expected[s])
        return (f"downloaded {self.downloaded}, skipped {self.skipped} (already valid), "
                f"failed {len(self.failed)}, missing {missing}")


def parse_splits(text: str | Sequence[str]) -> list[str]:
    """``"train,test"`` (or a sequence) -> validated list in canonical order."""
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    names = [s for s in names if s]
    unknown = [s for s in names if s not in SPLITS]
    if unknown or not names:
        raise UsageError(f"unknown splits {unknown or names}; choose from {', '.join(SPLITS)}")
    return [s for s in SPLITS if s in names]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class _Sessions:
    """One ``requests.Session`` per worker thread (sessions are not thread-safe)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = "llrnet-dataset-downloader"
            self._local.session = session
        return session


def download(
    root: str | Path = DEFAULT_ROOT,
    splits: str | Sequence[str] = ("train", "test"),
    *,
    workers: int = 16,
    sources: Sources | None = None,
    policy: RetryPolicy | None = None,
    extras_rule: ExtrasRule | None = None,
    progress: bool = True,
    max_image_bytes: int | str | None = None,
) -> DownloadReport:
    """Download (or complete) the bird-or-bicycle splits under ``root``.

    Args:
        root: dataset root; images go to ``<root>/0.0.4/<split>/<class>/<id>.jpg``.
        splits: any of "train", "test", "extras" (comma-separated or a sequence).
        workers: parallel downloads (threads).
        sources: URLs (mirrors, tests); default: pinned originals / environment.
        policy: timeouts and retries per URL.
        extras_rule: extras selection; ``ExtrasRule(exclude_ambiguous=True)`` drops
            images showing both classes.
        progress: show progress bars.
        max_image_bytes: cap on one image or id list download in bytes (or
            ``"64M"``); else ``$LLRNET_BOB_MAX_IMAGE_SIZE``, else 64 MiB. The
            minimum rate comes from ``$LLRNET_MIN_RATE`` / ``$LLRNET_RATE_WINDOW``.

    Returns:
        The report (also written to ``<root>/0.0.4/download_report.json``).
        Check :attr:`DownloadReport.complete`.

    Raises:
        RunError: the id lists cannot be fetched or fail their sha256 check
            (then nothing is written), or the box CSV cannot be read.
        OSError: ``OSError(ENOSPC, "no space left on device", <root>/0.0.4)``
            at the first full-disk write: the run stops there, every image on
            disk is complete, and a rerun goes on where it stopped.
    """
    split_names = parse_splits(splits)
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    limits = TransferLimits.from_env(max_image_bytes, env=ENV_MAX_IMAGE_BYTES,
                                     default=MAX_IMAGE_BYTES, flag="--max-image-size")
    run = _Download(splits=split_names, sources=sources or Sources(),
                    policy=policy or RetryPolicy(), extras_rule=extras_rule or ExtrasRule(),
                    base=output_folder(root, what="dataset root (--root)") / VERSION,
                    sessions=_Sessions(), workers=workers, progress=progress, limits=limits)
    report = _new_report(root, run)
    try:
        id_lists = _fetch_id_lists(run)  # checked before anything is written
        wanted = _wanted_ids(run, id_lists, report)
        jobs = [ImageJob(s, c, i, run.base / s / c / f"{i}.jpg")
                for s in run.splits for c in CLASSES for i in wanted[s][c]]
        _remove_stale_temporaries(run.base, run.splits)
        _run_jobs(jobs, report, run)
        _finish_report(run, report, jobs)
    except (OSError, _DiskFullError) as error:
        if isinstance(error, OSError) and error.errno not in _DISK_FULL:
            raise
        _stale_report(run.base)
        raise OSError(errno.ENOSPC, "no space left on device", str(run.base)) from None
    return report


def _stale_report(base: Path) -> None:
    """Remove a report of an earlier run, which would describe a dataset this run
    changed (writing a new one needs the space that is missing)."""
    try:
        (base / REPORT_NAME).unlink(missing_ok=True)
    except OSError:
        log.debug("could not remove %s", base / REPORT_NAME)


@dataclass(frozen=True)
class _Download:
    """What the steps of one :func:`download` share; ``base`` is ``<root>/<VERSION>``."""

    splits: list[str]
    sources: Sources
    policy: RetryPolicy
    extras_rule: ExtrasRule
    base: Path
    sessions: _Sessions
    workers: int
    progress: bool
    limits: TransferLimits


def _new_report(root: str | Path, run: _Download) -> DownloadReport:
    """The run's report, started now, naming the id lists' and the images' sources."""
    report = DownloadReport(root=str(Path(root).expanduser()), splits=run.splits,
                            started=_now())
    report.sources = {"id_lists": redact_url(str(run.sources.id_list_base)),
                      "images": redact_url(str(run.sources.image_base))}
    return report


def _fetch_id_lists(run: _Download) -> dict[str, list[str]]:
    """``{class: ids}``: the id lists, fetched and checked, then stored under ``metadata/``.

    Raises:
        RunError: a list cannot be fetched or fails its sha256 check (nothing is written).
    """
    raw_lists = fetch_id_lists(run.sources, policy=run.policy, session=run.sessions.get(),
                               cache=run.base / "metadata", limits=run.limits)
    id_lists = {name: parse_id_list(data, name) for name, data in raw_lists.items()}
    for name, data in raw_lists.items():
        atomic_write_bytes(run.base / "metadata" / f"{name}_image_ids.csv", data)
    return id_lists


def _wanted_ids(run: _Download, id_lists: dict[str, list[str]], report: DownloadReport
                ) -> dict[str, dict[str, list[str]]]:
    """``{split: {class: ids}}``, with the counts each split should hold in ``report``
    (and, for the extras, the box CSV and the selection rule)."""
    wanted: dict[str, dict[str, list[str]]] = {}
    for split in run.splits:
        if split == "extras":
            report.sources["boxes"] = redact_url(str(run.sources.boxes_url))
            report.extras_rule = run.extras_rule.as_dict()
            wanted[split] = _extras_ids(run.base, run.sources, id_lists, run.extras_rule,
                                        run.policy, run.sessions.get(), run.progress)
        else:
            wanted[split] = {c: split_ids(id_lists[c], split) for c in CLASSES}
    report.expected = {
        s: {c: SPLIT_SIZES[s] if s != "extras" else run.extras_rule.per_class for c in CLASSES}
        for s in run.splits
    }
    return wanted


def _finish_report(run: _Download, report: DownloadReport, jobs: list[ImageJob]) -> None:
    """Count the images present, stamp the end time, write the report and log its summary."""
    report.present = {s: {c: 0 for c in CLASSES} for s in run.splits}
    failed = {(f["split"], f["class"], f["id"]) for f in report.failed}
    for job in jobs:
        if (job.split, job.class_name, job.image_id) not in failed:
            report.present[job.split][job.class_name] += 1
    report.finished = _now()
    atomic_write_json(run.base / REPORT_NAME, report.as_dict())
    (log.info if report.complete else log.error)("bird-or-bicycle: %s", report.summary())


def _extras_ids(
    base: Path,
    sources: Sources,
    id_lists: dict[str, list[str]],
    rule: ExtrasRule,
    policy: RetryPolicy,
    session: requests.Session,
    progress: bool,
) -> dict[str, list[str]]:
    """The extras selection, from the cache if it was made with the same rule and CSV."""
    cache = base / "metadata" / "extras_ids.json"
    key = {"rule": rule.as_dict(), "boxes_url": redact_url(str(sources.boxes_url))}
    if cache.exists():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("key") == key:
                log.info("using the cached extras selection %s", cache)
                return {c: list(stored["ids"][c]) for c in CLASSES}
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable extras cache %s", cache)
    exclude = {c: split_ids(id_lists[c], "test") + split_ids(id_lists[c], "train")
               for c in CLASSES}
    log.info("selecting extras from %s (streamed)", redact_url(str(sources.boxes_url)))
    try:
        ids = select_extras_from_url(str(sources.boxes_url), exclude, rule,
                                     policy=policy, session=session, progress=progress)
    except FetchError as error:
        raise RunError(f"could not read the box annotations: {error}") from None
    atomic_write_json(cache, {"key": key, "ids": ids})
    return ids


def _remove_stale_temporaries(base: Path, splits: Iterable[str]) -> None:
    """Delete temporary files left by a killed run (``.<name>.*.tmp``)."""
    for split in splits:
        for tmp in (base / split).glob("*/.*.tmp"):
            tmp.unlink(missing_ok=True)


def _run_jobs(jobs: list[ImageJob], report: DownloadReport, run: _Download) -> None:
    """Fetch the missing images (``run.workers`` threads), counting each outcome in ``report``."""
    sources, policy, sessions = run.sources, run.policy, run.sessions
    full = threading.Event()  # set at the first full-disk write: the rest do nothing

    def one(job: ImageJob) -> tuple[ImageJob, str, str]:
        if full.is_set():
            raise _DiskFullError
        if check_stored_image(job.path) is None:
            return job, "skipped", ""
        url = sources.image_url(job.image_id)
        try:
            data = fetch(url, policy=policy, session=sessions.get(), process=process_image_bytes,
                         limits=run.limits)
        except FetchError as error:
            return job, "failed", error.reason
        if full.is_set():
            raise _DiskFullError
        try:
            atomic_write_bytes(job.path, data)
        except OSError as error:
            if error.errno in _DISK_FULL:
                full.set()
                raise _DiskFullError from None
            return job, "failed", f"could not write {job.path}: {error}"
        return job, "downloaded", ""

    pool = ThreadPoolExecutor(max_workers=run.workers)
    try:
        with tqdm(total=len(jobs), unit="img", desc="bird-or-bicycle",
                  disable=not run.progress) as bar:
            futures = [pool.submit(one, job) for job in jobs]
            for future in as_completed(futures):
                job, outcome, reason = future.result()
                bar.update(1)
                if outcome == "skipped":
                    report.skipped += 1
                elif outcome == "downloaded":
                    report.downloaded += 1
                else:
                    log.warning("failed %s/%s/%s: %s", job.split, job.class_name, job.image_id,
                                reason)
                    report.failed.append({
                        "split": job.split, "class": job.class_name, "id": job.image_id,
                        "url": redact_url(sources.image_url(job.image_id)), "reason": reason,
                    })
    finally:
        # On Ctrl-C or an unexpected error, do not wait for the queued downloads.
        pool.shutdown(wait=True, cancel_futures=True)
    report.failed.sort(key=lambda f: (f["split"], f["class"], f["id"]))
