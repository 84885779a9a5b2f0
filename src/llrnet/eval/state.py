"""The resumable state of an evaluation: a manifest plus one file per finished batch.
More: docs/evaluation.md, "llrnet.eval.state"."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from llrnet.core.errors import UsageError
from llrnet.core.fileio import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DIGEST_KEY = "sha256"


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
    """Reads and writes the state folder of one evaluation output directory."""

    def __init__(self, out_dir: str | Path) -> None:
        self.root = Path(out_dir) / "state"

    def check_manifest(self, manifest: dict[str, Any]) -> bool:
        """Compare ``manifest`` with the saved one. Returns True if one was saved.

        Raises :class:`UsageError` naming the differing arguments when the saved
        state belongs to a different evaluation.
        """
        saved = self.saved_manifest()
        if saved is None:
            return False
        current = json.loads(json.dumps(manifest, sort_keys=True))
        differences = _differences(saved, current)
        if differences:
            raise UsageError(
                f"{self.root.parent} holds an evaluation with different arguments "
                f"({'; '.join(differences[:3])}); use another output folder or delete "
                f"{self.root}"
            )
        return True

    def saved_manifest(self) -> dict[str, Any] | None:
        """The saved manifest, or None if there is none.

        Raises :class:`UsageError` if it exists but cannot be read.
        """
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            saved: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"{path} is unreadable ({error}); delete {self.root} to start over") \
                from error
        return saved

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Save ``manifest`` (atomically)."""
        atomic_write_json(self.root / MANIFEST, manifest)

    def chunk_path(self, attack: str, chunk: int) -> Path:
        """The file of ``chunk`` of ``attack``."""
        return self.root / attack / f"chunk_{chunk:05d}.safetensors"

    def load_chunk(self, attack: str, chunk: int) -> ChunkResult | None:
        """The saved chunk, or None if it is missing, unreadable or damaged.

        An unreadable or damaged chunk (its sha256 does not match) is reported
        with a warning naming the file; the caller then computes that batch again.
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
            logger.warning("ignoring damaged or unreadable state file %s (%s); redoing that "
                           "batch", path, error)
            return None

    def save_chunk(self, attack: str, chunk: int, result: ChunkResult) -> None:
        """Write ``result`` atomically."""
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
        if result.disagreements is not None:
            metadata["disagreements"] = str(int(result.disagreements))
        metadata[DIGEST_KEY] = chunk_digest(tensors, metadata)
        with atomic_path(self.chunk_path(attack, chunk)) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
