"""``evaluate``: run a suite of attacks on a model, resumably, on one or many processes.
More: docs/evaluation.md, "llrnet.eval.runner"."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from llrnet import __version__
from llrnet.attacks import searches_in_bf16
from llrnet.core import distributed
from llrnet.core.contracts import check_images, check_logits
from llrnet.core.errors import InputError, RunError, UsageError, first_line
from llrnet.core.paths import output_folder
from llrnet.core.seeding import check_seed
from llrnet.eval import checks
from llrnet.eval.images import ImageSource
from llrnet.eval.model_fn import ModelFnModule
from llrnet.eval.report import (
    EXAMPLES,
    format_table,
    plot_examples,
    summarize_attack,
    write_results,
)
from llrnet.eval.seeds import image_seeds
from llrnet.eval.state import ChunkResult, RunState
from llrnet.eval.suites import Suite, SuiteEntry, get_suite
from llrnet.models.heads import challenge_view
from llrnet.models.precision import check_precision, fast_copy, resolve_precision, strict_fp32
from llrnet.models.weights import tensors_sha256

logger = logging.getLogger(__name__)

POOL_SIZE = 250
"""Clean reference images offered to attacks that need them (Boundary): the first
250 images of the dataset, i.e. the whole bird-or-bicycle test split."""

EXAMPLE_COUNT = 6
"""Images shown per attack in ``examples.png``."""


@dataclass
class _Run:
    """Everything a chunk needs, resolved once."""

    model: nn.Module
    source: ImageSource
    device: torch.device
    seed: int
    batch_size: int
    save_adversarial: bool
    pool: tuple[torch.Tensor, torch.Tensor] | None = None
    fast: nn.Module | None = None
    """The bf16 copy of ``model`` (bf16 runs only)."""
    fast_fp32: nn.Module | None = None
    """An fp32 channels_last copy of ``model``, for the attacks of a bf16 run that
    search in fp32 (SPSA, PGD): the same precision, a faster memory layout."""

    def searcher(self, entry: SuiteEntry) -> nn.Module:
        """The model ``entry``'s attack searches with.

        The bf16 copy if the attack's policy allows it; in a bf16 run the fp32
        channels_last copy otherwise; the model itself in an fp32 run.
        """
        if self.fast is not None and searches_in_bf16(entry.attack):
            return self.fast
        if self.fast_fp32 is not None:
            return self.fast_fp32
        return self.model


def _resolve_suite(suite: str | Suite | Sequence[Any]) -> Suite:
    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, str):
        return get_suite(suite)
    if isinstance(suite, Sequence) and suite:
        return Suite.custom(list(suite))
    raise UsageError(
        f"suite must be a suite name, a Suite or a list of attacks, got {type(suite).__name__}"
    )


def _fingerprint_module(model: nn.Module) -> str:
    """sha256 of the class name and the weights file's tensor hash of the state dict."""
    tensors = tensors_sha256(model.state_dict())
    return hashlib.sha256(f"{type(model).__name__}|{tensors}".encode()).hexdigest()


def _fingerprint_outputs(logits: torch.Tensor) -> str:
    rounded = np.round(logits.detach().cpu().double().numpy(), 3)
    return hashlib.sha256(rounded.tobytes()).hexdigest()


