"""Weights files: safetensors tensors + a JSON metadata record. Never pickle.
More: docs/models.md, "llrnet.models.weights"."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from llrnet import __version__
from llrnet.core.contracts import check_materialized
from llrnet.core.devices import resolve_device
from llrnet.core.errors import UsageError, WeightsError
from llrnet.core.fileio import atomic_path, utf8_name
from llrnet.models.registry import build_model, check_model_arguments

METADATA_KEY = "llrnet"
FORMAT_VERSION = 1


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of ``tensors`` in sorted order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _describe(model: nn.Module) -> tuple[str, dict[str, Any]]:
    architecture = getattr(model, "llrnet_architecture", None)
    kwargs = getattr(model, "llrnet_kwargs", None)
    if architecture is None or kwargs is None:
        raise WeightsError(
            "model was not built with llrnet.models.create_model, so its architecture "
            "cannot be recorded; build it with create_model(name, **kwargs)"
        )
    return str(architecture), dict(kwargs)


def save_weights(
    model: nn.Module, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``model``'s state to ``path`` (safetensors) with a metadata record.

    ``metadata`` may hold ``recipe``, ``metrics``, ``source``, ``preprocessing``
    and any other JSON-serializable fields; ``architecture``, ``kwargs``,
    ``sha256``, ``llrnet_version`` and ``format_version`` are filled in. The
    file is written to a temporary name and renamed, so a crash never leaves a
    half-written file under ``path``. Returns the record written.
    """
    architecture, kwargs = _describe(model)
    check_materialized(model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    record: dict[str, Any] = dict(metadata or {})
    record.update(
        format_version=FORMAT_VERSION,
        architecture=architecture,
        kwargs=kwargs,
        llrnet_version=__version__,
        sha256=tensors_sha256(tensors),
    )
    preprocessing = getattr(model, "preprocess", None)
    if "preprocessing" not in record and preprocessing is not None:
        record["preprocessing"] = repr(preprocessing)
    try:
        text = json.dumps(record, sort_keys=True)
    except TypeError as error:
        raise WeightsError(f"metadata is not JSON-serializable: {error}") from None
    with atomic_path(path) as tmp:  # written by Python: any file name, OSError on a full disk
        tmp.write_bytes(save(tensors, metadata={METADATA_KEY: text}))
    return record


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata record of a weights file (no tensors are read); ``hf-hub:owner/repo``
    names are fetched first (:mod:`llrnet.models.hf_hub`)."""
    if isinstance(path, str) and path.startswith("hf-hub:"):
        from llrnet.models.hf_hub import read_hf_metadata  # deferred: optional huggingface_hub

        return read_hf_metadata(path)
    with _open(path) as handle:
        return _record(handle.metadata(), path)


def _open(path: str | os.PathLike[str]) -> Any:
    if not Path(path).is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with utf8_name(path) as name:  # the file stays mapped once opened
            return safe_open(name, framework="pt")
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path} is not a valid safetensors file: {error}") from None


def _record(raw: Mapping[str, str] | None, path: str | os.PathLike[str]) -> dict[str, Any]:
    if not raw or METADATA_KEY not in raw:
        raise WeightsError(f"{path} has no llrnet metadata record")
    try:
        record = json.loads(raw[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise WeightsError(f"{path}: metadata record is not valid JSON ({error})") from None
    if not isinstance(record, dict) or "architecture" not in record:
        raise WeightsError(f"{path}: metadata record lacks 'architecture'")
    return record


def load_state_strict(model: nn.Module, tensors: Mapping[str, torch.Tensor],
                      *, source: str = "weights") -> None:
    """Copy ``tensors`` into ``model``; every key must match in name, shape and dtype.

    A dtype mismatch is an error rather than a silent cast: an int32 kernel
    cast to float32 is a different file from the one that was saved.

    Raises:
        WeightsError: listing missing, unexpected, mis-shaped and mis-typed tensors.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    shapes = sorted(
        f"{k} {tuple(tensors[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(tensors)
        if tuple(tensors[k].shape) != tuple(expected[k].shape)
    )
    dtypes = sorted(
        f"{k} {tensors[k].dtype} != {expected[k].dtype}"
        for k in set(expected) & set(tensors)
        if tensors[k].dtype != expected[k].dtype
    )
    problems = []
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected: {', '.join(extra)}")
    if shapes:
        problems.append(f"wrong shape: {', '.join(shapes)}")
    if dtypes:
        problems.append(f"wrong dtype: {', '.join(dtypes)}")
    if problems:
        raise WeightsError(f"{source} does not match the model; " + "; ".join(problems))
    model.load_state_dict(dict(tensors), strict=True)


def load_weights(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild the model recorded in ``path`` and load its tensors (strict, hashed).

    The returned model is in eval mode on ``device``; its record is attached as
    ``model.llrnet_metadata``. ``path`` may be ``hf-hub:owner/repo[@revision]``: the
    Hugging Face Hub's file, fetched into its cache (:mod:`llrnet.models.hf_hub`).
    """
    if isinstance(path, str) and path.startswith("hf-hub:"):
        from llrnet.models.hf_hub import load_hf_weights  # deferred: optional huggingface_hub

        return load_hf_weights(path, device=device)
    target = resolve_device(device)
    with _open(path) as handle:
        record = _record(handle.metadata(), path)
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    digest = tensors_sha256(tensors)
    if record.get("sha256") != digest:
        raise WeightsError(
            f"{path}: tensor sha256 {digest[:16]}... does not match the record "
            f"{str(record.get('sha256'))[:16]}...; the file is corrupt or was modified"
        )
    # The record is untrusted input: its kwargs are checked against the
    # architecture's signature before anything is built.
    try:
        model = build_model(str(record["architecture"]),
                            **check_model_arguments(str(record["architecture"]),
                                                    record.get("kwargs", {})))
    except UsageError as error:
        raise WeightsError(f"{path}: metadata record: {error}") from None
    load_state_strict(model, tensors, source=str(path))
    model.llrnet_metadata = record  # type: ignore[assignment]
    return model.to(target).eval()
