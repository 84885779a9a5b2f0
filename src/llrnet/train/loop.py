"""The training loop: one loop for every task.

:func:`train` builds the model, task, optimizer, schedule and data from a
:class:`~llrnet.train.config.TrainConfig`, then runs ``config.steps`` optimizer
steps. The task owns forward + loss; the loop owns everything else: device and
precision (bf16 autocast), channels_last, DistributedDataParallel under
``torchrun``, gradient clipping, EMA, NaN/Inf handling, checkpoints, metrics,
progress and periodic evaluation (clean + PGD) on held-out images.

A run folder holds ``config.yaml`` (the resolved configuration),
``metrics.jsonl``, ``tensorboard/``, ``checkpoints/`` and, when finished,
``final.safetensors`` (the resolved configuration is its ``recipe``) and
``result.json``.

Determinism: the batch order is a function of ``(seed, step)``, augmentation
draws from a generator seeded by ``(seed, step, rank)``, and checkpoints hold
every RNG state, so on CPU a resumed run ends with bit-identical weights to an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from llrnet import distributed
from llrnet.errors import RunError, UsageError
from llrnet.fileio import atomic_write_json, atomic_write_text
from llrnet.train.augment import augment
from llrnet.train.checkpoint import (
    checkpoint_path,
    has_checkpoints,
    latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from llrnet.train.config import TrainConfig, config_to_dict, dump_config, preset_values
from llrnet.train.data import ShardedBatches, batches, build_datasets, held_out
from llrnet.train.ema import ModelEMA
from llrnet.train.evaluation import robust_accuracy
from llrnet.train.logging import MetricsLogger
from llrnet.train.optim import build_optimizer, build_scheduler
from llrnet.train.setup import build_model, build_task

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
FINAL_WEIGHTS = "final.safetensors"
RESULT_FILE = "result.json"
CHECKPOINTS = "checkpoints"

#: Settings that may change when resuming (they do not change the weights).
RESUMABLE_CHANGES = frozenset({
    "log_every", "tensorboard", "checkpoint_every", "keep_checkpoints", "eval.every",
    "data.num_workers", "device", "description",
})


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        out_dir: the run folder.
        step: optimizer steps done.
        finished: True when all ``config.steps`` are done and the final weights written.
        weights: the final weights file (None if not finished).
        metrics: the last evaluation's metrics (``clean_accuracy``, ``pgd_accuracy``).
    """

    out_dir: Path
    step: int
    finished: bool
    weights: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and key not in ("kwargs", "options"):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _check_resume_config(saved: Mapping[str, Any], config: TrainConfig) -> None:
    old, new = _flatten(saved), _flatten(config_to_dict(config))
    changed = sorted(k for k in set(old) | set(new)
                     if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise UsageError(f"cannot resume with a different configuration ({details}); "
                         "resume with the run's own config.yaml or start a new --out folder")


def _prepare_out_dir(out_dir: Path, config: TrainConfig, resume: bool) -> None:
    saved = out_dir / CONFIG_FILE
    started = has_checkpoints(out_dir / CHECKPOINTS) or (out_dir / FINAL_WEIGHTS).exists()
    if started and not resume:
        raise UsageError(f"{out_dir} already holds a training run; pass --resume to continue "
                         "it or choose another --out folder")
    if resume and saved.is_file():
        _check_resume_config(preset_values(str(saved)), config)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank)


def _all_finite(value: Tensor, device: torch.device) -> bool:
    """True if ``value`` is finite on every rank (so all ranks take the same branch)."""
    flag = torch.tensor([0.0 if bool(torch.isfinite(value).all()) else 1.0], device=device)
    if distributed.is_distributed():
        dist.all_reduce(flag)
    return bool(flag.item() == 0.0)