def _prepare_model(model_or_fn: Any, device: torch.device) -> tuple[nn.Module, bool]:
    if isinstance(model_or_fn, nn.Module):
        view = challenge_view(model_or_fn)
        if view is not model_or_fn:
            # A sigmoid bird head's raw logits are not the challenge contract; its view is.
            logger.info("scoring %s through its challenge view", type(model_or_fn).__name__)
        return view.to(device), False
    if callable(model_or_fn):
        return ModelFnModule(model_or_fn), True
    raise UsageError(
        "model must be a torch.nn.Module or a numpy model_fn (NHWC float32 images -> "
        f"(N, 2) float32 logits), got {type(model_or_fn).__name__}"
    )


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _judge(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The fp32 model's logits on ``x`` (no TF32 on CUDA): what results are made of."""
    with strict_fp32():
        return _forward(model, x)


def _resolve_run_precision(precision: str, device: torch.device, is_model_fn: bool) -> str:
    """``fp32`` or ``bf16`` for this run; a numpy model_fn can only run as it is."""
    check_precision(precision)
    if is_model_fn:
        if precision == "bf16":
            raise UsageError("precision bf16 needs an nn.Module; a numpy model_fn runs in "
                             "its own precision (use --precision fp32)")
        if precision == "auto":
            logger.info("precision auto: fp32 (a numpy model_fn runs as it is)")
        return "fp32"
    return resolve_precision(precision, device)


def _check_resume_precision(state: RunState, precision: str, out: Path) -> None:
    """A run searched in one precision may not be resumed in another."""
    saved = state.saved_manifest()
    if saved is None:
        return
    before = str(saved.get("precision", "fp32"))  # older states have no key: fp32
    if before != precision:
        raise UsageError(
            f"{out} holds an evaluation that searched in {before}; this run would search in "
            f"{precision}, which changes results. Resume it with --precision {before} "
            "(precision='" + before + "'), or use another output folder"
        )


def _validate_first_batch(run: _Run) -> tuple[torch.Tensor, list[str]]:
    """Forward the first batch twice; raise InputError on bad outputs; sanity warnings."""
    x, y = run.source.get(run.source.order[: run.batch_size])
    check_images(x)
    if int(y.min()) < 0:
        raise InputError("labels must be non-negative class indices")
    x = x.to(run.device)
    try:
        first = _forward(run.model, x)  # a ModelFnModule also checks the model_fn contract
    except (RuntimeError, TypeError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        reason = first_line(error)
        raise InputError(f"the model failed on the first batch (images {list(x.shape)}): "
                         f"{reason}; do the model and the data match?") from error
    check_logits(first, len(x), num_classes=int(y.max()) + 1)
    second = _forward(run.model, x)
    return first, checks.check_outputs(first, second)


def _chunk_indices(order: list[int], chunk: int, batch_size: int, count: int) -> list[int]:
    """Dataset indices of ``chunk``: positions [chunk * B, (chunk + 1) * B) of ``order``."""
    return order[chunk * batch_size: min((chunk + 1) * batch_size, count)]


def _run_chunk(run: _Run, entry: SuiteEntry, chunk: int, indices: list[int]) -> ChunkResult:
    x, y = run.source.get(indices)
    x, y = x.to(run.device), y.to(run.device)
    seeds = image_seeds(run.seed, entry.name, indices)
    searcher = run.searcher(entry)
    start = time.perf_counter()
    if entry.needs_pool:
        x_adv = entry.attack(searcher, x, y, seeds=seeds, pool=run.pool)
    else:
        x_adv = entry.attack(searcher, x, y, seeds=seeds)
    stats = getattr(entry.attack, "last_stats", None) or {}
    logits = check_logits(_judge(run.model, x_adv), len(indices), num_classes=int(y.max()) + 1)
    wall = time.perf_counter() - start
    disagreements = None
    if run.fast is not None:
        fast = _forward(run.fast, x_adv)
        disagreements = int((fast.argmax(1) != logits.argmax(1)).sum())
    keep = x_adv if run.save_adversarial else (x_adv[:EXAMPLE_COUNT] if chunk == 0 else None)
    evaluations = stats.get("model_evaluations")
    return ChunkResult(
        indices=torch.tensor(indices, dtype=torch.int64),
        labels=y.cpu(),
        logits=logits.detach().float().cpu(),
        model_evaluations=float("nan") if evaluations is None else float(evaluations),
        wall_time=wall,
        adversarial=None if keep is None else keep.detach().cpu(),
        disagreements=disagreements,
    )


def _run_entry(run: _Run, entry: SuiteEntry, state: RunState, progress: bool
               ) -> dict[int, ChunkResult]:
    """This rank's chunks of ``entry``, loaded or computed; then every rank's, gathered."""
    count = run.source.count if entry.max_images is None else min(run.source.count,
                                                                    entry.max_images)
    chunks = list(range(math.ceil(count / run.batch_size)))
    mine = chunks[distributed.rank()::distributed.world_size()]
    members = {c: _chunk_indices(run.source.order, c, run.batch_size, count) for c in mine}
    results: dict[int, ChunkResult] = {}
    for chunk in mine:
        saved = state.load_chunk(entry.name, chunk)
        if saved is not None and saved.indices.tolist() == members[chunk]:
            results[chunk] = saved
    todo = [chunk for chunk in mine if chunk not in results]
    total = sum(len(members[c]) for c in mine)
    bar = tqdm(total=total, initial=total - sum(len(members[c]) for c in todo),
               desc=entry.name, unit="img", disable=not progress or distributed.rank() != 0,
               dynamic_ncols=True)
    try:
        for chunk in todo:
            result = _run_chunk(run, entry, chunk, members[chunk])
            state.save_chunk(entry.name, chunk, result)
            results[chunk] = result
            bar.update(len(members[chunk]))
    finally:
        bar.close()
    merged: dict[int, ChunkResult] = {}
    for part in distributed.all_gather_objects(results):
        merged.update(part)
    if sorted(merged) != chunks:
        raise RunError(f"{entry.name}: chunks {sorted(set(chunks) - set(merged))} are missing "
                       "after gathering the processes' results")
    return merged


def _merge(chunks: dict[int, ChunkResult]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ordered = [chunks[k] for k in sorted(chunks)]
    logits = torch.cat([c.logits for c in ordered]).numpy()
    labels = torch.cat([c.labels for c in ordered]).numpy()
    indices = torch.cat([c.indices for c in ordered]).numpy()
    return logits, labels, indices


def _evaluations(chunks: dict[int, ChunkResult]) -> float | None:
    values = [c.model_evaluations for c in chunks.values()]
    return None if any(math.isnan(v) for v in values) else float(sum(values))


def _disagreements(chunks: dict[int, ChunkResult]) -> int | None:
    values = [c.disagreements for c in chunks.values()]
    return None if any(v is None for v in values) else int(sum(v for v in values if v))


def evaluate(
    model_or_model_fn: nn.Module | Callable[[np.ndarray], np.ndarray],
    suite: str | Suite | Sequence[Any],
    dataset: Any,
    *,
    out_dir: str | Path,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    max_images: int | None = None,
    attacks: Sequence[str] | None = None,
    shuffle: bool | None = None,
    save_adversarial: bool = False,
    progress: bool = True,
    class_names: Sequence[str] | None = None,
    skip_unreadable: bool = False,
    precision: str = "fp32",
) -> dict[str, dict[str, Any]]:
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
        out_dir: folder for the report and the resumable state.
        seed: the run's seed; image i under attack a uses a seed derived from
            ``(seed, a, i)``.
        device: where the model runs (under torchrun CUDA gets ``LOCAL_RANK``).
        batch_size: images per chunk (default: the suite's).
        max_images: evaluate the first ``max_images`` only.
        attacks: names of the suite's attacks to run (default all).
        shuffle: evaluate in the seeded shuffled order of
            ``llrnet.data.evaluation_loader`` (default: the suite's choice;
            ``bird_or_bicycle`` shuffles, as the reference did, so that the
            first 100 images of Boundary hold both classes). Results always
            refer to dataset indices.
        save_adversarial: keep every adversarial image in the state files
            (otherwise only the first few, for ``examples.png``).
        progress: show a progress bar per attack (rank 0 only).
        class_names: names for ``examples.png`` titles.
        skip_unreadable: score the readable images of a dataset of image files
            and report the others (``skipped`` in results.json, ``skipped_images``
            in each record, a line under the table). By default an unreadable
            file stops the run before any attack, with the list of such files.
        precision: ``"fp32"`` (default), ``"bf16"`` or ``"auto"`` (bf16 where
            the device computes bf16 natively: AMX-BF16 or AVX512-BF16, CUDA
            sm_80+; logged). With bf16 the attacks whose policy allows it
            (``searches_in_bf16``: the spatial grid, corruptions, Boundary;
            docs/evaluation.md) search with a bf16 channels_last copy; every
            attack's final images are judged by the fp32 model. A run resumes
            only under the precision it started with.

    Returns:
        attack name -> record with ``accuracy@80``, ``accuracy@100``, ``images``,
        ``error_indices``, ``error_indices@80``, ``wall_time`` (s),
        ``model_evaluations`` (images the attack forwarded), ``kind``,
        ``coverage_curve`` (the same on every rank), ``search_precision``
        (``fp32`` or ``bf16``) and ``precision_disagreements`` (final images on
        which the bf16 copy's decision differs from the fp32 model's; None in
        fp32 runs).

    Raises:
        InputError: the model's output on the first batch is not [N, K] finite
            float logits (model_fn: float32 (N, 2)), or the data is malformed.
        UsageError: unknown suite or attack names, a white-box attack on a
            model_fn, or ``out_dir`` holding a run with different arguments.
    """
    out = output_folder(out_dir, what="evaluation output (out_dir)")
    seed = check_seed(seed)
    target = distributed.local_device(device)
    if target.type == "cuda":
        torch.cuda.set_device(target)  # NCCL object gathers use the current device
    distributed.init_from_env(target)
    full = _resolve_suite(suite)
    resolved = full.select(attacks)
    size = resolved.batch_size if batch_size is None else batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UsageError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    shuffled = resolved.shuffle if shuffle is None else shuffle
    source = ImageSource(dataset, max_images, shuffle_seed=int(seed) if shuffled else None,
                         skip_unreadable=skip_unreadable)
    model, is_model_fn = _prepare_model(model_or_model_fn, target)
    run_precision = _resolve_run_precision(precision, target, is_model_fn)
    if is_model_fn:
        white_box = [entry.name for entry in resolved.entries if entry.needs_gradients]
        if white_box:
            raise UsageError(
                f"attack(s) {', '.join(white_box)} need gradients, which a numpy model_fn "
                "does not have; pass an nn.Module or choose other attacks"
            )
    was_training = model.training
    model.eval()
    try:
        run = _Run(model=model, source=source, device=target, seed=int(seed), batch_size=size,
                   save_adversarial=save_adversarial)
        first_logits, found = _validate_first_batch(run)
        if run_precision == "bf16":
            run.fast = fast_copy(model, "bf16").eval()
            if any(not searches_in_bf16(e.attack) for e in resolved.entries):
                run.fast_fp32 = fast_copy(model, "fp32").eval()
        manifest = {
            # The whole suite, not the selection: runs of different attack subsets
            # can share an output folder (each attack's chunks are its own).
            "suite": full.fingerprint(),
            "seed": int(seed),
            "batch_size": size,
            "images": source.count,
            "shuffle": bool(shuffled),
            "data": source.fingerprint(size),
            "model": _fingerprint_outputs(first_logits) if is_model_fn
            else _fingerprint_module(model),
            "save_adversarial": bool(save_adversarial),
        }
        if source.skipped:  # absent otherwise, so earlier runs' manifests still match
            manifest["skipped"] = sorted(source.skipped)
        if run_precision != "fp32":  # absent means fp32, as in states of older versions
            manifest["precision"] = run_precision
            manifest["bf16_search"] = [e.name for e in full.entries
                                       if searches_in_bf16(e.attack)]
        state = RunState(out)
        _check_resume_precision(state, run_precision, out)
        resumed = state.check_manifest(manifest)
        distributed.barrier()
        if distributed.rank() == 0 and not resumed:
            state.write_manifest(manifest)
        if resumed:
            logger.info("resuming the evaluation in %s", out)
        if any(entry.needs_pool for entry in resolved.entries):
            images, labels = source.pool(POOL_SIZE)
            run.pool = (images.to(target), labels.to(target))
        per_attack = {entry.name: _run_entry(run, entry, state, progress)
                      for entry in resolved.entries}
    finally:
        model.train(was_training)

    attack_records: dict[str, dict[str, Any]] = {}
    for entry in resolved.entries:
        merged_logits, merged_labels, merged_indices = _merge(per_attack[entry.name])
        attack_records[entry.name] = summarize_attack(
            merged_logits, merged_labels, merged_indices, kind=entry.kind,
            model_evaluations=_evaluations(per_attack[entry.name]),
            wall_time=float(sum(c.wall_time for c in per_attack[entry.name].values())),
        )
        if source.skipped:
            attack_records[entry.name]["skipped_images"] = len(source.skipped)
        attack_records[entry.name]["search_precision"] = (
            "bf16" if run.fast is not None and run.searcher(entry) is run.fast else "fp32")
        attack_records[entry.name]["precision_disagreements"] = (
            _disagreements(per_attack[entry.name]))
    found += checks.check_attack_strengths(
        {entry.name: entry.kind for entry in resolved.entries},
        {name: record["accuracy@80"] for name, record in attack_records.items()},
    )
    found += checks.check_autoattack({e.name: e.attack for e in resolved.entries},
                                     attack_records, found)
    if distributed.rank() == 0:
        summary = {
            "suite": resolved.name,
            "seed": int(seed),
            "images": source.count,
            "precision": run_precision,
            "attacks": attack_records,
            "order": resolved.names,
            "warnings": found,
        }
        if source.skipped:
            summary["skipped"] = [{"index": index, "reason": reason}
                                  for index, reason in sorted(source.skipped.items())]
        config = {
            **manifest,
            "suite": resolved.describe(),
            "device": str(target),
            "processes": distributed.world_size(),
            "max_images": max_images,
            "precision_requested": precision,
            "precision": run_precision,
            "model_class": "model_fn" if is_model_fn else type(model).__name__,
            "llrnet_version": __version__,
            "torch_version": torch.__version__,
        }
        write_results(out, summary, config)
        _write_examples(out, source, per_attack, class_names)
        logger.info("evaluation written to %s", out)
        logger.debug("results:\n%s", format_table(attack_records))
    distributed.barrier()
    return attack_records


def _write_examples(out: Path, source: ImageSource, per_attack: dict[str, dict[int, ChunkResult]],
                    class_names: Sequence[str] | None) -> None:
    rows: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
    for name, chunks in per_attack.items():
        first = chunks.get(0)
        if first is not None and first.adversarial is not None:
            shown = min(EXAMPLE_COUNT, len(first.adversarial))
            rows[name] = (first.adversarial[:shown], first.logits[:shown].numpy())
    if not rows:
        return
    clean, labels = source.get(source.order[:EXAMPLE_COUNT])
    plot_examples(clean, labels, rows, out / EXAMPLES, class_names)
