"""The training loop: one loop for every task. The task owns forward and loss; the loop owns
everything else (devices, precision, DDP, EMA, checkpoints, logging, evaluation).
More: docs/training.md, "llrnet.train.loop"."""

from __future__ import annotations

import contextlib
import logging
import random
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from llrnet.core import distributed
from llrnet.core.checks import check_count
from llrnet.core.errors import InputError, RunError, UsageError, first_line
from llrnet.core.locks import folder_lock
from llrnet.core.paths import output_folder
from llrnet.core.seeding import derive, generator
from llrnet.models import save_weights
from llrnet.models.heads import head_of
from llrnet.train.augment import augment, random_contrast_field
from llrnet.train.build import Trainee, build_trainee
from llrnet.train.checkpoint import (
    checkpoint_mismatch,
    checkpoint_path,
    has_checkpoints,
    latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from llrnet.train.config import TrainConfig, config_to_dict
from llrnet.train.data import ShardedBatches, batches, build_datasets, held_out, in_memory
from llrnet.train.logging import MetricsLogger, RunningMeans
from llrnet.train.presets import dump_config
from llrnet.train.run_dir import RunDir, check_checkpoint_config, check_threads
from llrnet.train.validation import robust_accuracy

logger = logging.getLogger(__name__)

__all__ = ["NonFiniteGuard", "TrainResult", "evaluate", "seed_everything", "train",
           "train_one_step", "write_checkpoint"]


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


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False,
          until_step: int | None = None, progress: bool = True,
          task: Any = None, restart: bool = False) -> TrainResult:
    """Train ``config`` into ``out_dir`` (layout: :mod:`llrnet.train.run_dir`).

    Args:
        config: the run's configuration.
        out_dir: run folder (created). A folder that already holds a run needs ``resume``.
        resume: continue from the newest intact checkpoint in ``out_dir``. A
            folder whose checkpoints are all damaged is refused (RunError), so
            a resume never silently becomes a fresh start.
        until_step: stop after this many steps (an integer >= 1) with a
            checkpoint, without finishing (for jobs cut into time slices; resume later).
        progress: show a progress bar on rank 0.
        task: a task object to use instead of building ``config.task`` (bring
            your own objective: ``task(model, (x, y), step) -> {"loss": ..., ...}``).
        restart: start again from step 0 in a folder that holds a run, moving
            its checkpoints and final files to ``out_dir/discarded/``.

    Raises:
        UsageError: bad configuration, or ``out_dir`` holds a run and ``resume`` is False.
        RunError: non-finite loss (``on_nonfinite=stop``), a dataset that is not available,
            or ``resume`` with checkpoints none of which is usable.
    """
    if until_step is not None:
        check_count(until_step, "until_step")  # before the run folder is made
    if config.tensorboard and not _is_utf8(out_dir):
        raise UsageError(f"{out_dir}: TensorBoard cannot write below a name that is not UTF-8; "
                         "rename the folder or --set tensorboard=false")
    with ExitStack() as locks:  # the run folder's lock, released when the run ends
        return _train(config, out_dir, locks, resume=resume, until_step=until_step,
                      progress=progress, task=task, restart=restart)


def _train(config: TrainConfig, out_dir: str | Path, locks: ExitStack, *, resume: bool,
           until_step: int | None, progress: bool, task: Any, restart: bool) -> TrainResult:
    """:func:`train`, with the run folder's lock entered on ``locks``."""
    run, device, resume = _open_run(config, out_dir, locks, resume=resume, restart=restart)
    seed_everything(config.seed)  # identical initialization on every rank
    trainee = build_trainee(config, device, task)
    train_set, held = _load_data(config, trainee, device)
    start, last_checkpoint = _resume_or_seed(trainee, run, config, resume)
    if distributed.rank() == 0:
        run.write_config(config)
    if run.is_finished() and start >= config.steps:
        return TrainResult(run.path, start, True, run.final_weights, run.read_metrics())
    stop = config.steps if until_step is None else min(until_step, config.steps)
    setup = _Setup(config, run, device, trainee, train_set, held, start, stop)
    guard = NonFiniteGuard(config.on_nonfinite, config.max_skipped, last_checkpoint)
    window = RunningMeans()  # the first log line's throughput counts from here
    with _metrics_logger(setup, resume) as log, _progress_bar(config.steps, start, progress) as bar:
        _run_steps(setup, guard, window, log, bar)
        if stop < config.steps:
            return TrainResult(run.path, max(stop, start), False)
        metrics = evaluate(trainee.evaluated_model, held, config, device, log, stop, final=True)
        weights = _write_final_weights(trainee, run, config, stop, metrics)
    return TrainResult(run.path, stop, True, weights, metrics)


