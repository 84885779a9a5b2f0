"""The training configuration's schema: typed dataclasses and their checks.
More: docs/training.md, "llrnet.train.config"."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llrnet.core.coerce import field_types, from_mapping, is_mapping_type
from llrnet.core.devices import parse_device
from llrnet.core.errors import UsageError
from llrnet.core.seeding import check_seed
from llrnet.train.data import DATASETS, DataConfig

Precision = Literal["fp32", "bf16"]
OnNonfinite = Literal["stop", "skip"]
Schedule = Literal["constant", "step", "cosine"]
OptimizerName = Literal["sgd", "adamw"]


@dataclass
class ModelConfig:
    """Which network to train.

    Attributes:
        name: a name from ``llrnet.models.list_models()``.
        kwargs: keyword arguments of that model's builder.
        init_weights: optional weights file (``llrnet.models.save_weights``
            format) to start from; see ``init_strict``.
        init_strict: if False, tensors of the init file whose name or shape do
            not match (e.g. a new head) are skipped and listed in the log; if
            True every tensor must match.
        channels_last: store activations NHWC (faster convolutions on GPUs).
    """

    name: str = "digits_wrn"
    kwargs: dict[str, Any] = field(default_factory=dict)
    init_weights: str | None = None
    init_strict: bool = True
    channels_last: bool = False


@dataclass
class TaskConfig:
    """The training objective: a task of ``llrnet.train.tasks.TASKS`` and its options.

    ``name`` is one of ``standard``, ``pgd``, ``trades``, ``llr``; ``options``
    are keyword arguments of that class, checked against its fields when the
    task is built (:func:`llrnet.train.build.build_task`).
    """

    name: str = "standard"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule.

    Attributes:
        name: ``sgd`` (momentum, not Nesterov unless asked) or ``adamw``.
        lr: peak learning rate.
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        weight_decay: L2 coefficient on conv and linear kernels only (no batch
            norm, no biases). For SGD it is the ``w`` in ``w * 0.5 * sum(k^2)``
            added to the loss (DeepMind's convention, the same as torch's
            ``weight_decay``); for AdamW it is decoupled decay.
        betas: AdamW betas.
        schedule: ``constant``, ``step`` (multiply by ``decay_factor`` at each
            of ``milestones``) or ``cosine`` (to ``min_lr`` at the last step).
        milestones: steps of the ``step`` schedule.
        decay_factor: factor of the ``step`` schedule.
        warmup_steps: linear warm-up from 0 to ``lr`` over these steps.
        min_lr: final learning rate of the cosine schedule.
        grad_clip: clip the global gradient norm to this value (None = off).
    """

    name: OptimizerName = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Schedule = "cosine"
    milestones: list[int] = field(default_factory=list)
    decay_factor: float = 0.1
    warmup_steps: int = 0
    min_lr: float = 0.0
    grad_clip: float | None = None


@dataclass
class EvalConfig:
    """Periodic evaluation on the held-out split: clean and L-inf PGD accuracy.

    Attributes:
        every: evaluate every this many steps (0 = only at the end).
        eps: PGD radius (L-inf, images in [0, 1]).
        steps: PGD steps.
        step_size: PGD step size (None = 2.5 * eps / steps).
        loss: ``margin`` (as DeepMind's training-time evaluation) or ``ce``.
        batch_size: evaluation batch size.
    """

    every: int = 0
    eps: float = 8 / 255
    steps: int = 10
    step_size: float | None = None
    loss: Literal["ce", "margin"] = "margin"
    batch_size: int = 256