class _Window:
    """Running means of the task's terms between two log lines, plus throughput."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.images = 0
        self.start = time.perf_counter()

    def add(self, terms: Mapping[str, Tensor], images: int) -> None:
        for name, value in terms.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                self.sums[name] = self.sums.get(name, 0.0) + float(value.detach().float())
        self.count += 1
        self.images += images

    def means(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        values = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        values["images_per_second"] = self.images / elapsed
        return values


@dataclass
class _Run:
    """The live objects of a run (to keep :func:`train` short)."""

    config: TrainConfig
    out_dir: Path
    device: torch.device
    model: nn.Module
    wrapped: nn.Module
    task: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: ModelEMA | None
    train_set: Any
    eval_images: Tensor
    eval_labels: Tensor
    log: MetricsLogger
    rank: int
    world: int
    last_checkpoint: Path | None = None
    skipped_in_a_row: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def evaluated_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def state(self, step: int) -> dict[str, Any]:
        rng = distributed.all_gather_objects(rng_state())
        return {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng,
            "data": {"next_step": step, "batch_size": self.config.batch_size,
                     "seed": self.config.seed},
            "config": dump_config(self.config),
        }

    def restore(self, state: Mapping[str, Any]) -> int:
        try:
            self.model.load_state_dict(state["model"], strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.ema is not None:
                if state["ema"] is None:
                    raise RunError("the checkpoint has no EMA state but ema_decay is set")
                self.ema.load_state_dict(state["ema"])
            rngs = state["rng"]
            set_rng_state(rngs[self.rank] if self.rank < len(rngs) else rngs[0])
            return int(state["step"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise RunError(f"checkpoint does not fit this run: {error}") from None

    def checkpoint(self, step: int) -> None:
        state = self.state(step)  # every rank takes part in gathering the RNG states
        if self.rank == 0:
            self.last_checkpoint = save_checkpoint(self.out_dir / CHECKPOINTS, step, state,
                                                   keep=self.config.keep_checkpoints)
        distributed.barrier()

    def evaluate(self, step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if self.rank == 0 and len(self.eval_labels):
            metrics = robust_accuracy(self.evaluated_model, self.eval_images, self.eval_labels,
                                      self.config.eval, device=self.device)
            self.log.log(step, {f"eval/{k}": v for k, v in metrics.items()})
            logger.info("step %d: %s", step,
                        ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        distributed.barrier()
        self.metrics = metrics
        return metrics


def _setup(config: TrainConfig, out_dir: Path, resume: bool, task: Any) -> tuple[_Run, int]:
    device = distributed.local_device(config.device)
    distributed.init_from_env(device)
    rank, world = distributed.rank(), distributed.world_size()
    if config.batch_size % world:
        raise UsageError(f"batch_size {config.batch_size} is not divisible by the {world} "
                         "processes; the batch size is global")
    _prepare_out_dir(out_dir, config, resume)

    seed_everything(config.seed)  # identical initialization on every rank
    model = build_model(config.model).to(device)
    if config.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    task = build_task(config.task) if task is None else task
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.steps)
    ema = ModelEMA(model, config.ema_decay) if config.ema_decay is not None else None
    train_set, eval_set = build_datasets(config.data)
    eval_images, eval_labels = held_out(eval_set, config.data.eval_images)

    start = 0
    found = latest_checkpoint(out_dir / CHECKPOINTS) if resume else None
    wrapped: nn.Module = model
    if world > 1:
        with warnings.catch_warnings():
            # torch >= 2.10 deprecates broadcast_buffers but says to keep it for
            # rank-local buffers: batch-norm statistics stay per device, never synced.
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False)
    run = _Run(config=config, out_dir=out_dir, device=device, model=model, wrapped=wrapped,
               task=task, optimizer=optimizer, scheduler=scheduler, ema=ema,
               train_set=train_set, eval_images=eval_images, eval_labels=eval_labels,
               log=MetricsLogger(out_dir, enabled=False), rank=rank, world=world)
    if found is not None:
        start = run.restore(found[1])
        run.last_checkpoint = checkpoint_path(out_dir / CHECKPOINTS, start)
        logger.info("resuming %s from step %d", out_dir, start)
    else:
        torch.manual_seed(config.seed * 7919 + 1 + rank)  # per-rank stream for the tasks
    if rank == 0:
        atomic_write_text(out_dir / CONFIG_FILE, dump_config(config))
    run.log = MetricsLogger(out_dir, enabled=rank == 0, tensorboard=config.tensorboard,
                            resume_step=start if resume else None)
    return run, start


def _handle_nonfinite(run: _Run, step: int, what: str) -> None:
    run.optimizer.zero_grad(set_to_none=True)
    where = (f"the last good checkpoint is {run.last_checkpoint}" if run.last_checkpoint
             else "no checkpoint was written yet")
    if run.config.on_nonfinite == "stop":
        raise RunError(f"non-finite {what} at step {step}: training stopped; {where}. "
                       "Lower optim.lr, set optim.grad_clip, or set on_nonfinite=skip")
    run.skipped_in_a_row += 1
    logger.warning("non-finite %s at step %d: batch skipped (%d in a row)", what, step,
                   run.skipped_in_a_row)
    if run.skipped_in_a_row >= run.config.max_skipped:
        raise RunError(f"{run.skipped_in_a_row} batches in a row had a non-finite {what} "
                       f"(last at step {step}): training stopped; {where}")


def _train_step(run: _Run, step: int, x: Tensor, y: Tensor) -> dict[str, Tensor] | None:
    """One optimizer step; returns the task's terms, or None when the batch was skipped."""
    config = run.config
    x = augment(x, config.data.augment, _step_generator(config.seed, step, run.rank),
                pad=config.data.pad, max_rotation=config.data.max_rotation,
                max_shift=config.data.max_shift)
    x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
    if config.model.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    run.wrapped.train()
    with _autocast(run.device, config.precision):
        terms = run.task(run.wrapped, (x, y), step)
    loss = terms["loss"]
    if not _all_finite(loss.detach(), run.device):
        _handle_nonfinite(run, step, f"loss ({float(loss.detach()):.4g})")
        return None
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.optim.grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.optim.grad_clip)
        if not _all_finite(norm, run.device):
            _handle_nonfinite(run, step, "gradient norm")
            return None
    run.optimizer.step()
    run.skipped_in_a_row = 0
    if run.ema is not None:
        run.ema.update(run.model)
    return terms