def _is_utf8(path: str | Path) -> bool:
    """Whether ``path``'s bytes are UTF-8 (a name from a Latin-1 system may not be)."""
    try:
        str(Path(path).absolute()).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class _Setup:
    """What the steps of one run share once it is set up: steps ``start`` to ``stop - 1``
    of ``config`` on ``train_set``, evaluated on ``held`` (images [N, C, H, W], labels [N])."""

    config: TrainConfig
    run: RunDir
    device: torch.device
    trainee: Trainee
    train_set: Any
    held: tuple[Tensor, Tensor]
    start: int
    stop: int


# --- setting up ----------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def check_classes(model: nn.Module, train_set: Any, held: tuple[Tensor, Tensor],
                  device: torch.device) -> None:
    """Refuse, before step 0, labels the model has no class for.

    The model's classes are its head's (:func:`llrnet.models.head_of`: a sigmoid
    bird head has 2 from its one logit), read off one forward of one image in
    eval mode (no statistics change, no random numbers drawn). The labels are
    the held-out ones and, where the dataset keeps them in memory or as
    ``targets``, the training ones.

    Raises:
        InputError: a label >= the model's number of classes, or a model that
            cannot take the data's images.
    """
    memory = in_memory(train_set)
    labels = [held[1]]
    if memory is not None:
        labels.append(memory[1])
    elif getattr(train_set, "targets", None) is not None:
        labels.append(torch.as_tensor(train_set.targets))
    needed = max((int(t.max()) + 1 for t in labels if t.numel()), default=0)
    sample = held[0][:1] if len(held[0]) else torch.as_tensor(train_set[0][0])[None].float()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(sample.to(device))
    except RuntimeError as error:
        reason = first_line(error)
        raise InputError(f"the model cannot take the data's images (shape "
                         f"{list(sample.shape)}): {reason}") from None
    finally:
        model.train(was_training)
    classes = head_of(model).log_probs(logits).shape[1]
    if needed > classes:
        raise InputError(f"the data has labels up to {needed - 1} but the model has "
                         f"{classes} classes; set model.kwargs.num_classes (or choose "
                         "another dataset)")


def _start_processes(config: TrainConfig) -> torch.device:
    """This process's device, with the process group started under ``torchrun``."""
    device = distributed.local_device(config.device)
    distributed.init_from_env(device)
    world = distributed.world_size()
    if config.batch_size % world:
        raise UsageError(f"batch_size {config.batch_size} is not divisible by the {world} "
                         "processes; the batch size is global")
    return device


def _open_run(config: TrainConfig, out_dir: str | Path, locks: ExitStack, *, resume: bool,
              restart: bool) -> tuple[RunDir, torch.device, bool]:
    """The run folder (locked by rank 0 on ``locks``; prepared; a ``restart`` moves the
    previous attempt aside), this process's device, and whether the run resumes
    (never after a restart).

    Raises:
        RunError: another process holds the run folder (named in the message).
    """
    run = RunDir(output_folder(out_dir, what="run folder (--out)"))
    device = _start_processes(config)
    if distributed.rank() == 0:
        locks.enter_context(folder_lock(run.path, what="run folder"))
    run.prepare(config, resume=resume, restart=restart)
    if restart:
        if distributed.rank() == 0 and (moved := run.discard()) is not None:
            logger.info("restarting %s from step 0; the previous attempt is in %s",
                        run.path, moved)
        distributed.barrier()
    return run, device, resume and not restart


def _load_data(config: TrainConfig, trainee: Trainee, device: torch.device
               ) -> tuple[Any, tuple[Tensor, Tensor]]:
    """The training set and the held-out ``(images, labels)``, their labels checked
    against the model's classes (:func:`check_classes`)."""
    train_set, eval_set = build_datasets(config.data)
    held = held_out(eval_set, config.data.eval_images)
    check_classes(trainee.model, train_set, held, device)
    return train_set, held


