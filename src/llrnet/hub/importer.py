"""The two user-facing operations: inspect a module, import it into llrnet weights."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from llrnet.core.errors import LlrnetError, RunError
from llrnet.core.http import redact_url
from llrnet.core.paths import output_file
from llrnet.hub.conversion.convert import Conversion, convert
from llrnet.hub.conversion.verify import Verification, verify_conversion
from llrnet.hub.formats.module import HubModule, open_module
from llrnet.hub.formats.savedmodel import select_meta_graph
from llrnet.hub.recognition.analyze import analyze
from llrnet.hub.remote.cache import fetch_module
from llrnet.hub.remote.download import download_limits
from llrnet.hub.remote.sources import resolve_source
from llrnet.models import save_weights

logger = logging.getLogger(__name__)


def inspect_hub(path: str | os.PathLike[str], *, verify: bool = True,
                expected_sha256: str | None = None, offline: bool = False,
                max_download: int | str | None = None) -> dict[str, Any]:
    """Signatures, variables, op histogram and architecture facts of a module
    (a folder, archive, handle or URL: :func:`open_source`).

    The facts are ``{"error": ...}`` when the graph is not a recognized network.
    """
    module = open_source(path, verify=verify, expected_sha256=expected_sha256, offline=offline,
                         max_download=max_download)
    reader = module.reader
    variables = [reader.info(name) for name in reader.names()]
    meta = select_meta_graph(module.graphs, ())
    try:
        facts: dict[str, Any] = analyze(module).facts
    except LlrnetError as error:
        facts = {"error": str(error)}
    return {
        "path": str(module.path),
        "source": redact_url(module.source),
        "sha256": module.sha256,
        "sha256_checked": module.sha256_checked,
        "meta_graphs": [{"tags": list(g.tags), "nodes": len(g.graph.node),
                         "signatures": {k: s.as_dict() for k, s in g.signatures.items()}}
                        for g in module.graphs],
        "variables": [{"name": v.name, "dtype": v.dtype, "shape": list(v.shape),
                       "bytes": v.nbytes, "partitioned": v.partitioned} for v in variables],
        "total_bytes": sum(v.nbytes for v in variables),
        "op_histogram": meta.op_histogram(),
        "architecture": facts,
    }


def _group(derived: dict[str, str]) -> dict[str, list[str]]:
    """{rule: [tensor keys]} from {key: rule}."""
    grouped: dict[str, list[str]] = {}
    for key, rule in sorted(derived.items()):
        grouped.setdefault(rule, []).append(key)
    return grouped


def _source_record(module: HubModule) -> dict[str, Any]:
    # a URL's credentials never reach the weights file (the request used them)
    return {"path": redact_url(module.source), "sha256": module.sha256,
            "sha256_checked": module.sha256_checked, "sha256_of": module.sha256_of}


def open_source(source: str | os.PathLike[str], *, verify: bool = True,
                expected_sha256: str | None = None, offline: bool = False,
                progress: bool = True, max_download: int | str | None = None) -> HubModule:
    """A module from a folder, an archive, a handle or a URL (fetched into the cache).

    ``max_download``: cap on a download in bytes (or ``"4G"``), else
    ``$LLRNET_HUB_MAX_DOWNLOAD``, else 4 GiB (``remote.download.download_limits``).
    A fetched module's ``source`` is its URL without credentials and its
    ``sha256`` the downloaded
    archive's (recorded in the cache's descriptor; the module files' hash when
    the cache was filled by tensorflow_hub, which keeps no archive hash).
    """
    resolved = resolve_source(source)
    if isinstance(resolved, Path):
        return open_module(resolved, verify=verify, expected_sha256=expected_sha256)
    cached = fetch_module(resolved, offline=offline, expected_sha256=expected_sha256,
                          progress=progress, limits=download_limits(max_download))
    module = open_module(cached.folder, verify=verify)
    if cached.sha256 is None:
        return replace(module, source=resolved.url)
    return replace(module, source=resolved.url, sha256=cached.sha256,
                   sha256_checked=cached.sha256_checked, sha256_of="archive")


def import_hub(path: str | os.PathLike[str], *, architecture: str | None = None,
               out: str | os.PathLike[str], linear: str | os.PathLike[str] | None = None,
               verify: bool = False, verify_crc: bool = True,
               expected_sha256: str | None = None, linear_sha256: str | None = None,
               tf_python: str | None = None, image_size: int = 224,
               offline: bool = False, max_download: int | str | None = None) -> dict[str, Any]:
    """Convert a TF1 Hub module (plus its linear head) into an llrnet weights file.

    Args:
        path: module folder, ``.tar.gz``, handle or URL (:func:`open_source`).
        architecture: a registered llrnet model (``llr_pretrain_adv``,
            ``resnet152_v2_imagenet``, ``wrn_40_8_softplus``, or small variants);
            None: read from the module (a registered name that matches it
            exactly, else its family builder with every argument).
        out: the ``.safetensors`` file to write.
        linear: the ``llr-pretrain-adv/linear`` module, for bird-or-bicycle models.
        verify: also compare with TensorFlow (skipped, and recorded so, without it).
        verify_crc: check checkpoint CRC32C (default on).
        offline: use only the module cache for handles and URLs.
        max_download: cap on each module download (:func:`open_source`).

    Returns:
        The metadata record written (``source``, ``checks``, ``import`` facts).

    Raises:
        WeightsError: incomplete mapping (exact lists in the message).
        RunError: TensorFlow verification failed (nothing is written).
    """
    output_file(out, what="weights file (--out)")  # before the conversion's work
    module = open_source(path, verify=verify_crc, expected_sha256=expected_sha256,
                         offline=offline, max_download=max_download)
    head = None if linear is None else open_source(linear, verify=verify_crc,
                                                   expected_sha256=linear_sha256,
                                                   offline=offline, max_download=max_download)
    conversion: Conversion = convert(module, architecture=architecture, linear=head)
    verification = (_verify(conversion, module, head, tf_python, image_size) if verify
                    else None)
    record = _import_record(conversion, module, head, verification)
    return save_weights(conversion.model, out, record)


def _verify(conversion: Conversion, module: HubModule, head: HubModule | None,
            tf_python: str | None, image_size: int) -> Verification:
    """The comparison with TensorFlow on ``image_size``-pixel images (logged).

    Raises:
        RunError: the comparison failed.
    """
    verification = verify_conversion(conversion, module, head, tf_python=tf_python,
                                     image_size=image_size)
    if verification.status == "failed":
        raise RunError(f"verification against TensorFlow failed: {verification.reason}")
    logger.info("verification %s: %s", verification.status, verification.reason)
    return verification


def _import_record(conversion: Conversion, module: HubModule, head: HubModule | None,
                   verification: Verification | None) -> dict[str, Any]:
    """The weights file's metadata record: sources, checks and the import's facts."""
    checks = list(conversion.checks)
    checks.append("sha256 matched the published/expected value" if module.sha256_checked
                  else "sha256 recorded (no expected value known)")
    if verification is not None:
        checks.append(f"tensorflow: {verification.status}: {verification.reason}")
    source: dict[str, Any] = {"module": _source_record(module)}
    if head is not None:
        source["linear"] = _source_record(head)
    return {
        "source": source,
        "recipe": "converted from TF-Hub by llrnet import-hub",
        "checks": checks,
        "import": {
            "facts": conversion.facts,
            "derived_tensors": _group(conversion.derived),
            "ignored_variables": conversion.ignored,
            "bookkeeping": conversion.bookkeeping,
            "verification": None if verification is None else verification.as_dict(),
        },
    }
