"""Weights on the Hugging Face Hub: ``hf-hub:owner/repo[@revision]`` fetched with huggingface_hub.
More: docs/models.md, "Hugging Face Hub"."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llrnet.core.errors import UsageError, WeightsError, first_line
from llrnet.models.weights import load_weights, read_metadata

__all__ = ["HF_PREFIX", "HubName", "fetch_hf", "load_hf_weights", "parse_hf_name",
           "read_hf_metadata"]

HF_PREFIX = "hf-hub:"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
INSTALL = "pip install 'llrnet[hf]'"

_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubName:
    """A parsed ``hf-hub:owner/repo[@revision]`` name (``revision`` None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return HF_PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


@dataclass(frozen=True)
class HubFiles:
    """A repository's files in huggingface_hub's cache.

    Attributes:
        name: what was asked for.
        weights: the cached ``model.safetensors``.
        config: the parsed ``config.json``, None when the repository has none.
        commit: the commit the files were resolved to (from the cache's snapshot folder).
    """

    name: HubName
    weights: Path
    config: dict[str, Any] | None
    commit: str


def parse_hf_name(name: str) -> HubName:
    """``hf-hub:owner/repo`` or ``hf-hub:owner/repo@revision`` (a branch, tag or commit).

    Raises:
        UsageError: not of that form.
    """
    rest = name[len(HF_PREFIX):] if name.startswith(HF_PREFIX) else ""
    repo, _, revision = rest.partition("@")
    if not _REPO.fullmatch(repo) or ("@" in rest and not revision):
        raise UsageError(f"{name!r} is not a Hugging Face Hub name; write "
                         "hf-hub:owner/repo or hf-hub:owner/repo@revision")
    return HubName(repo, revision or None)


def _huggingface_hub() -> Any:
    try:
        import huggingface_hub  # deferred: optional dependency (llrnet[hf])
        import huggingface_hub.constants  # deferred: as above (a lazy package: load both)
        import huggingface_hub.errors  # deferred: as above
    except ImportError:
        raise UsageError(f"hf-hub: names need the package huggingface_hub: {INSTALL}") from None
    return huggingface_hub


def _offline(hub: Any) -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE
    return bool(hub.constants.HF_HUB_OFFLINE) or env


def _download(hub: Any, name: HubName, filename: str, *, offline: bool,
              optional: bool = False) -> Path | None:
    """``hf_hub_download`` of one file; None when the repository has no such file (or,
    offline, for an ``optional`` file that is not cached: the repository had none when its
    weights were fetched, since both are fetched together).

    Raises:
        WeightsError: every other failure, in llrnet's words.
    """
    errors = hub.errors
    remote_missing = getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)
    try:
        return Path(hub.hf_hub_download(name.repo_id, filename, revision=name.revision,
                                        local_files_only=offline))
    except errors.LocalEntryNotFoundError as error:  # before its base class EntryNotFoundError
        if offline and optional:
            return None
        if offline:
            raise WeightsError(
                f"{name}: {filename} is not in the Hugging Face cache "
                f"({hub.constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set; fetch it once "
                "online") from None
        cause = error.__cause__ or error
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if status is not None:
            raise WeightsError(f"{name}: the Hub answered HTTP {status} for {filename}, and "
                               "no copy is cached") from None
        raise WeightsError(f"{name}: {hub.constants.ENDPOINT} could not be reached and "
                           f"{filename} is not cached ({first_line(cause)})") from None
    except errors.RepositoryNotFoundError:
        raise WeightsError(f"{name}: no such model repository on {hub.constants.ENDPOINT} "
                           "(or it is private or gated: log in with `hf auth login`)") from None
    except errors.RevisionNotFoundError:
        raise WeightsError(f"{name}: the repository has no revision {name.revision!r}") from None
    except remote_missing:
        return None
    except errors.HfHubHTTPError as error:
        status = getattr(error.response, "status_code", "?")
        raise WeightsError(f"{name}: the Hub answered HTTP {status} for {filename}") from None
    except (OSError, ValueError) as error:  # a broken transfer, an invalid repository id
        raise WeightsError(f"{name}: {filename} could not be downloaded: "
                           f"{first_line(error)}") from None
    except Exception as error:  # the HTTP client's own errors (connection, protocol)
        raise WeightsError(f"{name}: {filename} could not be downloaded: "
                           f"{type(error).__name__}: {first_line(error)}") from None


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml"))


