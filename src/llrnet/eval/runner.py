"""``evaluate``: run a suite of attacks on a model, resumably, on one or many processes.
A short driver: plan, execute the chunks, summarize, report.
More: docs/evaluation.md, "The runner"."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llrnet import __version__
from llrnet.attacks.base import searches_in_bf16
from llrnet.core import distributed
from llrnet.core.locks import folder_lock
from llrnet.core.paths import output_folder
from llrnet.eval import checks
from llrnet.eval.execute import EXAMPLE_COUNT, Chunks, EntryResults, Recheck, execute, open_state
from llrnet.eval.metrics import budget_check, summarize_attack
from llrnet.eval.plan import EvalOptions, EvalPlan, planned
from llrnet.eval.report import EXAMPLES, format_table, plot_examples, write_results
from llrnet.eval.suites import Suite

logger = logging.getLogger(__name__)

Records = dict[str, dict[str, Any]]
"""Attack name -> its results.json record."""


def evaluate(
    model_or_model_fn: nn.Module | Callable[[np.ndarray], np.ndarray],
    suite: str | Suite | Sequence[Any],
    dataset: Any,
    options: EvalOptions | None = None,
    *,
    out_dir: str | Path,
    restart: bool = False,
    **overrides: Any,
) -> Records:
    """Evaluate a classifier under a suite of attacks and write a report to ``out_dir``.

    Args:
        model_or_model_fn: an ``nn.Module`` mapping float [N, C, H, W] images in
            [0, 1] to logits [N, K] (the fast path; a model with a sigmoid
            bird head, such as a bird-or-bicycle classifier, is scored through
            its challenge view, ``llrnet.models.challenge_view``), or the challenge's numpy
            ``model_fn`` (NHWC float32 -> (N, 2) float32). A model_fn only
            supports attacks that need no gradients.
        suite: a suite name (:func:`list_suites`), a :class:`Suite`, or a list
            of attacks (a custom suite).
        dataset: a ``Dataset`` of ``(image [C, H, W] in [0, 1], label)`` or a
            tuple ``(images [N, C, H, W], labels [N])``.
        options: an :class:`EvalOptions` (default: all its defaults).
        out_dir: folder for the report and the resumable state. Each attack
            run holds a lock there (``state/NAME.lock``) until the run ends.
        restart: move an earlier state of ``out_dir`` to
            ``out_dir/discarded/state`` and start over (needed when the state
            is damaged or its manifest is missing).
        **overrides: :class:`EvalOptions` fields by name, replacing ``options``':
            ``seed`` (image i under attack a uses a seed derived from ``(seed, a,
            i)``), ``device`` (under torchrun CUDA gets ``LOCAL_RANK``),
            ``batch_size`` (images per chunk; default the suite's),
            ``max_images``, ``attacks`` (names of the suite's attacks to run),
            ``shuffle`` (the seeded shuffled order of
            ``llrnet.data.evaluation_loader``; default the suite's choice:
            ``bird_or_bicycle`` shuffles, as the reference did, so that the
            first 100 images of Boundary hold both classes; results always refer
            to dataset indices), ``save_adversarial`` (keep every adversarial
            image in the state files, otherwise only the first few, for
            ``examples.png``), ``progress`` (a bar per attack, rank 0 only),
            ``class_names`` (for ``examples.png``), ``skip_unreadable`` (score
            the readable images of a dataset of image files and report the
            others; by default an unreadable file stops the run before any
            attack) and ``precision`` (``"fp32"``, ``"bf16"`` or ``"auto"``: with
            bf16 the attacks whose policy allows it, ``searches_in_bf16``, search
            with a bf16 channels_last copy and every final image is judged by
            the fp32 model; a run resumes only under the precision it started
            with), ``check_budget`` (K: re-run each budgeted attack at K times its
            budget on at most ``check_budget_images`` images it left correct, with
            the same per-image seeds), ``white_box_bounds`` (run each
            black-box attack's white-box bound; None: the suite's default) and
            ``compile`` (run the model and its search copies through
            ``torch.compile``; execution only, so not part of the resume check).
            docs/evaluation.md has the details.

    Returns:
        attack name -> record with ``accuracy@80``, ``accuracy@100``, ``images``,
        ``error_indices``, ``error_indices@80``, ``wall_time`` (s),
        ``model_evaluations`` (images the attack forwarded), ``kind``,
        ``coverage_curve`` (the same on every rank), ``search_precision``
        (``fp32`` or ``bf16``) and ``precision_disagreements`` (final images on
        which the bf16 copy's decision differs from the fp32 model's; None in
        fp32 runs); with bounds on, ``white_box_bound`` (the bound's record, or
        ``{"skipped": reason}``); with ``check_budget``, ``budget_check``.

    Raises:
        InputError: the model's output on the first batch is not [N, K] finite
            float logits (model_fn: float32 (N, 2)), or the data is malformed.
        UsageError: unknown suite, attack or option names, a white-box attack on
            a model_fn, or ``out_dir`` holding a run with different arguments
            (or chunks without a readable manifest).
        RunError: another process is running one of the attacks in ``out_dir``.
    """
    settings = (options or EvalOptions()).merged(overrides)
    out = output_folder(out_dir, what="evaluation output (out_dir)")
    with ExitStack() as locks:
        with planned(model_or_model_fn, suite, dataset, settings) as plan:
            first = distributed.rank() == 0  # the process group starts in planned()
            if first:  # shared by runs (of disjoint attacks), exclusive for a restart
                locks.enter_context(folder_lock(out, what="evaluation output folder",
                                                shared=not restart))
            state = open_state(plan, out, restart=restart)
            with state.locked(plan.suite.names, enabled=first):
                results = execute(plan, state)
        records, warnings = summarize(plan, results)
        if first:
            write_report(plan, out, records, warnings, results)
    distributed.barrier()
    return records


def merge_chunks(chunks: Chunks) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits [n, K], labels [n], indices [n]) of a job's chunks, in chunk order."""
    ordered = [chunks[k] for k in sorted(chunks)]
    logits = torch.cat([c.logits for c in ordered]).numpy()
    labels = torch.cat([c.labels for c in ordered]).numpy()
    indices = torch.cat([c.indices for c in ordered]).numpy()
    return logits, labels, indices


def total_evaluations(chunks: Chunks) -> float | None:
    """Model evaluations over the chunks; None if an attack did not count them."""
    values = [c.model_evaluations for c in chunks.values()]
    return None if any(math.isnan(v) for v in values) else float(sum(values))


def total_disagreements(chunks: Chunks) -> int | None:
    """bf16/fp32 disagreements over the chunks; None in an fp32 run."""
    values = [c.disagreements for c in chunks.values()]
    return None if any(v is None for v in values) else int(sum(v for v in values if v))


def attack_record(plan: EvalPlan, attack: Any, kind: str, chunks: Chunks) -> dict[str, Any]:
    """The results.json record of one job's chunks (:func:`summarize_attack` and the run's
    precision and skipped-image facts)."""
    record = summarize_attack(
        *merge_chunks(chunks), kind=kind, model_evaluations=total_evaluations(chunks),
        wall_time=float(sum(c.wall_time for c in chunks.values())),
    )
    if plan.source.skipped:
        record["skipped_images"] = len(plan.source.skipped)
    record["search_precision"] = plan.copies.search_precision(searches_in_bf16(attack))
    record["precision_disagreements"] = total_disagreements(chunks)
    return record


def recheck_record(chunks: Chunks, recheck: Recheck) -> dict[str, Any]:
    """The ``budget_check`` record of an entry: both budgets, the rechecked images and
    :func:`budget_check`'s comparison."""
    logits, labels, indices = merge_chunks(chunks)
    if recheck.chunks:
        scaled_logits, _, scaled_indices = merge_chunks(recheck.chunks)
    else:  # the attack left no image correct: nothing to recheck
        scaled_logits = np.zeros((0, logits.shape[1]), np.float32)
        scaled_indices = np.zeros(0, np.int64)
    return {
        "factor": recheck.factor,
        "budget": recheck.budget,
        "scaled_budget": recheck.scaled_budget,
        "robust_images": recheck.robust,
        "indices": [int(i) for i in scaled_indices],
        **budget_check(logits, labels, indices, scaled_logits, scaled_indices),
        "model_evaluations": total_evaluations(recheck.chunks),
        "wall_time": float(sum(c.wall_time for c in recheck.chunks.values())),
    }


def summarize(plan: EvalPlan, results: dict[str, EntryResults]) -> tuple[Records, list[str]]:
    """The results.json record of each entry (with its white-box bound and budget check
    when run), and every sanity warning of the run."""
    records: Records = {}
    for entry in plan.suite.entries:
        done = results[entry.name]
        record = attack_record(plan, entry.attack, entry.kind, done.chunks)
        if done.bound is not None:
            record["white_box_bound"] = attack_record(plan, plan.bounds[entry.name],
                                                      "white_box", done.bound)
        elif entry.name in plan.bound_notes:
            record["white_box_bound"] = {"skipped": plan.bound_notes[entry.name]}
        if done.recheck is not None:
            record["budget_check"] = recheck_record(done.chunks, done.recheck)
        if done.memory:  # batch sizes an out-of-memory error lowered (absent: none)
            record["memory"] = dict(done.memory)
        records[entry.name] = record
    found = list(plan.warnings)
    found += checks.check_attack_strengths(
        {entry.name: entry.kind for entry in plan.suite.entries},
        {name: record["accuracy@80"] for name, record in records.items()},
    )
    found += checks.check_autoattack({e.name: e.attack for e in plan.suite.entries},
                                     records, found)
    found += checks.check_budgets(records)
    found += checks.check_white_box_bounds(records)
    return records, found


def write_report(plan: EvalPlan, out: Path, records: Records, warnings: list[str],
                 results: dict[str, EntryResults]) -> None:
    """results.json, config.json, the risk-coverage plot and examples.png into ``out``."""
    source = plan.source
    summary: dict[str, Any] = {
        "suite": plan.suite.name,
        "seed": plan.seed,
        "images": source.count,
        "precision": plan.precision,
        "compile": plan.compiled,
        "attacks": records,
        "order": plan.suite.names,
        "warnings": warnings,
    }
    if source.skipped:
        summary["skipped"] = [{"index": index, "reason": reason}
                              for index, reason in sorted(source.skipped.items())]
    config = {
        **plan.manifest,
        "suite": plan.suite.describe(),
        "device": str(plan.device),
        "processes": distributed.world_size(),
        "max_images": plan.options.max_images,
        "precision_requested": plan.options.precision,
        "precision": plan.precision,
        "compile_requested": plan.options.compile,
        "compile": plan.compiled,
        "model_class": "model_fn" if plan.is_model_fn else type(plan.model).__name__,
        "llrnet_version": __version__,
        "torch_version": torch.__version__,
    }
    write_results(out, summary, config)
    write_examples(plan, out, {name: done.chunks for name, done in results.items()})
    logger.info("evaluation written to %s", out)
    logger.debug("results:\n%s", format_table(records))


def write_examples(plan: EvalPlan, out: Path, per_attack: dict[str, Chunks]) -> None:
    """``examples.png``: the first images, clean and after each attack (chunk 0's)."""
    rows: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
    for name, chunks in per_attack.items():
        first = chunks.get(0)
        if first is not None and first.adversarial is not None:
            shown = min(EXAMPLE_COUNT, len(first.adversarial))
            rows[name] = (first.adversarial[:shown], first.logits[:shown].numpy())
    if not rows:
        return
    clean, labels = plan.source.get(plan.source.order[:EXAMPLE_COUNT])
    plot_examples(clean, labels, rows, out / EXAMPLES, plan.options.class_names)