def _parameter_device(model: nn.Module) -> torch.device:
    """Where ``model``'s first parameter lives (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _resume_or_seed(trainee: Trainee, run: RunDir, config: TrainConfig, resume: bool
                    ) -> tuple[int, Path | None]:
    """``(first step, its checkpoint)``: restored from the newest intact checkpoint
    when resuming and there is one; else ``(0, None)`` with the tasks' stream seeded."""
    rank = distributed.rank()
    found = latest_checkpoint(run.checkpoints) if resume else None
    if found is None and resume and has_checkpoints(run.checkpoints):
        raise RunError(f"no usable checkpoint in {run.checkpoints}: every one is damaged "
                       "(see the warnings); rerun with --restart to start again from step 0 "
                       "(the damaged files are kept in discarded/)")
    if found is None:
        torch.manual_seed(derive(config.seed, "train", "task", rank))
        return 0, None
    state = found[1]
    where = str(checkpoint_path(run.checkpoints, found[0]))
    check_checkpoint_config(state.get("config"), config, where)
    check_threads(state.get("threads"), _parameter_device(trainee.model).type, where)
    try:
        trainee.load_state_dict(state)
        rngs = state["rng"]
        set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
        start = int(state["step"])
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        own = {**trainee.state_dict(), "rng": None, "step": 0}
        reason = checkpoint_mismatch(own, state, error)
        raise RunError(f"checkpoint does not fit this run: {reason}") from None
    logger.info("resuming %s from step %d", run.path, start)
    return start, checkpoint_path(run.checkpoints, start)


# --- one step ------------------------------------------------------------------------------


def train_one_step(trainee: Trainee, batch: tuple[Tensor, Tensor], step: int,
                   config: TrainConfig, device: torch.device, guard: NonFiniteGuard
                   ) -> dict[str, Tensor] | None:
    """One optimizer step on ``batch`` (CPU); the task's terms, or None if it was skipped."""
    x, y = _prepare_batch(batch, step, config, device)
    trainee.wrapped.train()
    with _autocast(device, config.precision):
        terms = trainee.task(trainee.wrapped, (x, y), step)
    loss = terms["loss"]
    if not _all_finite(loss.detach(), device):
        trainee.optimizer.zero_grad(set_to_none=True)
        guard.skip_or_stop(step, f"loss ({float(loss.detach()):.4g})")
        return None
    trainee.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.optim.grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(trainee.model.parameters(), config.optim.grad_clip)
        if not _all_finite(norm, device):
            trainee.optimizer.zero_grad(set_to_none=True)
            guard.skip_or_stop(step, "gradient norm")
            return None
    trainee.optimizer.step()
    guard.passed()
    if trainee.ema is not None:
        trainee.ema.update(trainee.model)
    return terms


def _prepare_batch(batch: tuple[Tensor, Tensor], step: int, config: TrainConfig,
                   device: torch.device) -> tuple[Tensor, Tensor]:
    """Augmented (seeded by step and rank), on the device, channels_last if asked."""
    x, y = batch
    data = config.data
    x = augment(x, data.augment, generator(config.seed, "train", "augment", step,
                                           distributed.rank()),
                pad=data.pad, max_rotation=data.max_rotation, max_shift=data.max_shift)
    if data.photometric > 0:
        x = random_contrast_field(x, data.photometric, data.min_contrast,
                                  generator(config.seed, "train", "photometric", step,
                                            distributed.rank()))
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if config.model.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _all_finite(value: Tensor, device: torch.device) -> bool:
    """True if ``value`` is finite on every rank (so all ranks take the same branch)."""
    flag = torch.tensor([0.0 if bool(torch.isfinite(value).all()) else 1.0], device=device)
    if distributed.is_distributed():
        dist.all_reduce(flag)
    return bool(flag.item() == 0.0)


class NonFiniteGuard:
    """The ``on_nonfinite`` policy: ``stop`` at the first non-finite loss or gradient
    norm, or ``skip`` the batch, up to ``max_skipped`` batches in a row.

    ``last_checkpoint`` (set by the loop after each checkpoint) is named in the
    error, so the user knows where a rerun would resume.
    """

    def __init__(self, policy: str, max_skipped: int, last_checkpoint: Path | None) -> None:
        self.policy = policy
        self.max_skipped = max_skipped
        self.last_checkpoint = last_checkpoint
        self.in_a_row = 0

    def passed(self) -> None:
        """A step went through: the count of skipped batches in a row restarts."""
        self.in_a_row = 0

    def skip_or_stop(self, step: int, what: str) -> None:
        """Raise RunError (``stop``, or too many skipped) or log the skipped batch."""
        where = (f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint
                 else "no checkpoint was written yet")
        if self.policy == "stop":
            raise RunError(f"non-finite {what} at step {step}: training stopped; {where}. "
                           "Lower optim.lr, set optim.grad_clip, or set on_nonfinite=skip")
        self.in_a_row += 1
        logger.warning("non-finite %s at step %d: batch skipped (%d in a row)", what, step,
                       self.in_a_row)
        if self.in_a_row >= self.max_skipped:
            raise RunError(f"{self.in_a_row} batches in a row had a non-finite {what} "
                           f"(last at step {step}): training stopped; {where}")


