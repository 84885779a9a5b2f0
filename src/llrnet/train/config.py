"""Training configuration: typed dataclasses, YAML presets, ``key=value`` overrides.

A run is described by one :class:`TrainConfig`. Presets are YAML files shipped
inside the package (``llrnet/configs/NAME.yaml``); a preset may start from
another one with ``extends: OTHER``. Command-line overrides ``--set
optim.lr=0.05`` are parsed as YAML scalars and checked against the field's
annotation, so a typo in a key or a value of the wrong type is an error that
names the key and the valid choices, never silently ignored.

The resolved configuration (:func:`config_to_dict`) is written next to every
run (``config.yaml``) and into the final weights' metadata (``recipe``).

Example::

    config = load_config("digits_llr", overrides=["steps=50", "optim.lr=0.05"])
    config.task.name, config.optim.lr      # ('llr', 0.05)
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from llrnet.errors import UsageError

Precision = Literal["fp32", "bf16"]
OnNonfinite = Literal["stop", "skip"]
Schedule = Literal["constant", "step", "cosine"]
OptimizerName = Literal["sgd", "adamw"]
Augment = Literal["none", "flip_crop", "crop", "rotate_translate"]
DatasetName = Literal["digits2", "digits10", "cifar10", "imagenet", "bird_or_bicycle"]


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
class DataConfig:
    """Where the batches come from.

    Attributes:
        name: ``digits2`` (two-class digits 6 vs 7), ``digits10``, ``cifar10``,
            ``imagenet``, ``bird_or_bicycle``.
        root: dataset folder for the datasets that live on disk.
        size: image side for the digits (pixels); ignored by the others.
        augment: batch augmentation applied on the device: ``flip_crop``
            (horizontal flip + reflect-pad 4 + random crop, CIFAR), ``crop``
            (reflect-pad + crop, no flip: digits), ``rotate_translate``
            (random rotation within ``max_rotation`` degrees and shifts within
            ``max_shift`` pixels, black fill: the challenge's spatial limits).
        pad: padding of the random crop, pixels.
        max_rotation: degrees, for ``rotate_translate``.
        max_shift: pixels at the image size seen by the model, for ``rotate_translate``.
        extras: bird-or-bicycle: also train on the ``extras`` split.
        eval_split: the held-out split used for periodic evaluation.
        eval_images: how many held-out images periodic evaluation uses.
        num_workers: DataLoader worker processes (0 = in the main process).
    """

    name: DatasetName = "digits2"
    root: str | None = None
    size: int = 28
    augment: Augment = "none"
    pad: int = 4
    max_rotation: float = 30.0
    max_shift: float = 18.0
    extras: bool = False
    eval_split: str = "test"
    eval_images: int = 512
    num_workers: int = 0


@dataclass
class TaskConfig:
    """The training objective: a task class of ``llrnet.train.tasks`` and its options.

    ``name`` is one of ``standard``, ``pgd``, ``trades``, ``llr``; ``options``
    are keyword arguments of that class (checked against its signature).
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
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _check_ranges(self)


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
    if config.ema_decay is not None and not 0.0 < config.ema_decay < 1.0:
        raise UsageError(f"ema_decay must be in (0, 1) or null, got {config.ema_decay}")
    if config.optim.grad_clip is not None and config.optim.grad_clip <= 0:
        raise UsageError(f"optim.grad_clip must be > 0 or null, got {config.optim.grad_clip}")
    if sorted(config.optim.milestones) != list(config.optim.milestones):
        raise UsageError(f"optim.milestones must be increasing, got {config.optim.milestones}")


# --- converting between dicts and dataclasses, with type checks -------------------------


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked (and minimally converted) against ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:
            with contextlib.suppress(UsageError):
                return _coerce(value, option, key)
        # The last alternative's error names the expected type (e.g. "expected a number").
        return _coerce(value, options[-1], key)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise UsageError(f"{key}: {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _from_dict(annotation, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{key}: expected a list ({_type_name(annotation)}), got {value!r}")
        if origin is list:
            item = args[0] if args else Any
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise UsageError(f"{key}: expected {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise UsageError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise UsageError(f"{key}: expected a string, got {value!r}")
        return value
    raise UsageError(f"{key}: unsupported type {_type_name(annotation)}")  # pragma: no cover


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _from_dict(cls: type, values: Any, prefix: str = "") -> Any:
    if not isinstance(values, Mapping):
        raise UsageError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    fields = _fields(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f" in {prefix}" if prefix else ""
        raise UsageError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
            f"{where}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {
        name: _coerce(value, fields[name], f"{prefix}.{name}" if prefix else name)
        for name, value in values.items()
    }
    return cls(**kwargs)


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """A checked :class:`TrainConfig` from a (possibly partial) nested mapping."""
    return typing.cast(TrainConfig, _from_dict(TrainConfig, values))


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The resolved configuration as plain JSON/YAML-serializable data."""

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return typing.cast(dict[str, Any], plain(dataclasses.asdict(config)))


# --- presets and overrides ---------------------------------------------------------------


def _preset_dir() -> Any:
    return resources.files("llrnet") / "configs"


def list_presets() -> list[str]:
    """Names of the presets shipped with llrnet (``llrnet/configs/*.yaml``)."""
    return sorted(
        entry.name[: -len(".yaml")]
        for entry in _preset_dir().iterdir()
        if entry.name.endswith(".yaml")
    )


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{source} is not valid YAML: {error}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{source} must hold a mapping of settings, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        # Free-form argument mappings (model.kwargs, task.options) are replaced as a
        # whole: they belong to one model or task, and a child preset may change it.
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict) and key not in (
            "kwargs", "options"
        ):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_values(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The raw settings of a preset name or a YAML file path, ``extends`` resolved."""
    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {name_or_path}")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        entry = _preset_dir() / f"{name_or_path}.yaml"
        if not entry.is_file():
            raise UsageError(
                f"unknown preset {name_or_path!r}; choose one of: {', '.join(list_presets())} "
                "(or give a path to a .yaml file)"
            )
        text, source = entry.read_text(encoding="utf-8"), f"preset {name_or_path}"
    if name_or_path in _seen:
        raise UsageError(f"presets extend each other in a cycle: {' -> '.join(_seen)}")
    values = _read_yaml(text, source)
    parent = values.pop("extends", None)
    if parent is None:
        return values
    if not isinstance(parent, str):
        raise UsageError(f"{source}: 'extends' must name a preset, got {parent!r}")
    return _deep_merge(preset_values(parent, (*_seen, name_or_path)), values)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.05"`` -> ``(["optim", "lr"], 0.05)``; the value is a YAML scalar."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"override {text!r} must look like key=value (e.g. optim.lr=0.05)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise UsageError(f"override {text!r}: the value is not valid YAML") from None
    return key.split("."), value


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``values`` with each ``key=value`` of ``overrides`` set (keys are checked later)."""
    result: dict[str, Any] = copy.deepcopy(dict(values))
    for text in overrides:
        path, value = parse_override(text)
        _check_override_path(path, text)
        node = result
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return result


def _check_override_path(path: list[str], text: str) -> None:
    cls: Any = TrainConfig
    for depth, part in enumerate(path):
        if cls is None:  # inside a free-form mapping (model.kwargs, task.options)
            return
        fields = _fields(cls)
        if part not in fields:
            where = ".".join(path[:depth]) or "the top level"
            raise UsageError(
                f"override {text!r}: unknown key {part!r} at {where}; "
                f"valid keys: {', '.join(sorted(fields))}"
            )
        annotation = fields[part]
        if dataclasses.is_dataclass(annotation):
            cls = annotation
        elif typing.get_origin(annotation) is dict:
            cls = None
        elif depth != len(path) - 1:
            raise UsageError(f"override {text!r}: {'.'.join(path[: depth + 1])} has no sub-keys")


def load_config(preset: str | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A checked configuration from a preset (name or YAML path) plus ``key=value`` overrides."""
    values = preset_values(preset) if preset else {}
    return config_from_dict(apply_overrides(values, overrides))


def dump_config(config: TrainConfig) -> str:
    """The resolved configuration as YAML text (what ``config.yaml`` of a run holds)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
