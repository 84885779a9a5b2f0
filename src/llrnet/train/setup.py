"""Building a run's model and task from their configuration sections."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from llrnet.errors import WeightsError
from llrnet.train.coerce import from_mapping
from llrnet.train.config import ModelConfig, TaskConfig
from llrnet.train.tasks import TASKS

logger = logging.getLogger(__name__)


def build_task(config: TaskConfig) -> Any:
    """The task ``TASKS.get(config.name)`` built with ``config.options``:
    ``task(model, (x, y), step) -> {"loss": ..., **terms}``.

    ``config.options`` are checked before the task is built: against the
    fields' names and types for a dataclass task, against the parameters'
    names otherwise, so a typo is an error naming the valid options.
    """
    cls = TASKS.get(config.name)
    if dataclasses.is_dataclass(cls):
        return from_mapping(cls, config.options, f"task.options ({config.name})")
    return TASKS.build(config.name, **config.options)


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