def _progress(run: _Run, start: int, stop: int, show: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=run.config.steps, initial=start, disable=not show or run.rank != 0,
                desc="train", unit="step", dynamic_ncols=True, leave=False)


def _iterate(run: _Run, start: int, stop: int) -> Iterator[tuple[int, Tensor, Tensor]]:
    train_set = run.train_set
    sampler = ShardedBatches(len(train_set), run.config.batch_size,
                             run.config.seed, start, stop, run.rank, run.world)
    for step, (x, y) in zip(range(start, stop), batches(train_set, sampler,
                                                        run.config.data.num_workers)):
        yield step, x, y


def _finish(run: _Run, step: int) -> Path:
    from llrnet.models import save_weights

    weights = run.out_dir / FINAL_WEIGHTS
    if run.rank == 0:
        record = {
            "recipe": config_to_dict(run.config),
            "metrics": run.metrics,
            "source": f"llrnet train, {step} steps"
                      + (", EMA weights" if run.ema is not None else ""),
        }
        save_weights(run.evaluated_model, weights, record)
        atomic_write_json(run.out_dir / RESULT_FILE, {
            "step": step, "metrics": run.metrics, "weights": FINAL_WEIGHTS,
        })
    distributed.barrier()
    return weights


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False,
          until_step: int | None = None, progress: bool = True,
          task: Any = None) -> TrainResult:
    """Train ``config`` into ``out_dir``; see the module docstring for the folder layout.

    Args:
        config: the run's configuration.
        out_dir: run folder (created). A folder that already holds a run needs ``resume``.
        resume: continue from the newest intact checkpoint in ``out_dir`` (if any).
        until_step: stop after this many steps with a checkpoint, without
            finishing (for jobs cut into time slices; resume later).
        progress: show a progress bar on rank 0.
        task: a task object to use instead of building ``config.task`` (bring
            your own objective: ``task(model, (x, y), step) -> {"loss": ..., ...}``).

    Raises:
        UsageError: bad configuration, or ``out_dir`` holds a run and ``resume`` is False.
        RunError: non-finite loss (``on_nonfinite=stop``), a dataset that is not available.
    """
    out = Path(out_dir)
    run, start = _setup(config, out, resume, task)
    stop = config.steps if until_step is None else min(until_step, config.steps)
    if (out / FINAL_WEIGHTS).exists() and start >= config.steps:
        run.log.close()
        return TrainResult(out, start, True, out / FINAL_WEIGHTS, _saved_metrics(out))
    window = _Window()
    bar = _progress(run, start, stop, progress)
    step = start
    try:
        for step, x, y in _iterate(run, start, stop):
            terms = _train_step(run, step, x, y)
            lr = float(run.optimizer.param_groups[0]["lr"])  # the rate this step used
            run.scheduler.step()
            done = step + 1
            if terms is not None:
                window.add(terms, x.shape[0] * run.world)
            bar.update(1)
            if done % config.log_every == 0 or done == stop:
                values = window.means()
                values["lr"] = lr
                run.log.log(done, values)
                bar.set_postfix({k: f"{values[k]:.3g}" for k in ("loss", "gamma")
                                 if k in values} | {"img/s": f"{values['images_per_second']:.0f}"})
                window = _Window()
            if config.eval.every and done % config.eval.every == 0 and done < config.steps:
                run.evaluate(done)
            if done % config.checkpoint_every == 0 or done == stop:
                run.checkpoint(done)
        step = stop
        if stop < config.steps:
            return TrainResult(out, max(stop, start), False)
        metrics = run.evaluate(stop)
        weights = _finish(run, stop)
        return TrainResult(out, stop, True, weights, metrics)
    finally:
        bar.close()
        run.log.close()


def load_run_config(out_dir: str | Path) -> TrainConfig:
    """The configuration saved in a run folder (for ``--resume`` without a preset)."""
    from llrnet.train.config import config_from_dict

    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out_dir} is not a training run folder")
    return config_from_dict(preset_values(str(path)))


def _saved_metrics(out_dir: Path) -> dict[str, float]:
    import json

    path = out_dir / RESULT_FILE
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("metrics", {}))
