"""The resumable state of an evaluation: a manifest plus one file per finished batch.
More: docs/evaluation.md, "llrnet.eval.state"."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from llrnet.core.errors import UsageError
from llrnet.core.fileio import atomic_path, atomic_write_json
from llrnet.core.locks import folder_lock

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DIGEST_KEY = "sha256"
RUN_KEY = "run"
"""The chunk metadata entry holding the run fingerprint (:func:`run_fingerprint`)."""
MANIFEST_LOCK = ".manifest.lock"
"""Held while the manifest is checked or written (in the state folder)."""
DISCARDED = "discarded"
"""Where a restart moves the previous state (``OUT/discarded/state``)."""


def run_fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest as key-sorted JSON: the model's hash, the suite and
    its options, the seed, the batch size, the data and the precision of a run."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def chunk_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """The sha256 that a chunk stores under ``metadata["sha256"]``.

    Covers each tensor's name, dtype, shape and bytes (in name order) and every
    other metadata entry, so a change to any of them changes the digest.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        header = json.dumps([name, str(tensor.dtype), list(tensor.shape)])
        digest.update(header.encode() + b"\0")
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    entries = {key: value for key, value in metadata.items() if key != DIGEST_KEY}
    digest.update(json.dumps(entries, sort_keys=True).encode())
    return digest.hexdigest()


@dataclass
class ChunkResult:
    """One finished batch of one attack.

    ``indices`` int64 [n] global image indices; ``labels`` int64 [n];
    ``logits`` float32 [n, K] of the model on the attack's final images;
    ``model_evaluations``: images the attack forwarded (its own count);
    ``wall_time`` seconds; ``adversarial`` float32 [m, C, H, W] (the first m
    adversarial images of the batch) or None; ``disagreements``: final images
    on which the bf16 copy's decision differs from the fp32 model's (None in
    an fp32 run).
    """

    indices: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    model_evaluations: float
    wall_time: float
    adversarial: torch.Tensor | None = None
    disagreements: int | None = None


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(current))
    found = []
    for key in keys:
        if saved.get(key) != current.get(key):
            old = json.dumps(saved.get(key), sort_keys=True)
            new = json.dumps(current.get(key), sort_keys=True)
            found.append(f"{key}: saved {old[:80]} != now {new[:80]}")
    return found


