"""The run folder: what a training run writes where, and reading it back.
More: docs/training.md, "llrnet.train.run_dir"."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from llrnet.core.errors import UsageError
from llrnet.core.fileio import atomic_write_json, atomic_write_text
from llrnet.train.checkpoint import has_checkpoints
from llrnet.train.config import TrainConfig, config_to_dict, flatten
from llrnet.train.presets import dump_config, load_config, preset_values

__all__ = [
    "CHECKPOINTS",
    "CONFIG_FILE",
    "FINAL_WEIGHTS",
    "RESULT_FILE",
    "RESUMABLE_CHANGES",
    "RunDir",
    "check_checkpoint_config",
    "check_threads",
    "load_run_config",
]

CONFIG_FILE = "config.yaml"
FINAL_WEIGHTS = "final.safetensors"
RESULT_FILE = "result.json"
CHECKPOINTS = "checkpoints"
DISCARDED = "discarded"

#: Settings that may change when resuming (they do not change the weights).
RESUMABLE_CHANGES = frozenset({
    "log_every", "tensorboard", "checkpoint_every", "keep_checkpoints", "eval.every",
    "data.num_workers", "device", "description", "compile",
})


class RunDir:
    """The files of the training run in ``path`` (nothing is created until written)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def final_weights(self) -> Path:
        return self.path / FINAL_WEIGHTS

    @property
    def result_file(self) -> Path:
        return self.path / RESULT_FILE

    def is_started(self) -> bool:
        """True when the folder holds a checkpoint (intact or not) or final weights."""
        return has_checkpoints(self.checkpoints) or self.final_weights.exists()

    def is_finished(self) -> bool:
        """True when the final weights are written."""
        return self.final_weights.exists()

    def prepare(self, config: TrainConfig, *, resume: bool, restart: bool = False) -> None:
        """Check that ``config`` may train into this folder.

        ``restart`` starts again from step 0 whatever the folder holds (see
        :meth:`discard`), with any configuration.

        Raises:
            UsageError: the folder holds a run and neither ``resume`` nor
                ``restart`` is set, or ``resume`` is set and ``config`` differs
                from the saved one in a setting that changes the weights.
        """
        if restart:
            return
        if self.is_started() and not resume:
            raise UsageError(f"{self.path} already holds a training run; pass --resume to "
                             "continue it, --restart to start it again, or choose another "
                             "--out folder")
        if resume and self.config_file.is_file():
            check_resumable(preset_values(str(self.config_file)), config)

    def discard(self) -> Path | None:
        """Move this run's checkpoints and final files to ``discarded/`` (replacing
        an earlier ``discarded/``), so a restart begins from nothing without
        deleting the attempt it replaces. Returns the folder, or None when there
        was nothing to move."""
        moved = [p for p in (self.checkpoints, self.final_weights, self.result_file)
                 if p.exists()]
        if not moved:
            return None
        target = self.path / DISCARDED
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        for path in moved:
            path.rename(target / path.name)
        return target

    def write_config(self, config: TrainConfig) -> None:
        """Write ``config.yaml`` (the resolved configuration)."""
        atomic_write_text(self.config_file, dump_config(config))

    def read_config(self, overrides: Sequence[str] = ()) -> TrainConfig:
        """The configuration saved in ``config.yaml``, with ``key=value`` overrides."""
        if not self.config_file.is_file():
            raise FileNotFoundError(f"{self.config_file} not found: {self.path} is not a "
                                    "training run folder")
        return load_config(str(self.config_file), overrides)

    def write_result(self, step: int, metrics: Mapping[str, float]) -> None:
        """Write ``result.json`` (after the final weights)."""
        atomic_write_json(self.result_file, {
            "step": step, "metrics": dict(metrics), "weights": FINAL_WEIGHTS,
        })

    def read_metrics(self) -> dict[str, float]:
        """The final evaluation's metrics from ``result.json`` (empty if not finished)."""
        if not self.result_file.is_file():
            return {}
        result = json.loads(self.result_file.read_text(encoding="utf-8"))
        return dict(result.get("metrics", {}))


def check_resumable(saved: Mapping[str, Any], config: TrainConfig, *,
                    against: str = "the run's config.yaml") -> None:
    """Raise UsageError if ``config`` differs from the ``saved`` values beyond
    :data:`RESUMABLE_CHANGES` (naming the first changed keys); ``against`` names
    where ``saved`` comes from."""
    old, new = flatten(saved), flatten(config_to_dict(config))
    changed = sorted(k for k in set(old) | set(new)
                     if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise UsageError(f"cannot resume with a different configuration ({details}) than "
                         f"{against}; resume with the configuration the run was trained "
                         "with, or start a new --out folder")


def check_checkpoint_config(text: Any, config: TrainConfig, checkpoint: str) -> None:
    """Raise UsageError if ``config`` differs (beyond :data:`RESUMABLE_CHANGES`) from the
    configuration a checkpoint was written under (its ``config`` entry, YAML text),
    naming the changed keys: an edited ``config.yaml`` cannot change a run silently.
    A checkpoint without that entry (none of llrnet's) is not checked."""
    if not isinstance(text, str):
        return
    saved = yaml.safe_load(text)
    if isinstance(saved, Mapping):
        check_resumable(saved, config, against=f"the one {checkpoint} was trained with")


def check_threads(saved: Any, device_type: str, checkpoint: str) -> None:
    """Raise UsageError if a CPU run resumes with another torch thread count than its
    checkpoint was written with (``saved``; None: not recorded, not checked): on
    CPU, the sums of convolutions depend on it, so the weights would diverge."""
    current = torch.get_num_threads()
    if device_type != "cpu" or not isinstance(saved, int) or saved == current:
        return
    raise UsageError(f"{checkpoint} was written by a run with {saved} CPU threads and this "
                     f"process has {current}; CPU results depend on the thread count, so "
                     f"resume with --threads {saved} (torch.set_num_threads({saved}))")


def load_run_config(out_dir: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The configuration saved in a run folder (for ``--resume`` without a preset),
    with ``key=value`` overrides."""
    return RunDir(out_dir).read_config(overrides)
