"""Building a run's model and task from their configuration sections."""

from __future__ import annotations

import dataclasses
import importlib
import logging
from typing import Any

import torch
from torch import nn

from llrnet.errors import RunError, UsageError, WeightsError
from llrnet.train.config import ModelConfig, TaskConfig, _from_dict

logger = logging.getLogger(__name__)

#: Task names of the configuration -> classes of ``llrnet.train.tasks``.
TASKS = {"standard": "StandardTask", "pgd": "PGDTask", "trades": "TRADESTask", "llr": "LLRTask"}


def task_class(name: str) -> type:
    """The task class registered under ``name`` (``standard``, ``pgd``, ``trades``, ``llr``)."""
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    tasks = importlib.import_module("llrnet.train.tasks")
    cls = getattr(tasks, TASKS[name], None)
    if cls is None:
        raise RunError(f"task {name!r} ({TASKS[name]}) is not available in this version of llrnet")
    return cls


def build_task(config: TaskConfig) -> Any:
    """The task object: ``task(model, (x, y), step) -> {"loss": ..., **terms}``.

    ``config.options`` are checked against the task's fields (names and types)
    before it is built, so a typo is an error naming the valid options.
    """
    cls = task_class(config.name)
    if dataclasses.is_dataclass(cls):
        return _from_dict(cls, config.options, f"task.options ({config.name})")
    try:
        return cls(**config.options)
    except TypeError as error:
        raise UsageError(f"task.options ({config.name}): {error}") from None


def _load_init_weights(model: nn.Module, path: str, strict: bool) -> None:
    from safetensors.torch import load_file

    from llrnet.models import load_state_strict, read_metadata
    from llrnet.models.weights import tensors_sha256

    record = read_metadata(path)
    tensors = load_file(path)
    if record.get("sha256") != tensors_sha256(tensors):
        raise WeightsError(f"{path}: tensors do not match their sha256; the file is corrupt")
    if strict:
        load_state_strict(model, tensors, source=path)
        return
    own = model.state_dict()
    usable = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(tensors) - set(usable))
    fresh = sorted(set(own) - set(usable))
    if not usable:
        raise WeightsError(f"{path}: no tensor matches the model {type(model).__name__}")
    model.load_state_dict(usable, strict=False)
    logger.info("init_weights %s: loaded %d tensors; skipped %s; newly initialized %s",
                path, len(usable), skipped or "none", fresh or "none")


def build_model(config: ModelConfig) -> nn.Module:
    """``create_model(config.name, **config.kwargs)``, optionally started from ``init_weights``."""
    from llrnet.models import create_model

    model = create_model(config.name, **config.kwargs)
    if config.init_weights:
        with torch.no_grad():
            _load_init_weights(model, config.init_weights, config.init_strict)
    return model