@dataclass
class TrainConfig:
    """Everything that defines a training run.

    Attributes:
        seed: seeds the model initialization, data order, augmentation and tasks.
        steps: optimizer steps.
        batch_size: GLOBAL batch size; each of K processes gets ``batch_size / K``.
        device: ``cpu``, ``cuda`` (``cuda:LOCAL_RANK`` under torchrun), ...
        precision: ``fp32`` or ``bf16`` (autocast; meant for CUDA).
        ema_decay: keep an exponential moving average of the weights with this
            decay (None = off); evaluation and the final weights then use it.
        checkpoint_every: write a checkpoint every this many steps (and at the end).
        keep_checkpoints: how many checkpoints to keep (older ones are deleted).
        log_every: write metrics every this many steps.
        tensorboard: also write TensorBoard event files.
        on_nonfinite: ``stop`` the run on a NaN/Inf loss (the last checkpoint is
            kept intact) or ``skip`` the batch.
        max_skipped: with ``skip``, stop after this many skipped batches in a row.
        description: free text saved with the run (where the preset comes from).
        compile: run the model through ``torch.compile``
            (:func:`llrnet.models.compiled.compile_model`; eager with one warning
            where it cannot run). Execution only: a run may resume with or without it.
    """

    seed: int = 0
    steps: int = 100
    batch_size: int = 64
    device: str = "cpu"
    precision: Precision = "fp32"
    ema_decay: float | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    log_every: int = 10
    tensorboard: bool = True
    on_nonfinite: OnNonfinite = "stop"
    max_skipped: int = 20
    description: str = ""
    compile: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _check_ranges(self)
        _check_names(self)


def _check_ranges(config: TrainConfig) -> None:
    positive = {
        "steps": config.steps, "batch_size": config.batch_size,
        "checkpoint_every": config.checkpoint_every, "keep_checkpoints": config.keep_checkpoints,
        "log_every": config.log_every, "data.size": config.data.size,
        "eval.batch_size": config.eval.batch_size, "max_skipped": config.max_skipped,
    }
    for key, value in positive.items():
        if value < 1:
            raise UsageError(f"{key} must be >= 1, got {value}")
    non_negative: dict[str, float] = {
        "optim.lr": config.optim.lr, "optim.weight_decay": config.optim.weight_decay,
        "optim.warmup_steps": config.optim.warmup_steps, "eval.every": config.eval.every,
        "eval.eps": config.eval.eps, "eval.steps": config.eval.steps,
        "data.eval_images": config.data.eval_images, "data.num_workers": config.data.num_workers,
    }
    for key, number in non_negative.items():
        if number < 0:
            raise UsageError(f"{key} must be >= 0, got {number}")
    check_seed(config.seed)
    for key, share in {"data.photometric": config.data.photometric,
                       "data.min_contrast": config.data.min_contrast}.items():
        if not 0.0 <= share <= 1.0:
            raise UsageError(f"{key} must be in [0, 1], got {share}")
    if config.ema_decay is not None and not 0.0 < config.ema_decay < 1.0:
        raise UsageError(f"ema_decay must be in (0, 1) or null, got {config.ema_decay}")
    if config.optim.grad_clip is not None and config.optim.grad_clip <= 0:
        raise UsageError(f"optim.grad_clip must be > 0 or null, got {config.optim.grad_clip}")
    if sorted(config.optim.milestones) != list(config.optim.milestones):
        raise UsageError(f"optim.milestones must be increasing, got {config.optim.milestones}")


def _check_names(config: TrainConfig) -> None:
    # Only the spelling: whether the device exists is checked when the run starts,
    # since a configuration may be written on one machine and run on another.
    parse_device(config.device, what="device")
    # The dataset's name is checked here, against the registry, so that a typo is
    # caught when the configuration is read, not when the run starts.
    if config.data.name not in DATASETS:
        choices = ", ".join(repr(name) for name in DATASETS.names())
        raise UsageError(f"data.name: {config.data.name!r} is not one of {choices}")


def _free_form_keys(cls: type, prefix: str = "") -> frozenset[str]:
    keys: set[str] = set()
    for name, annotation in field_types(cls).items():
        if is_mapping_type(annotation):
            keys.add(prefix + name)
        elif dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
            keys |= _free_form_keys(annotation, f"{prefix}{name}.")
    return frozenset(keys)


FREE_FORM_KEYS = _free_form_keys(TrainConfig)
"""Dotted keys of the free-form argument mappings (``model.kwargs``, ``task.options``).

They belong to one model or one task: presets replace them as a whole rather
than merging them key by key, and their keys are checked by the model or task
that receives them, not by the schema."""


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; free-form mappings stay whole."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in FREE_FORM_KEYS:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """A checked :class:`TrainConfig` from a (possibly partial) nested mapping."""
    return from_mapping(TrainConfig, values)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The resolved configuration as plain JSON/YAML-serializable data."""

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return typing.cast(dict[str, Any], plain(dataclasses.asdict(config)))
