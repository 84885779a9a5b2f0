"""``llrnet demo``: train, evaluate and report the four digits models (resumable).
More: docs/training.md, "llrnet.demo.run"."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from llrnet.core.allocator import keep_freed_memory
from llrnet.core.errors import RunError
from llrnet.core.fileio import atomic_write_text
from llrnet.core.paths import output_folder
from llrnet.data import two_class_digits
from llrnet.demo.figures import (
    plot_risk_coverage_per_attack,
    plot_training_curves,
    spatial_figure,
    stack_examples,
)
from llrnet.demo.recipe import (
    CHECK_BUDGET,
    CHECK_IMAGES,
    EVAL_GROUPS,
    FULL_IMAGES,
    MODELS,
    QUICK_CHECK_IMAGES,
    QUICK_IMAGES,
    QUICK_OVERRIDES,
    demo_suite,
)
from llrnet.demo.report import (
    COST,
    EXAMPLES,
    REPORT,
    RISK_COVERAGE,
    TABLE,
    TRAINING_CURVES,
    leaderboard,
    report_text,
)
from llrnet.eval import EvaluationWarning, evaluate
from llrnet.models import load_weights
from llrnet.train import RunDir, load_config, train
from llrnet.train.build import build_task

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What :func:`run_demo` returns: the report path, the table, per-model results."""

    out_dir: Path
    report: Path
    table: str
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def _stage_dir(out: Path, name: str, index: int, preset: str) -> Path:
    stages = MODELS[name].stages
    return out / name / ("train" if index == len(stages) - 1 else preset)


def _train_one(name: str, out: Path, quick: bool, progress: bool, seed: int) -> Path:
    """Train every stage of model ``name`` (skipping finished ones); the final weights."""
    cost_path = out / name / COST
    cost: dict[str, Any] = (json.loads(cost_path.read_text()) if cost_path.is_file()
                            else {"stages": {}})
    weights: Path | None = None
    for index, preset in enumerate(MODELS[name].stages):
        overrides = [f"seed={seed}", *(QUICK_OVERRIDES if quick else ())]
        if weights is not None:
            overrides.append(f"model.init_weights={weights}")
        config = load_config(preset, overrides)
        run = RunDir(_stage_dir(out, name, index, preset))
        if run.is_finished():
            logger.info("%s: %s already trained (%s)", name, preset, run.final_weights)
            weights = run.final_weights
            continue
        logger.info("%s: training %s, %d steps (task %s)", name, preset, config.steps,
                    config.task.name)
        started = time.perf_counter()
        result = train(config, run.path, resume=True, progress=progress)
        if result.weights is None:
            raise RunError(f"{name}: {preset} stopped at step {result.step} without final "
                           "weights")
        passes = build_task(config.task).passes_per_step()
        cost["stages"][preset] = {
            "wall_s": time.perf_counter() - started, "steps": config.steps,
            "batch_size": config.batch_size,
            "forward_backward": config.steps * passes.forward_backward,
            "forward_only": config.steps * passes.forward_only,
        }
        atomic_write_text(cost_path, json.dumps(cost, indent=1) + "\n")
        weights = result.weights
    assert weights is not None
    return weights


