"""Executing a plan: attacks run chunk by chunk, each chunk saved as soon as it is done.

A *job* is one attack on a list of images under one name (its folder in the
state). Chunk ``k`` of a job is its images ``[k * B, (k + 1) * B)`` and goes to rank
``k % world_size``; a rerun loads the chunks on disk instead of computing them, and
the ranks' chunks are gathered after each job (docs/evaluation.md, "The runner").
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llrnet.attacks.base import searches_in_bf16
from llrnet.core import distributed
from llrnet.core.contracts import check_logits
from llrnet.core.errors import RunError, UsageError
from llrnet.core.memory import BatchLimit, map_batches
from llrnet.eval.plan import EvalPlan, forward
from llrnet.eval.seeds import image_seeds
from llrnet.eval.state import ChunkResult, RunState
from llrnet.eval.suites import SuiteEntry
from llrnet.models.precision import strict_fp32

logger = logging.getLogger(__name__)

POOL_SIZE = 250
"""Clean reference images offered to attacks that need them (Boundary): the first
250 images of the dataset, i.e. the whole bird-or-bicycle test split."""

EXAMPLE_COUNT = 6
"""Images shown per attack in ``examples.png``."""

Pool = tuple[torch.Tensor, torch.Tensor]
Chunks = dict[int, ChunkResult]
"""A job's results: chunk number -> its result."""


@dataclass(frozen=True)
class Job:
    """One attack on ``indices`` (dataset indices, in evaluation order), saved under
    ``name``; image i draws its randomness from the per-image seed of ``(seed, seed_name,
    i)``, so a job named otherwise can replay an entry's random streams."""

    name: str
    attack: Any
    seed_name: str
    indices: tuple[int, ...]

    @classmethod
    def of_entry(cls, entry: SuiteEntry, order: Sequence[int]) -> Job:
        """``entry`` on the first images of ``order`` (at most its ``max_images``)."""
        count = len(order) if entry.max_images is None else min(len(order), entry.max_images)
        return cls(entry.name, entry.attack, entry.name, tuple(order[:count]))

    @property
    def needs_pool(self) -> bool:
        """True if the attack needs clean reference images (Boundary)."""
        return bool(getattr(self.attack, "needs_pool", False))


def open_state(plan: EvalPlan, out: Path, *, restart: bool = False) -> RunState:
    """The state folder of ``out``: checked against the plan's manifest (resume) or new;
    ``restart`` first moves an earlier state to ``out/discarded/state``.

    Raises:
        UsageError: ``out`` holds an evaluation with other arguments or another
            precision, or chunks without a readable manifest.
    """
    state = RunState(out)
    first = distributed.rank() == 0
    with state.manifest_lock(enabled=first):
        if restart and first and (moved := state.discard()) is not None:
            logger.info("restarting the evaluation in %s; the previous state is in %s",
                        out, moved)
        distributed.barrier()
        check_resume_precision(state, plan.precision, out)
        check_resume_auto_batch(state, plan, out)
        resumed = state.check_manifest(plan.manifest)
        distributed.barrier()
        if first and not resumed:
            state.write_manifest(plan.manifest)
    if resumed:
        logger.info("resuming the evaluation in %s", out)
    return state


def check_resume_precision(state: RunState, precision: str, out: Path) -> None:
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


def check_resume_auto_batch(state: RunState, plan: EvalPlan, out: Path) -> None:
    """``batch_size="auto"`` may choose another size on a resume (free memory, another
    GPU); name the saved one instead of listing a manifest difference."""
    saved = state.saved_manifest()
    if saved is None or plan.options.batch_size != "auto":
        return
    before = saved.get("batch_size")
    if before is not None and before != plan.batch_size:
        raise UsageError(
            f"{out} holds an evaluation run at batch size {before}; batch size auto chose "
            f"{plan.batch_size} here. Resume it with --batch-size {before} "
            f"(batch_size={before}), or use another output folder"
        )


def load_pool(plan: EvalPlan, jobs: Sequence[Job]) -> Pool | None:
    """The clean reference pool on the plan's device if a job needs it, else None."""
    if not any(job.needs_pool for job in jobs):
        return None
    images, labels = plan.source.pool(POOL_SIZE)
    return images.to(plan.device), labels.to(plan.device)


