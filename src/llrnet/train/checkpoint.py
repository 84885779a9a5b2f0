"""Training checkpoints: atomic, checksummed, never unpickled.
More: docs/training.md, "llrnet.train.checkpoint"."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llrnet.core.errors import RunError, first_line, pickle_refusal
from llrnet.core.fileio import atomic_write_bytes, atomic_write_json

_NAME = re.compile(r"^step-(\d{8,})\.(pt|json)$")


def _stem(step: int) -> str:
    return f"step-{step:08d}"


def checkpoint_path(directory: str | Path, step: int) -> Path:
    """The ``.pt`` file of the checkpoint of ``step`` in ``directory``."""
    return Path(directory) / f"{_stem(step)}.pt"


def save_checkpoint(directory: str | Path, step: int, state: dict[str, Any],
                    *, keep: int = 3) -> Path:
    """Write ``state`` as the checkpoint of ``step``; keep only the newest ``keep``.

    ``state`` must hold only tensors, numbers, strings, None, and lists/tuples/dicts
    of them (what ``torch.load(weights_only=True)`` accepts). Returns the ``.pt`` path.
    """
    folder = Path(directory)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = folder / f"{_stem(step)}.pt"
    atomic_write_bytes(path, data)
    atomic_write_json(folder / f"{_stem(step)}.json", {
        "step": step, "file": path.name, "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    })
    _prune(folder, keep)
    return path


def _steps(folder: Path) -> list[int]:
    found = set()
    if folder.is_dir():
        for entry in folder.iterdir():
            match = _NAME.match(entry.name)
            if match:
                found.add(int(match.group(1)))
    return sorted(found)


def _prune(folder: Path, keep: int) -> None:
    for step in _steps(folder)[:-keep] if keep > 0 else []:
        for suffix in (".pt", ".json"):
            (folder / f"{_stem(step)}{suffix}").unlink(missing_ok=True)


def _verify(folder: Path, step: int) -> tuple[bytes | None, str]:
    """The checkpoint's bytes if it is complete and intact, else ``(None, reason)``."""
    manifest_path = folder / f"{_stem(step)}.json"
    path = folder / f"{_stem(step)}.pt"
    if not path.is_file():
        return None, "its .pt file is missing"
    if not manifest_path.is_file():
        return None, "it has no manifest (the job was probably killed while writing it)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        expected, size = str(manifest["sha256"]), int(manifest["bytes"])
    except (ValueError, KeyError, TypeError):
        return None, "its manifest is unreadable"
    data = path.read_bytes()
    if len(data) != size:
        return None, f"it is truncated ({len(data)} of {size} bytes)"
    if hashlib.sha256(data).hexdigest() != expected:
        return None, "its sha256 does not match the manifest (corrupt)"
    return data, ""


def latest_checkpoint(directory: str | Path) -> tuple[int, dict[str, Any]] | None:
    """``(step, state)`` of the newest intact checkpoint in ``directory``, or None.

    Damaged checkpoints are reported with a :class:`RuntimeWarning` (once each:
    the command shows warnings as one line, so they are not logged as well)
    and skipped; the previous good one is returned.
    """
    folder = Path(directory)
    for step in reversed(_steps(folder)):
        data, reason = _verify(folder, step)
        if data is None:
            message = f"checkpoint {folder / _stem(step)}.pt is unusable: {reason}; " \
                      "falling back to the previous one"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            continue
        try:
            with warnings.catch_warnings():  # torch's note on a foreign pickle protocol
                warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
                state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:  # a matching hash but unloadable content: report, go on
            message = f"checkpoint {folder / _stem(step)}.pt cannot be read " \
                      f"({pickle_refusal(error)}); falling back to the previous one"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            continue
        return step, state
    return None


def checkpoint_mismatch(expected: Mapping[str, Any], state: Any,
                        error: BaseException | None = None) -> str:
    """Why checkpoint ``state`` does not fit a run whose own checkpoint would be
    ``expected`` (a trainer's ``state_dict()``), in words: an entry it lacks, or
    for each model state (``model``, ``ema``) the missing and unexpected tensor
    names and the first tensor of another shape. Falls back to ``error``'s first line.
    """
    if not isinstance(state, Mapping):
        return f"it holds a {type(state).__name__}, not a mapping of states"
    lacking = [key for key in expected if key not in state]
    if lacking:
        return f"it has no {_listed(lacking)} entr{'y' if len(lacking) == 1 else 'ies'}"
    problems = []
    for key in ("model", "ema"):
        mine, theirs = expected.get(key), state.get(key)
        if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
            problems += [f"{key}: {text}" for text in _tensor_mismatch(mine, theirs)]
        elif isinstance(mine, Mapping) and theirs is not None:
            problems.append(f"{key}: a {type(theirs).__name__}, not a mapping of tensors")
    if problems:
        return "; ".join(problems)
    return first_line(error) if error is not None else "its states do not load"


def _tensor_mismatch(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[str]:
    """Missing and unexpected names and the first shape difference, each as words."""
    found = []
    missing = [name for name in mine if name not in theirs]
    unexpected = [name for name in theirs if name not in mine]
    if missing:
        found.append(f"missing tensor(s) {_listed(missing)}")
    if unexpected:
        found.append(f"unexpected tensor(s) {_listed(unexpected)}")
    for name, tensor in mine.items():
        other = theirs.get(name)
        if isinstance(tensor, torch.Tensor) and other is not None and (
                not isinstance(other, torch.Tensor) or other.shape != tensor.shape):
            shape = list(other.shape) if isinstance(other, torch.Tensor) else \
                type(other).__name__
            found.append(f"{name!r} has shape {shape} in the checkpoint, "
                         f"{list(tensor.shape)} in this run")
            break
    return found


def _listed(names: list[str], shown: int = 3) -> str:
    """``'a', 'b', 'c' and 4 more``."""
    text = ", ".join(repr(name) for name in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def has_checkpoints(directory: str | Path) -> bool:
    """True when ``directory`` holds any checkpoint file (intact or not)."""
    return bool(_steps(Path(directory)))


# --- random number generator states --------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and Python RNG states, as loadable tensors/values."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    try:
        torch.set_rng_state(state["torch"])
        numpy_state = state["numpy"]
        np.random.set_state((numpy_state["kind"],
                             numpy_state["keys"].numpy().astype(np.uint32),
                             numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached"]))
        python = state["python"]
        random.setstate((python["version"], tuple(int(v) for v in python["internal"].tolist()),
                         python["gauss"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise RunError(f"checkpoint RNG state is malformed: {error}") from None
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