def _evaluate_one(name: str, weights: Path, out: Path, quick: bool, progress: bool,
                  seed: int, attacks: tuple[str, ...] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Evaluate model ``name`` on ``attacks`` of the demo suite (None: all), resuming."""
    model = load_weights(weights)
    config = load_config(MODELS[name].stages[-1])
    dataset = two_class_digits("test", size=config.data.size)
    logger.info("%s: evaluating %s", name, ", ".join(attacks) if attacks else "every attack")
    return evaluate(model, demo_suite(quick=quick), dataset,
                    out_dir=out / name / "eval", seed=seed, attacks=attacks,
                    max_images=QUICK_IMAGES if quick else FULL_IMAGES, progress=progress,
                    class_names=[str(c) for c in dataset.classes], check_budget=CHECK_BUDGET,
                    check_budget_images=QUICK_CHECK_IMAGES if quick else CHECK_IMAGES)


@dataclass(frozen=True)
class _Task:
    """One unit of a worker's work: train model ``name`` (every stage), or evaluate
    it on group ``group`` of :data:`EVAL_GROUPS`."""

    name: str
    group: int | None = None  # None: training


def _run_task(task: _Task, out: Path, quick: bool, progress: bool, seed: int) -> None:
    weights = _train_one(task.name, out, quick, progress, seed)
    if task.group is not None:
        _evaluate_one(task.name, weights, out, quick, progress, seed, EVAL_GROUPS[task.group])


def _die_with_parent(parent: int | None) -> None:
    """Make this worker die (SIGKILL) when process ``parent`` does, however it ends:
    ``PR_SET_PDEATHSIG`` on Linux (elsewhere nothing). A parent already gone by now
    ends the worker at once."""
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no libc symbol: the parent's handler still stops us
        return
    if os.getppid() != parent:
        os._exit(1)


def _start_worker(threads: int, parent: int | None = None) -> None:
    """Initializer of a demo worker process: it dies with ``parent``; torch's threads
    (not inherited), malloc. Its evaluation warnings are not shown: the parent's final
    pass over each model's saved chunks reports every one of them, in one line each."""
    _die_with_parent(parent)
    warnings.simplefilter("ignore", EvaluationWarning)
    keep_freed_memory()
    torch.set_num_threads(threads)


def _terminated(signum: int, _frame: Any) -> None:
    """SIGTERM handler of the demo's parent process: unwind (SystemExit 128 + signum), so
    that :func:`_workers_stop_with` terminates the workers before the parent exits."""
    logger.warning("terminated by signal %d: stopping the worker processes; rerun the demo "
                   "to resume", signum)
    raise SystemExit(128 + signum)


@contextmanager
def _workers_stop_with(pool: ProcessPoolExecutor) -> Iterator[None]:
    """Run the body with SIGTERM turned into SystemExit (in the main thread); when the
    body ends by SystemExit or KeyboardInterrupt, terminate the pool's worker processes
    (their resource tracker then exits too) instead of waiting for their tasks."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main else None
    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        processes = list((getattr(pool, "_processes", None) or {}).values())
        for process in processes:
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _next_task(ready: list[_Task]) -> _Task:
    """Remove and return the task to start next: any training (it unblocks the
    evaluations), else the costliest evaluation group, the earliest model first."""
    best = min(ready, key=lambda t: -1 if t.group is None else t.group)
    ready.remove(best)
    return best


def _run_tasks(order: list[str], out: Path, quick: bool, progress: bool, jobs: int,
               threads: int, seed: int) -> None:
    """Train and evaluate the models of ``order`` (longest pipeline first) in ``jobs``
    worker processes (1: in this process), at most ``jobs`` tasks running at once."""
    ready = [_Task(name) for name in order]
    if jobs <= 1:
        while ready:
            task = _next_task(ready)
            _run_task(task, out, quick, progress, seed)
            if task.group is None:
                ready += [_Task(task.name, g) for g in range(len(EVAL_GROUPS))]
        return
    logger.info("training and evaluating %s in %d worker processes", ", ".join(order), jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                             initializer=_start_worker, initargs=(threads, os.getpid())
                             ) as pool, _workers_stop_with(pool):
        running: dict[Future[None], _Task] = {}
        while ready or running:
            while ready and len(running) < jobs:
                task = _next_task(ready)
                running[pool.submit(_run_task, task, out, quick, False, seed)] = task
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                task = running.pop(future)
                future.result()  # a worker's error stops the demo here
                if task.group is None:
                    logger.info("%s: trained", task.name)
                    ready += [_Task(task.name, g) for g in range(len(EVAL_GROUPS))]


def run_model(name: str, out: Path, quick: bool, progress: bool, seed: int = 0
              ) -> dict[str, dict[str, Any]]:
    """Train (every stage) and evaluate model ``name`` in this process, resuming: its
    results per attack."""
    weights = _train_one(name, out, quick, progress, seed)
    return _evaluate_one(name, weights, out, quick, progress, seed)


def run_demo(out_dir: str | Path = "demo_out", *, quick: bool = False,
             progress: bool = True, jobs: int = 1, threads: int | None = None,
             seed: int = 0) -> DemoResult:
    """Train, evaluate and report the four digits models into ``out_dir`` (resumable).

    ``jobs`` worker processes run the models' pipelines (:func:`run_model`) side by
    side (1: all in this process); ``threads`` is torch's CPU threads per process
    (None: this process's current setting). ``seed`` seeds every training stage
    (``seed=`` override) and the evaluation. Results do not depend on ``jobs``.
    """
    out = output_folder(out_dir, what="demo output (--out)")
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads() if threads is None else threads
    torch.set_num_threads(threads)
    keep_freed_memory()
    # Longest pipeline first, so the workers finish close together.
    order = sorted(MODELS, key=lambda n: -len(MODELS[n].stages))
    _run_tasks(order, out, quick, progress, jobs, threads, seed)
    # Every chunk is on disk now: this gathers the records (and writes each model's
    # complete results.json and examples.png).
    results = {name: run_model(name, out, quick, False, seed) for name in MODELS}
    table = leaderboard(results)
    atomic_write_text(out / TABLE, table + "\n")
    plot_risk_coverage_per_attack(results, out / RISK_COVERAGE)
    plot_training_curves({name: out / name / "train" for name in MODELS}, out / TRAINING_CURVES)
    stack_examples({name: out / name / "eval" / "examples.png" for name in MODELS},
                   out / EXAMPLES)
    spatial_figure("llr_adv", out, quick)
    report = out / REPORT
    atomic_write_text(report, report_text(out, table, results, quick, threads, jobs, seed))
    return DemoResult(out, report, table, results)