def fetch_hf(name: str, *, offline: bool | None = None) -> HubFiles:
    """Download (or find in huggingface_hub's cache) a repository's weights and config.

    ``offline`` None follows ``HF_HUB_OFFLINE``; True uses the cache only. The
    Hub's address and cache are huggingface_hub's (``HF_ENDPOINT``, ``HF_HOME``,
    ``HF_HUB_CACHE``); a pinned revision is fetched as it is.

    Raises:
        UsageError: a malformed name, or huggingface_hub is not installed.
        WeightsError: the repository, revision or file is missing, the Hub cannot
            be reached and nothing is cached, the transfer broke, or the file is an
            HTML page.
    """
    parsed = parse_hf_name(name)
    hub = _huggingface_hub()
    offline = _offline(hub) if offline is None else offline
    weights = _download(hub, parsed, WEIGHTS_FILE, offline=offline)
    if weights is None:
        raise WeightsError(f"{parsed}: the repository has no {WEIGHTS_FILE}; upload an "
                           "llrnet weights file (llrnet export-hf writes one)")
    if _looks_like_html(weights):
        raise WeightsError(f"{parsed}: {WEIGHTS_FILE} is an HTML page, not a weights file "
                           f"(a login or error page stored in its place; cached at {weights})")
    config = None
    config_path = _download(hub, parsed, CONFIG_FILE, offline=offline, optional=True)
    if config_path is not None:
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise WeightsError(f"{parsed}: {CONFIG_FILE} is not valid JSON ({error})") from None
        if not isinstance(config, dict):
            raise WeightsError(f"{parsed}: {CONFIG_FILE} is not a JSON object")
    return HubFiles(parsed, weights, config, commit=weights.parent.name)


def _in_words(error: WeightsError, files: HubFiles) -> WeightsError:
    """``error`` about the cached file, naming the Hub name and commit instead of the path."""
    where = f"{files.name} (commit {files.commit[:12]})"
    return WeightsError(str(error).replace(str(files.weights), where))


def _checked_record(files: HubFiles) -> dict[str, Any]:
    """The weights' llrnet record, checked against ``config.json``."""
    try:
        record = read_metadata(files.weights)
    except WeightsError as error:
        raise _in_words(error, files) from None
    config = files.config
    if config is None:
        return record
    named = config.get("architecture")
    if named is not None and named != record["architecture"]:
        raise WeightsError(f"{files.name}: {CONFIG_FILE} names architecture {named!r} but "
                           f"{WEIGHTS_FILE} holds {record['architecture']!r}; the repository "
                           "is inconsistent")
    args = config.get("model_args")
    if args is not None and args != record.get("kwargs", {}):
        raise WeightsError(f"{files.name}: {CONFIG_FILE}'s model_args {args} differ from "
                           f"{WEIGHTS_FILE}'s recorded arguments {record.get('kwargs', {})}")
    return record


def read_hf_metadata(name: str, *, offline: bool | None = None) -> dict[str, Any]:
    """The llrnet record of ``hf-hub:owner/repo[@revision]``'s weights (:func:`fetch_hf`)."""
    return _checked_record(fetch_hf(name, offline=offline))


def load_hf_weights(name: str, *, device: str | torch.device = "cpu",
                    offline: bool | None = None) -> nn.Module:
    """:func:`llrnet.models.load_weights` of ``hf-hub:owner/repo[@revision]``.

    The file is fetched (:func:`fetch_hf`), its record checked against the
    repository's ``config.json`` (architecture and ``model_args``), then loaded
    exactly as a local file: strict, hash-checked, never unpickled. The
    record gains ``hub`` (the name, repository, revision asked for and commit).

    Raises:
        WeightsError: as :func:`fetch_hf`; a file without an llrnet record; a
            ``config.json`` that disagrees with the record; a corrupt file.
    """
    files = fetch_hf(name, offline=offline)
    _checked_record(files)
    try:
        model = load_weights(files.weights, device=device)
    except WeightsError as error:
        raise _in_words(error, files) from None
    record = dict(model.llrnet_metadata)  # type: ignore[arg-type]
    record["hub"] = {"name": str(files.name), "repo_id": files.name.repo_id,
                     "revision": files.name.revision, "commit": files.commit}
    model.llrnet_metadata = record  # type: ignore[assignment]
    return model
