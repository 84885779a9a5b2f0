"""Building what a run trains from its configuration: model, task, and the :class:`Trainee`."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from llrnet.core import distributed
from llrnet.core.coerce import from_mapping
from llrnet.core.errors import RunError, WeightsError
from llrnet.core.fileio import utf8_name
from llrnet.models import read_metadata
from llrnet.models import registry as model_registry
from llrnet.models.compiled import compile_model
from llrnet.models.weights import load_state_strict, tensors_sha256
from llrnet.train.config import ModelConfig, TaskConfig, TrainConfig
from llrnet.train.ema import ModelEMA
from llrnet.train.optim import build_optimizer, build_scheduler
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
    record = read_metadata(path)
    with utf8_name(path) as name:  # safetensors opens UTF-8 names only
        tensors = load_file(name)
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
    """The registered model ``config.name`` built with ``config.kwargs``, optionally started
    from ``init_weights``."""
    model = model_registry.build_model(config.name, **config.kwargs)
    if config.init_weights:
        with torch.no_grad():
            _load_init_weights(model, config.init_weights, config.init_strict)
    return model


@dataclass
class Trainee:
    """What the optimizer steps change: the state a checkpoint holds.

    Attributes:
        model: the network (on the run's device).
        wrapped: ``model`` inside ``DistributedDataParallel`` under ``torchrun``,
            else ``model`` itself: what the task's one wrapper forward goes through.
        task: ``task(model, (x, y), step) -> {"loss": ..., **terms}``.
        optimizer, scheduler: the optimizer and its learning-rate schedule.
        ema: the weights' moving average, or None.
    """

    model: nn.Module
    wrapped: nn.Module
    task: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: ModelEMA | None

    @property
    def evaluated_model(self) -> nn.Module:
        """The model that is evaluated and saved: the EMA one when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        """``model``, ``optimizer``, ``scheduler`` and ``ema`` (None) states, for a checkpoint."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the states of :meth:`state_dict` (strictly: every tensor must fit)."""
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state["ema"] is None:
                raise RunError("the checkpoint has no EMA state but ema_decay is set")
            self.ema.load_state_dict(state["ema"])


def build_trainee(config: TrainConfig, device: torch.device, task: Any = None) -> Trainee:
    """Model (from torch's current RNG state), task (``task`` or ``config.task``),
    optimizer, schedule and EMA of a run, wrapped for DDP when there are several processes."""
    model = build_model(config.model).to(device)
    if config.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    task = build_task(config.task) if task is None else task
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.steps)
    ema = ModelEMA(model, config.ema_decay) if config.ema_decay is not None else None
    if config.compile:  # after the EMA's copy: the EMA module stays eager
        compile_model(model, what="the trained model")
        logger.info("torch.compile: the model compiles in its first steps (the first "
                    "log line's images_per_second includes it)")
    wrapped: nn.Module = model
    if distributed.world_size() > 1:
        with warnings.catch_warnings():
            # torch >= 2.10 deprecates broadcast_buffers but says to keep it for
            # rank-local buffers: batch-norm statistics stay per device, never synced.
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False)
    return Trainee(model, wrapped, task, optimizer, scheduler, ema)
