"""Weights files: safetensors tensors + a JSON metadata record. Never pickle.
More: docs/models.md, "llrnet.models.weights"."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn
from torch.nn.modules import module as torch_module

from llrnet import __version__
from llrnet.core.contracts import check_materialized
from llrnet.core.devices import resolve_device
from llrnet.core.errors import UsageError, WeightsError
from llrnet.core.fileio import atomic_path, utf8_name
from llrnet.models.registry import build_model, check_model_arguments

METADATA_KEY = "llrnet"
FORMAT_VERSION = 2
"""The record format written: 2 adds ``arch_sha256`` (format 1 files still load, with a
warning); a file of a higher format is refused."""

_SHOWN = 4
"""Mismatched tensors named per kind in a refusal (the rest are counted)."""


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of ``tensors`` in sorted order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def architecture_sha256(architecture: str, kwargs: Any) -> str:
    """sha256 of the architecture record: the name and the builder's keyword arguments,
    as key-sorted JSON (what a weights file stores under ``arch_sha256``)."""
    text = json.dumps({"architecture": architecture, "kwargs": kwargs}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


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
    ``sha256`` (of the tensors), ``arch_sha256`` (of the architecture and
    kwargs), ``llrnet_version`` and ``format_version`` are filled in. The
    file is written to a temporary name and renamed, so a crash never leaves a
    half-written file under ``path``. Returns the record written.
    """
    architecture, kwargs = _describe(model)
    check_materialized(model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    record: dict[str, Any] = dict(metadata or {})
    try:
        stored = json.loads(json.dumps(kwargs))  # as a reader will see them (tuples: lists)
    except TypeError as error:
        raise WeightsError(f"model kwargs are not JSON-serializable: {error}") from None
    record.update(
        format_version=FORMAT_VERSION,
        architecture=architecture,
        kwargs=kwargs,
        llrnet_version=__version__,
        sha256=tensors_sha256(tensors),
        arch_sha256=architecture_sha256(architecture, stored),
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
    version = record.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise WeightsError(f"{path}: metadata record has an invalid format_version "
                           f"{version!r}"[:200])
    if version > FORMAT_VERSION:
        raise WeightsError(f"{path} has weights format {version}, newer than this llrnet "
                           f"{__version__} reads (up to {FORMAT_VERSION}); upgrade llrnet")
    return record


def check_architecture_record(record: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Check the record's ``arch_sha256`` against its architecture and kwargs.

    A format 1 file (written before the hash existed) has none: it is accepted
    with a :class:`UserWarning` saying its architecture record is unverified.

    Raises:
        WeightsError: the hash does not match (the architecture or kwargs were
            edited), or a format 2 file has none.
    """
    recorded = record.get("arch_sha256")
    if recorded is None and record.get("format_version", 1) == 1:
        warnings.warn(f"{path} is a format 1 weights file, whose architecture record is not "
                      "hashed: its architecture and kwargs are unverified (save it again "
                      "to add the hash)", UserWarning, stacklevel=3)
        return
    actual = architecture_sha256(str(record["architecture"]), record.get("kwargs", {}))
    if recorded != actual:
        raise WeightsError(
            f"{path}: the architecture record (architecture, kwargs) does not match its "
            f"arch_sha256 {str(recorded)[:16]}...; the record was modified")


@contextmanager
def _at_most(count: int, what: str) -> Iterator[None]:
    """Stop a model build (WeightsError) once it registers far more parameters and
    buffers than the file's ``count`` tensors (twice as many plus 64: room for
    buffers a state dict leaves out), before it builds the rest."""
    seen = [0]

    def counted(*_: Any) -> None:
        seen[0] += 1
        if seen[0] > 2 * count + 64:
            raise WeightsError(f"{what}: the recorded architecture has more tensors than the "
                               f"file's {count}; the record does not match the tensors")

    handles = [torch_module.register_module_parameter_registration_hook(counted),
               torch_module.register_module_buffer_registration_hook(counted)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def check_shapes(model: nn.Module, shapes: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
                 *, source: str = "weights") -> None:
    """Check the names, shapes and dtypes ``shapes`` (name -> (shape, dtype)) against
    ``model``'s state dict (which may live on the meta device); nothing is copied.

    Raises:
        WeightsError: listing (the first few) missing, unexpected, mis-shaped and
            mis-typed tensors.
    """
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    common = sorted(set(expected) & set(shapes))
    found = {
        "missing": sorted(set(expected) - set(shapes)),
        "unexpected": sorted(set(shapes) - set(expected)),
        "wrong shape": [f"{k} {shapes[k][0]} != {expected[k][0]}" for k in common
                        if tuple(shapes[k][0]) != expected[k][0]],
        "wrong dtype": [f"{k} {shapes[k][1]} != {expected[k][1]}" for k in common
                        if shapes[k][1] != expected[k][1]],
    }
    problems = []
    for kind, names in found.items():
        if names:
            more = f" (and {len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
            problems.append(f"{kind}: {', '.join(names[:_SHOWN])}{more}")
    if problems:
        raise WeightsError(f"{source} does not match the model; " + "; ".join(problems))


def _file_shapes(handle: Any) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """name -> (shape, dtype) of every tensor of an open safetensors file, from its
    header (no tensor is read)."""
    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
              "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
    shapes = {}
    for name in handle.keys():  # noqa: SIM118
        part = handle.get_slice(name)
        kind = part.get_dtype()
        shapes[name] = (tuple(int(n) for n in part.get_shape()),
                        dtypes.get(kind, kind))
    return shapes


def _checked_kwargs(record: Mapping[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """The record's kwargs checked against its architecture's signature (nothing built).

    Raises:
        WeightsError: an unknown architecture, or kwargs that are not a mapping of
            its arguments with values of their types (the message names the key).
    """
    try:
        return check_model_arguments(str(record["architecture"]), record.get("kwargs", {}))
    except UsageError as error:
        raise WeightsError(f"{path}: metadata record: {error}") from None


def _fit_on_meta(architecture: str, kwargs: Mapping[str, Any], shapes: Mapping[str, Any],
                 path: str | os.PathLike[str]) -> None:
    """Build ``architecture`` on the meta device (no memory; stopped early if it has far
    more tensors than the file) and compare every shape and dtype with the file's.

    Raises:
        WeightsError: an architecture that does not fit the tensors.
    """
    with _at_most(len(shapes), str(path)), torch.device("meta"):
        skeleton = build_model(architecture, **kwargs)
    check_shapes(skeleton, shapes, source=str(path))


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
    Nothing is allocated before the record is checked: its ``format_version``
    (newer: refused), its kwargs against the builder's signature, its
    ``arch_sha256`` (format 1 files have none: a warning), and every tensor's
    name, shape and dtype against the architecture built on the meta device.

    Raises:
        WeightsError: any of these checks fails, or the tensors' sha256 differs.
    """
    if isinstance(path, str) and path.startswith("hf-hub:"):
        from llrnet.models.hf_hub import load_hf_weights  # deferred: optional huggingface_hub

        return load_hf_weights(path, device=device)
    target = resolve_device(device)
    with _open(path) as handle:
        record = _record(handle.metadata(), path)
        # The record is untrusted input: its kwargs, its hash and every tensor's shape
        # are checked (on the meta device) before any memory is allocated.
        kwargs = _checked_kwargs(record, path)
        check_architecture_record(record, path)
        _fit_on_meta(str(record["architecture"]), kwargs, _file_shapes(handle), path)
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    digest = tensors_sha256(tensors)
    if record.get("sha256") != digest:
        raise WeightsError(
            f"{path}: tensor sha256 {digest[:16]}... does not match the record "
            f"{str(record.get('sha256'))[:16]}...; the file is corrupt or was modified"
        )
    model = build_model(str(record["architecture"]), **kwargs)
    load_state_strict(model, tensors, source=str(path))
    model.llrnet_metadata = record  # type: ignore[assignment]
    return model.to(target).eval()