class RunState:
    """Reads and writes the state folder of one evaluation output directory.

    ``run`` is the run fingerprint (:func:`run_fingerprint` of the manifest) that
    every chunk written records and every chunk reused must carry; set by
    :meth:`check_manifest` (or given).
    """

    def __init__(self, out_dir: str | Path, run: str | None = None) -> None:
        self.root = Path(out_dir) / "state"
        self.run = run

    def check_manifest(self, manifest: dict[str, Any]) -> bool:
        """Compare ``manifest`` with the saved one. Returns True if one was saved.

        Also binds this state to the run (:attr:`run`).

        Raises :class:`UsageError` naming the differing arguments when the saved
        state belongs to a different evaluation, and when the folder holds
        chunks but no manifest (:meth:`saved_manifest`).
        """
        self.run = run_fingerprint(json.loads(json.dumps(manifest, sort_keys=True)))
        saved = self.saved_manifest()
        if saved is None:
            if self.has_chunks():
                raise UsageError(
                    f"{self.root.parent} holds evaluation results but no {MANIFEST} (deleted?), "
                    "so nothing says which run they belong to; rerun with --restart "
                    "(restart=True) to start over, or use a new --out folder")
            return False
        current = json.loads(json.dumps(manifest, sort_keys=True))
        differences = _differences(saved, current)
        if differences:
            raise UsageError(
                f"{self.root.parent} holds an evaluation with different arguments "
                f"({'; '.join(differences[:3])}); use another output folder or rerun with "
                "--restart (restart=True) to discard it"
            )
        return True

    def saved_manifest(self) -> dict[str, Any] | None:
        """The saved manifest, or None if there is none.

        Raises :class:`UsageError` if it exists but cannot be read or is not a
        JSON object.
        """
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(saved, dict):
                raise ValueError(f"a JSON {type(saved).__name__}, not an object")
        except (OSError, ValueError) as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UsageError(f"{path} is damaged ({reason}); rerun with --restart "
                             "(restart=True) to start over, or use a new --out folder") \
                from None
        return saved

    def has_chunks(self) -> bool:
        """True when the state folder holds any chunk file (of any attack)."""
        return self.root.is_dir() and any(self.root.glob("*/chunk_*.safetensors"))

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Save ``manifest`` (atomically)."""
        atomic_write_json(self.root / MANIFEST, manifest)

    def discard(self) -> Path | None:
        """Move the state folder to ``OUT/discarded/state`` (replacing an earlier one),
        so a restart begins from nothing; the folder moved to, or None if none."""
        if not self.root.exists():
            return None
        target = self.root.parent / DISCARDED / self.root.name
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.root.rename(target)
        return target

    @contextmanager
    def manifest_lock(self, enabled: bool = True) -> Iterator[None]:
        """Hold the state folder's manifest lock (``state/.manifest.lock``) if ``enabled``,
        waiting for another process that holds it (it is held only while a manifest is
        checked or written: processes running other attacks start side by side)."""
        if not enabled:
            yield
            return
        with folder_lock(self.root, what="evaluation output folder", name=MANIFEST_LOCK,
                         wait=True):
            yield

    @contextmanager
    def locked(self, names: Sequence[str], enabled: bool = True) -> Iterator[None]:
        """Hold the lock of each attack in ``names`` (``state/NAME.lock``) if ``enabled``.

        Processes that run different attacks of one suite may share an output
        folder; a second process running the same attack stops here.

        Raises:
            RunError: another process holds one of them (naming that process).
        """
        with ExitStack() as stack:
            if enabled:
                for name in names:
                    stack.enter_context(folder_lock(
                        self.root, what=f"the attack {name} in", name=f"{name}.lock"))
            yield

    def chunk_path(self, attack: str, chunk: int) -> Path:
        """The file of ``chunk`` of ``attack``."""
        return self.root / attack / f"chunk_{chunk:05d}.safetensors"

    def load_chunk(self, attack: str, chunk: int,
                   indices: Sequence[int] | None = None) -> ChunkResult | None:
        """The saved chunk, or None if it is missing, unreadable, damaged or not this
        run's chunk ``chunk`` of ``attack`` on ``indices``.

        A chunk is reused only if its sha256 matches its content and it records
        this place (``attack``, ``chunk``), this run (:attr:`run`, when set) and
        these image ``indices`` (when given). Any other chunk is reported with a
        warning naming the file and why; the caller then computes that batch
        again (and overwrites it).
        """
        path = self.chunk_path(attack, chunk)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            if DIGEST_KEY not in meta:
                raise ValueError("it has no sha256 (written by an older version?)")
            if chunk_digest(tensors, meta) != meta[DIGEST_KEY]:
                raise ValueError("its sha256 does not match its content (corrupt)")
            _check_place(meta, tensors, attack, chunk, self.run, indices)
            return ChunkResult(
                indices=tensors["indices"],
                labels=tensors["labels"],
                logits=tensors["logits"],
                model_evaluations=float(meta["model_evaluations"]),
                wall_time=float(meta["wall_time"]),
                adversarial=tensors.get("adversarial"),
                disagreements=int(meta["disagreements"]) if meta.get("disagreements") else None,
            )
        except (SafetensorError, OSError, KeyError, ValueError) as error:
            logger.warning("ignoring damaged, unreadable or misplaced state file %s (%s); "
                           "redoing that batch", path, error)
            return None

    def save_chunk(self, attack: str, chunk: int, result: ChunkResult) -> None:
        """Write ``result`` atomically, recording its place and the run fingerprint."""
        tensors = {
            "indices": result.indices.detach().cpu().to(torch.int64).contiguous(),
            "labels": result.labels.detach().cpu().to(torch.int64).contiguous(),
            "logits": result.logits.detach().cpu().to(torch.float32).contiguous(),
        }
        if result.adversarial is not None:
            tensors["adversarial"] = result.adversarial.detach().cpu().float().contiguous()
        metadata = {
            "attack": attack,
            "chunk": str(chunk),
            "model_evaluations": repr(float(result.model_evaluations)),
            "wall_time": repr(float(result.wall_time)),
        }
        if self.run is not None:
            metadata[RUN_KEY] = self.run
        if result.disagreements is not None:
            metadata["disagreements"] = str(int(result.disagreements))
        metadata[DIGEST_KEY] = chunk_digest(tensors, metadata)
        with atomic_path(self.chunk_path(attack, chunk)) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)


def _check_place(meta: dict[str, str], tensors: dict[str, torch.Tensor], attack: str,
                 chunk: int, run: str | None, indices: Sequence[int] | None) -> None:
    """Raise ValueError unless the chunk records ``attack``, ``chunk``, ``run`` (when
    not None) and ``indices`` (when not None)."""
    if meta.get("attack") != attack or meta.get("chunk") != str(chunk):
        raise ValueError(f"it is chunk {meta.get('chunk')} of attack {meta.get('attack')!r}, "
                         f"not chunk {chunk} of {attack!r} (copied?)")
    if run is not None and meta.get(RUN_KEY) != run:
        recorded = str(meta.get(RUN_KEY, "none"))[:12]
        raise ValueError(f"it belongs to another run (fingerprint {recorded}, this run "
                         f"{run[:12]}: another model, data or options)")
    if indices is not None and tensors["indices"].tolist() != list(indices):
        raise ValueError("it holds other images than this chunk's")