def judge(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The fp32 model's logits on ``x`` (no TF32 on CUDA): what results are made of."""
    with strict_fp32():
        return forward(model, x)


Memory = dict[str, dict[str, int]]
"""Job name -> the batch sizes an out-of-memory error lowered (``working_batch``: images
per attack call; ``search_batch``: model inputs per call inside the attack)."""


def attack_parts(job: Job, searcher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 seeds: torch.Tensor, pool: Pool | None, limit: BatchLimit
                 ) -> tuple[torch.Tensor, float | None, int | None]:
    """``job``'s attack on ``x`` [n, C, H, W] in calls of at most ``limit.size`` images
    (halved and retried on an out-of-memory error; an image's result depends only
    on its own seed, so the split changes nothing): (x_adv [n, C, H, W], model
    evaluations of the successful calls or None if uncounted, the attack's search
    batch if an out-of-memory error lowered it)."""
    counts: list[float | None] = []
    search: list[int] = []

    def part(a: int, b: int) -> torch.Tensor:
        extra = {"pool": pool} if job.needs_pool else {}
        x_adv = job.attack(searcher, x[a:b], y[a:b], seeds=seeds[a:b], **extra)
        stats = getattr(job.attack, "last_stats", None) or {}
        counts.append(stats.get("model_evaluations"))
        if "search_batch" in stats:
            search.append(int(stats["search_batch"]))
        return x_adv

    x_adv = torch.cat(map_batches(part, x.shape[0], limit))
    evaluations = None if any(c is None for c in counts) else float(sum(c or 0.0 for c in counts))
    return x_adv, evaluations, (min(search) if search else None)


def judged(plan: EvalPlan, x_adv: torch.Tensor, limit: BatchLimit
           ) -> tuple[torch.Tensor, int | None]:
    """The fp32 model's logits [n, K] on ``x_adv`` and the bf16 copy's disagreements with
    them (None in an fp32 run), forwarded in calls of at most ``limit.size`` images."""
    def part(a: int, b: int) -> tuple[torch.Tensor, int | None]:
        logits = judge(plan.model, x_adv[a:b])
        return logits, plan.copies.disagreements(x_adv[a:b], logits)

    parts = map_batches(part, x_adv.shape[0], limit)
    found = [d for _, d in parts]
    disagreements = None if any(d is None for d in found) else sum(d or 0 for d in found)
    return torch.cat([logits for logits, _ in parts]), disagreements


def run_chunk(plan: EvalPlan, job: Job, chunk: int, indices: list[int],
              pool: Pool | None, limit: BatchLimit | None = None,
              memory: Memory | None = None) -> ChunkResult:
    """``job``'s attack on the images at ``indices``, judged by the fp32 model.

    ``limit`` is the job's working batch (images per attack call; None: the whole
    chunk), halved on an out-of-memory error; the sizes it lowered go into
    ``memory[job.name]``.
    """
    x, y = plan.source.get(indices)
    x, y = x.to(plan.device), y.to(plan.device)
    seeds = image_seeds(plan.seed, job.seed_name, indices)
    searcher = plan.copies.searcher(searches_in_bf16(job.attack))
    limit = limit or BatchLimit(len(indices), f"{job.name} working batch", plan.device)
    start = time.perf_counter()
    x_adv, evaluations, search = attack_parts(job, searcher, x, y, seeds, pool, limit)
    logits, disagreements = judged(plan, x_adv, limit)
    logits = check_logits(logits, len(indices), num_classes=int(y.max()) + 1)
    wall = time.perf_counter() - start
    if memory is not None and (limit.halved or search is not None):
        record = memory.setdefault(job.name, {})
        if limit.halved:
            record["working_batch"] = limit.size
        if search is not None:
            record["search_batch"] = min(search, record.get("search_batch", search))
    keep = (x_adv if plan.options.save_adversarial
            else (x_adv[:EXAMPLE_COUNT] if chunk == 0 else None))
    return ChunkResult(
        indices=torch.tensor(indices, dtype=torch.int64),
        labels=y.cpu(),
        logits=logits.detach().float().cpu(),
        model_evaluations=float("nan") if evaluations is None else float(evaluations),
        wall_time=wall,
        adversarial=None if keep is None else keep.detach().cpu(),
        disagreements=disagreements,
    )


def run_job(plan: EvalPlan, job: Job, state: RunState, pool: Pool | None,
            memory: Memory | None = None) -> Chunks:
    """This rank's chunks of ``job``, loaded or computed; then every rank's, gathered.

    The chunks share one working batch (:func:`run_chunk`): a size an out-of-memory
    error lowered holds for the rest of the job, and is noted in ``memory``.
    """
    size = plan.batch_size
    limit = BatchLimit(size, f"{job.name}: images per attack call", plan.device)
    chunks = list(range(math.ceil(len(job.indices) / size)))
    mine = chunks[distributed.rank()::distributed.world_size()]
    members = {c: list(job.indices[c * size:(c + 1) * size]) for c in mine}
    results: Chunks = {}
    for chunk in mine:
        saved = state.load_chunk(job.name, chunk, members[chunk])
        if saved is not None:
            results[chunk] = saved
    todo = [chunk for chunk in mine if chunk not in results]
    total = sum(len(members[c]) for c in mine)
    bar = tqdm(total=total, initial=total - sum(len(members[c]) for c in todo),
               desc=job.name, unit="img",
               disable=not plan.options.progress or distributed.rank() != 0,
               dynamic_ncols=True)
    try:
        for chunk in todo:
            result = run_chunk(plan, job, chunk, members[chunk], pool, limit, memory)
            state.save_chunk(job.name, chunk, result)
            results[chunk] = result
            bar.update(len(members[chunk]))
    finally:
        bar.close()
    merged: Chunks = {}
    for part in distributed.all_gather_objects(results):
        merged.update(part)
    if sorted(merged) != chunks:
        raise RunError(f"{job.name}: chunks {sorted(set(chunks) - set(merged))} are missing "
                       "after gathering the processes' results")
    return merged


@dataclass(frozen=True)
class Recheck:
    """An entry's attack re-run at ``factor`` times its budget (:func:`recheck`).

    ``budget`` and ``scaled_budget`` are the two budgets, ``robust`` the number of
    images the entry left correct (before the cap), ``chunks`` the results on the
    rechecked ones.
    """

    factor: int
    budget: dict[str, int]
    scaled_budget: dict[str, int]
    robust: int
    chunks: Chunks


@dataclass(frozen=True)
class EntryResults:
    """Everything run for one suite entry: its own ``chunks``, its white-box ``bound``'s
    (None: not run), its budget ``recheck`` (None: not run) and the batch sizes an
    out-of-memory error lowered while its own chunks ran (:data:`Memory`; empty: none)."""

    chunks: Chunks
    bound: Chunks | None = None
    recheck: Recheck | None = None
    memory: dict[str, int] = field(default_factory=dict)


BOUND_SUFFIX = ".white_box_bound"
"""A bound's job (state folder) is its entry's name plus this."""
RECHECK_SUFFIX = ".check_budget"
"""A budget recheck's job (state folder) is its entry's name plus this."""


def budget_of(attack: Any) -> dict[str, int]:
    """``attack.budget()``; {} for an unbudgeted attack or a callable without one."""
    budget = getattr(attack, "budget", None)
    return dict(budget()) if callable(budget) else {}


def robust_indices(chunks: Chunks, cap: int) -> tuple[list[int], int]:
    """The first ``cap`` images (in job order) that the attack left correctly
    classified (argmax of the final logits = label), and how many there are."""
    ordered = [chunks[k] for k in sorted(chunks)]
    robust = [int(index) for chunk in ordered
              for index, ok in zip(chunk.indices.tolist(),
                                   (chunk.logits.argmax(1) == chunk.labels).tolist(),
                                   strict=True) if ok]
    return robust[:cap], len(robust)


def recheck(plan: EvalPlan, job: Job, chunks: Chunks, state: RunState,
            pool: Pool | None) -> Recheck | None:
    """``job``'s attack at ``check_budget`` times its budget on the first
    ``check_budget_images`` images it left correct, with the same per-image seeds;
    None when the check is off or the attack has no budget."""
    factor = plan.options.check_budget
    budget = budget_of(job.attack)
    if factor is None or not budget:
        return None
    chosen, robust = robust_indices(chunks, plan.options.check_budget_images)
    scaled = job.attack.scaled(factor)
    rerun = Job(job.name + RECHECK_SUFFIX, scaled, job.seed_name, tuple(chosen))
    return Recheck(factor=factor, budget=budget, scaled_budget=budget_of(scaled),
                   robust=robust, chunks=run_job(plan, rerun, state, pool))


def execute(plan: EvalPlan, state: RunState) -> dict[str, EntryResults]:
    """Every entry of the plan's suite in order, each followed by its white-box bound
    and its budget recheck (when on), all under the entry's per-image seeds."""
    jobs = [Job.of_entry(entry, plan.source.order) for entry in plan.suite.entries]
    pool = load_pool(plan, jobs)
    results: dict[str, EntryResults] = {}
    memory: Memory = {}
    for job in jobs:
        chunks = run_job(plan, job, state, pool, memory)
        bound = None
        if job.name in plan.bounds:
            bound_job = Job(job.name + BOUND_SUFFIX, plan.bounds[job.name], job.seed_name,
                            job.indices)
            bound = run_job(plan, bound_job, state, pool)
        results[job.name] = EntryResults(chunks, bound, recheck(plan, job, chunks, state, pool),
                                         memory.get(job.name, {}))
    return results