# --- between steps: logs, evaluation, checkpoints ------------------------------------------


def _run_steps(setup: _Setup, guard: NonFiniteGuard, window: RunningMeans,
               log: MetricsLogger, bar: Any) -> None:
    """Steps ``setup.start`` to ``setup.stop - 1``, each followed by the log line, the
    evaluation and the checkpoint that fall due after it."""
    config, trainee = setup.config, setup.trainee
    images = len(setup.train_set)
    sampler = ShardedBatches(images, config.batch_size, config.seed, setup.start, setup.stop,
                             distributed.rank(), distributed.world_size())
    data = batches(setup.train_set, sampler, config.data.num_workers, setup.device)
    for step, batch in zip(range(setup.start, setup.stop), data):
        lr = float(trainee.optimizer.param_groups[0]["lr"])  # the rate this step uses
        terms = train_one_step(trainee, batch, step, config, setup.device, guard)
        trainee.scheduler.step()
        done = step + 1
        bar.update(1)
        if terms is not None:
            window.add(terms, batch[0].shape[0] * distributed.world_size())
        if done % config.log_every == 0 or done == setup.stop:
            _log_window(log, bar, done, {**window.means(), "lr": lr})
            window = RunningMeans()
        if config.eval.every and done % config.eval.every == 0 and done < config.steps:
            evaluate(trainee.evaluated_model, setup.held, config, setup.device, log, done)
        if done % config.checkpoint_every == 0 or done == setup.stop:
            guard.last_checkpoint = write_checkpoint(trainee, setup.run, config, done)


def _metrics_logger(setup: _Setup, resume: bool) -> MetricsLogger:
    """The run's metrics log (rank 0 writes; a resume drops the records after its step)."""
    return MetricsLogger(setup.run.path, enabled=distributed.rank() == 0,
                         tensorboard=setup.config.tensorboard,
                         resume_step=setup.start if resume else None)


def _progress_bar(total: int, start: int, show: bool) -> Any:
    return tqdm(total=total, initial=start, disable=not show or distributed.rank() != 0,
                desc="train", unit="step", dynamic_ncols=True, leave=False)


def _log_window(log: MetricsLogger, bar: Any, step: int, values: dict[str, float]) -> None:
    log.log(step, values)
    shown = {k: f"{values[k]:.3g}" for k in ("loss", "gamma") if k in values}
    bar.set_postfix(shown | {"img/s": f"{values['images_per_second']:.0f}"})


def evaluate(model: nn.Module, held: tuple[Tensor, Tensor], config: TrainConfig,
             device: torch.device, log: MetricsLogger, step: int, *, final: bool = False
             ) -> dict[str, float]:
    """Clean and PGD accuracy of ``model`` on the held-out images, on rank 0 (logged
    as ``eval/...``, in a ``final`` record for the final evaluation); the other
    ranks wait and get ``{}``."""
    images, labels = held
    metrics: dict[str, float] = {}
    if distributed.rank() == 0 and len(labels):
        metrics = robust_accuracy(model, images, labels, config.eval, device=device)
        log.log(step, {f"eval/{k}": v for k, v in metrics.items()}, final=final)
        logger.info("step %d: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    distributed.barrier()
    return metrics


def write_checkpoint(trainee: Trainee, run: RunDir, config: TrainConfig, step: int) -> Path:
    """Write the checkpoint of ``step`` (rank 0; every rank's RNG state); its ``.pt`` path."""
    rngs = distributed.all_gather_objects(rng_state())  # every rank takes part
    if distributed.rank() == 0:
        state = {
            "step": step,
            **trainee.state_dict(),
            "rng": rngs,
            "data": {"next_step": step, "batch_size": config.batch_size, "seed": config.seed},
            "config": dump_config(config),
            "threads": torch.get_num_threads(),  # CPU results depend on it (check_threads)
        }
        save_checkpoint(run.checkpoints, step, state, keep=config.keep_checkpoints)
    distributed.barrier()
    return checkpoint_path(run.checkpoints, step)


def _write_final_weights(trainee: Trainee, run: RunDir, config: TrainConfig, step: int,
                         metrics: dict[str, float]) -> Path:
    if distributed.rank() == 0:
        record = {
            "recipe": config_to_dict(config),
            "metrics": metrics,
            "source": f"llrnet train, {step} steps"
                      + (", EMA weights" if trainee.ema is not None else ""),
        }
        save_weights(trainee.evaluated_model, run.final_weights, record)
        run.write_result(step, metrics)
    distributed.barrier()
    return run.final_weights
