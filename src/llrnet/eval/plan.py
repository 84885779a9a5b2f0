"""The plan of an evaluation: everything ``evaluate`` resolves before the first attack.

:func:`planned` turns ``evaluate``'s arguments (:class:`EvalOptions`) into a frozen
:class:`EvalPlan`: the selected suite, the image source, the scored model and its
search copies, and the resume fingerprint (docs/evaluation.md, "The runner").
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from llrnet.attacks import white_box_bound
from llrnet.attacks.base import searches_in_bf16
from llrnet.core import distributed
from llrnet.core.checks import check_count
from llrnet.core.contracts import check_images, check_logits, check_materialized
from llrnet.core.errors import InputError, UsageError, first_line
from llrnet.core.memory import BatchLimit, batch_for_memory, is_out_of_memory, map_batches
from llrnet.core.modes import kept_as_given
from llrnet.core.seeding import check_seed
from llrnet.eval import checks
from llrnet.eval.images import ImageSource
from llrnet.eval.model_fn import ModelFnModule
from llrnet.eval.suites import Suite, fingerprint_attack, get_suite
from llrnet.models.compiled import compile_model, is_compiled, uncompile
from llrnet.models.heads import challenge_view
from llrnet.models.precision import Precision, SearchCopies, check_precision, resolve_precision
from llrnet.models.weights import tensors_sha256

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalOptions:
    """Everything :func:`llrnet.eval.evaluate` takes besides the model, suite, data and
    output folder; each field is also an ``evaluate`` keyword of the same name.

    ``seed`` keys every image's randomness; ``device`` is where the model runs;
    ``batch_size`` images per chunk (None: the suite's; ``"auto"``: on CUDA the
    largest power of two whose measured memory fits half the free memory, elsewhere
    the suite's); ``max_images`` the first
    N of the order; ``attacks`` the suite's entries to run (None: its default
    ones); ``shuffle`` the seeded shuffled order (None: the suite's);
    ``save_adversarial`` keeps every final image in the state; ``progress``
    shows bars; ``class_names`` titles ``examples.png``; ``skip_unreadable``
    scores the readable images of a folder; ``precision`` is ``fp32``, ``bf16``
    or ``auto`` (the search precision). ``check_budget`` K re-runs each budgeted
    attack at K times its budget on at most ``check_budget_images`` of the
    images it left correct (None: no check); ``white_box_bounds`` runs each
    black-box attack's white-box bound (None: the suite's default), with
    ``bound_attack`` ``"pgd"`` (L-inf and L2 PGD-100) or ``"apgd-ce"`` (the
    authors' APGD-CE in L-inf balls, needs ``pyautoattack``; its result depends
    on the other images of a chunk, as AutoAttack's does). ``compile`` runs the
    model and its search copies through ``torch.compile`` (execution only: not
    in the resume fingerprint; where it cannot run, one warning and eager).
    """

    seed: int = 0
    device: str | torch.device = "cpu"
    batch_size: int | str | None = None
    max_images: int | None = None
    attacks: Sequence[str] | None = None
    shuffle: bool | None = None
    save_adversarial: bool = False
    progress: bool = True
    class_names: Sequence[str] | None = None
    skip_unreadable: bool = False
    precision: str = "fp32"
    check_budget: int | None = None
    check_budget_images: int = 32
    white_box_bounds: bool | None = None
    bound_attack: str = "pgd"
    compile: bool = False

    def merged(self, overrides: Mapping[str, Any]) -> EvalOptions:
        """These options with ``overrides`` (field name -> value) replacing fields.

        Raises:
            UsageError: a name is not a field.
        """
        names = [option.name for option in fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise UsageError(f"evaluate() takes no option {', '.join(unknown)}; "
                             f"valid: {', '.join(names)}")
        return replace(self, **overrides)


@dataclass(frozen=True)
class EvalPlan:
    """An evaluation resolved before any attack runs.

    ``suite`` holds the selected entries; ``source`` the images in evaluation
    order; ``model`` is the module that judges (fp32; a numpy model_fn wrapped
    when ``is_model_fn``) and ``copies`` what attacks search with; ``precision``
    the resolved search precision; ``manifest`` the resume fingerprint
    (:class:`~llrnet.eval.state.RunState`); ``warnings`` the sanity checks of the
    first batch. ``bounds`` maps an entry's name to its white-box bound attack (when
    bounds are on and the model has gradients), ``bound_notes`` to why its bound
    was skipped. ``compiled``: the model and copies run through ``torch.compile``.
    """

    suite: Suite
    source: ImageSource
    model: nn.Module
    is_model_fn: bool
    copies: SearchCopies
    device: torch.device
    seed: int
    batch_size: int
    precision: Precision
    manifest: dict[str, Any]
    options: EvalOptions
    warnings: tuple[str, ...]
    bounds: Mapping[str, Any] = field(default_factory=dict)
    bound_notes: Mapping[str, str] = field(default_factory=dict)
    compiled: bool = False


def resolve_suite(suite: str | Suite | Sequence[Any]) -> Suite:
    """A :class:`Suite` from a name, a suite or a list of attacks (a custom suite)."""
    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, str):
        return get_suite(suite)
    if isinstance(suite, Sequence) and suite:
        return Suite.custom(list(suite))
    raise UsageError(
        f"suite must be a suite name, a Suite or a list of attacks, got {type(suite).__name__}"
    )


def start_device(device: str | torch.device) -> torch.device:
    """This process's device (CUDA: ``LOCAL_RANK``), with the process group started."""
    target = distributed.local_device(device)
    if target.type == "cuda":
        torch.cuda.set_device(target)  # NCCL object gathers use the current device
    distributed.init_from_env(target)
    return target


AUTO = "auto"
"""``batch_size="auto"`` (``--batch-size auto``): sized from the device's memory."""
AUTO_CAP = 1024
"""The largest chunk ``batch_size="auto"`` chooses."""


def chunk_size(suite: Suite, batch_size: int | str | None) -> int:
    """Images per chunk: ``batch_size``, or the suite's when None or ``"auto"`` (which
    :func:`auto_chunk_size` may raise on CUDA)."""
    size = suite.batch_size if batch_size is None or batch_size == AUTO else batch_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UsageError(f"batch_size must be an integer >= 1 or 'auto', got {batch_size!r}")
    return size


def per_image_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Peak CUDA memory (bytes) per image of one forward of ``x`` [n, C, H, W] (on the
    model's CUDA device) with the gradient of the logits' sum with respect to ``x``:
    what a white-box attack step holds, the most any attack of a chunk holds per image
    (a model without input gradients: the forward alone)."""
    device = x.device
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    probe = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        output = model(probe)
        if isinstance(output, torch.Tensor) and output.requires_grad:
            torch.autograd.grad(output.float().sum(), probe)
    del output, probe
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return max(1, (peak - base) // max(1, x.shape[0]))


def auto_chunk_size(model: nn.Module, is_model_fn: bool, source: ImageSource,
                    device: torch.device, default: int) -> int:
    """``batch_size="auto"``'s chunk: on CUDA :func:`~llrnet.core.memory.batch_for_memory`
    of the free memory and one measured forward of 2 images (:func:`per_image_bytes`),
    at most :data:`AUTO_CAP` and the image count; ``default`` (the suite's) on other
    devices or for a numpy model_fn."""
    if device.type != "cuda" or is_model_fn:
        logger.info("batch size auto: %d (the suite's; sized from memory on CUDA only)",
                    default)
        return default
    x, _ = source.get(source.order[:2])
    per_image = per_image_bytes(model, x.to(device))
    free, _ = torch.cuda.mem_get_info(device)
    size = batch_for_memory(free, per_image, cap=min(AUTO_CAP, max(1, source.count)))
    logger.info("batch size auto: %d (%.1f GiB free, %.1f MiB per image measured)",
                size, free / 2**30, per_image / 2**20)
    return size


def prepare_model(model_or_model_fn: Any, device: torch.device) -> tuple[nn.Module, bool]:
    """The module that is scored (a module's challenge view, on ``device``, or a numpy
    model_fn wrapped) and whether it is a model_fn."""
    if isinstance(model_or_model_fn, nn.Module):
        view = challenge_view(check_materialized(model_or_model_fn))
        if view is not model_or_model_fn:
            # A sigmoid bird head's raw logits are not the challenge contract; its view is.
            logger.info("scoring %s through its challenge view", type(model_or_model_fn).__name__)
        return view.to(device), False
    if callable(model_or_model_fn):
        return ModelFnModule(model_or_model_fn), True
    raise UsageError(
        "model must be a torch.nn.Module or a numpy model_fn (NHWC float32 images -> "
        f"(N, 2) float32 logits), got {type(model_or_model_fn).__name__}"
    )


def run_precision(precision: str, device: torch.device, is_model_fn: bool) -> Precision:
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


def check_gradients(suite: Suite, is_model_fn: bool) -> None:
    """Refuse attacks that need gradients on a numpy model_fn, naming them."""
    white_box = [entry.name for entry in suite.entries if entry.needs_gradients]
    if is_model_fn and white_box:
        raise UsageError(
            f"attack(s) {', '.join(white_box)} need gradients, which a numpy model_fn "
            "does not have; pass an nn.Module or choose other attacks"
        )


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` without autograd."""
    with torch.no_grad():
        return model(x)


def validate_first_batch(model: nn.Module, source: ImageSource, size: int,
                         device: torch.device) -> tuple[torch.Tensor, list[str]]:
    """Forward the first batch twice: its logits [n, K] and the sanity warnings.

    Raises:
        InputError: bad images or labels, or outputs that are not [n, K] finite logits.
    """
    x, y = source.get(source.order[:size])
    check_images(x)
    if int(y.min()) < 0:
        raise InputError("labels must be non-negative class indices")
    x = x.to(device)
    limit = BatchLimit(len(x), "the first batch's check", device)
    try:  # a ModelFnModule also checks the model_fn contract
        first = torch.cat(map_batches(lambda a, b: forward(model, x[a:b]), len(x), limit))
    except (RuntimeError, TypeError, ValueError) as error:
        if isinstance(error, InputError) or is_out_of_memory(error):
            raise
        reason = first_line(error)
        raise InputError(f"the model failed on the first batch (images {list(x.shape)}): "
                         f"{reason}; do the model and the data match?") from error
    check_logits(first, len(x), num_classes=int(y.max()) + 1)
    second = torch.cat(map_batches(lambda a, b: forward(model, x[a:b]), len(x), limit))
    return first, checks.check_outputs(first, second)


def model_fingerprint(model: nn.Module, is_model_fn: bool, first_logits: torch.Tensor) -> str:
    """sha256 of the class name and the weights' tensor hash; for a model_fn, of its
    first-batch logits rounded to 3 decimals."""
    if is_model_fn:
        rounded = np.round(first_logits.detach().cpu().double().numpy(), 3)
        return hashlib.sha256(rounded.tobytes()).hexdigest()
    tensors = tensors_sha256(model.state_dict())
    return hashlib.sha256(f"{type(model).__name__}|{tensors}".encode()).hexdigest()


BOUND_ATTACKS = ("pgd", "apgd-ce")
"""The white-box attacks a bound can use (``EvalOptions.bound_attack``)."""


def check_options(options: EvalOptions) -> None:
    """Raise :class:`UsageError` for a bad budget check, white-box bounds or compile
    option."""
    if options.check_budget is not None:
        check_count(options.check_budget, "check_budget")
    check_count(options.check_budget_images, "check_budget_images")
    if options.white_box_bounds not in (None, True, False):
        raise UsageError("white_box_bounds must be None (the suite's default), True or False, "
                         f"got {options.white_box_bounds!r}")
    if not isinstance(options.compile, bool):
        raise UsageError(f"compile must be True or False, got {options.compile!r}")
    if options.bound_attack not in BOUND_ATTACKS:
        raise UsageError(f"bound_attack must be one of {', '.join(BOUND_ATTACKS)}, "
                         f"got {options.bound_attack!r}")


def bounds_on(suite: Suite, options: EvalOptions) -> bool:
    """Whether white-box bounds run: the option, or the suite's default when it is None."""
    return bool(suite.white_box_bounds if options.white_box_bounds is None
                else options.white_box_bounds)


def suite_bounds(suite: Suite, options: EvalOptions) -> dict[str, Any]:
    """Entry name -> its attack's white-box bound, for the entries that have one."""
    apgd = options.bound_attack == "apgd-ce"
    bounds = {entry.name: white_box_bound(entry.attack, apgd=apgd) for entry in suite.entries}
    return {name: bound for name, bound in bounds.items() if bound is not None}


def gradient_note(model: nn.Module, is_model_fn: bool, source: ImageSource,
                  device: torch.device) -> str | None:
    """Why white-box attacks cannot run on the model, or None if its logits have a
    gradient with respect to the input (probed on the first image)."""
    if is_model_fn:
        return "the model is a numpy model_fn, which has no gradients"
    x, _ = source.get(source.order[:1])
    x = x.to(device).requires_grad_(True)
    with torch.enable_grad():
        output = model(x)
    if not (isinstance(output, torch.Tensor) and output.requires_grad):
        return "the model's logits have no gradient with respect to its input"
    return None


def plan_bounds(suite: Suite, options: EvalOptions, model: nn.Module, is_model_fn: bool,
                source: ImageSource, device: torch.device
                ) -> tuple[dict[str, Any], dict[str, str]]:
    """(entry name -> bound attack to run, entry name -> why its bound is skipped); both
    empty when bounds are off."""
    bounds = suite_bounds(suite, options) if bounds_on(suite, options) else {}
    note = gradient_note(model, is_model_fn, source, device) if bounds else None
    if note is None:
        return bounds, {}
    return {}, {name: note for name in bounds}


def resume_manifest(full: Suite, *, seed: int, size: int, source: ImageSource, shuffled: bool,
                    model: str, options: EvalOptions, precision: Precision,
                    bounds: bool) -> dict[str, Any]:
    """What must match for a rerun to resume (``state/manifest.json``)."""
    manifest: dict[str, Any] = {
        # The whole suite, not the selection: runs of different attack subsets
        # can share an output folder (each attack's chunks are its own).
        "suite": full.fingerprint(),
        "seed": seed,
        "batch_size": size,
        "images": source.count,
        "shuffle": shuffled,
        "data": source.fingerprint(size),
        "model": model,
        "save_adversarial": bool(options.save_adversarial),
    }
    if source.skipped:  # absent otherwise, so earlier runs' manifests still match
        manifest["skipped"] = sorted(source.skipped)
    if precision != "fp32":  # absent means fp32, as in states of older versions
        manifest["precision"] = precision
        manifest["bf16_search"] = [e.name for e in full.entries if searches_in_bf16(e.attack)]
    # Absent when off (or when no attack has a bound), as in states of older versions.
    if options.check_budget is not None:
        manifest["check_budget"] = {"factor": options.check_budget,
                                    "images": options.check_budget_images}
    described = {name: fingerprint_attack(bound)
                 for name, bound in (suite_bounds(full, options) if bounds else {}).items()}
    if described:
        manifest["white_box_bounds"] = described
    return manifest


def compile_run(model: nn.Module, copies: SearchCopies, is_model_fn: bool,
                example: torch.Tensor, gradients: bool) -> bool:
    """``torch.compile`` the judging ``model`` and its search copies in place, each warmed
    up on ``example`` (the first batch, on the device; with its input gradient where an
    attack takes one: ``gradients``), so no compile time lands in a chunk's timing.
    True if all are compiled; False (eager) for a numpy model_fn or where compiling
    cannot run (one warning)."""
    if is_model_fn:
        logger.info("compile: a numpy model_fn runs as it is")
        return False
    done = compile_model(model, example, gradients=gradients and copies.bf16 is None,
                         what="the model")
    for copy, what in ((copies.bf16, "the bf16 search copy"),
                       (copies.fp32, "the fp32 channels_last search copy")):
        if copy is not None:
            done = compile_model(copy, example, gradients=gradients, what=what) and done
    return done


@contextmanager
def planned(model_or_model_fn: Any, suite: str | Suite | Sequence[Any], dataset: Any,
            options: EvalOptions) -> Iterator[EvalPlan]:
    """Resolve and check everything, then yield the plan with the model in eval mode
    (the caller's model comes back as given on exit, also on error:
    :func:`llrnet.core.modes.kept_as_given`)."""
    with kept_as_given(model_or_model_fn):
        yield from _planned(model_or_model_fn, suite, dataset, options)


def _planned(model_or_model_fn: Any, suite: str | Suite | Sequence[Any], dataset: Any,
             options: EvalOptions) -> Iterator[EvalPlan]:
    seed = check_seed(options.seed)
    check_options(options)
    device = start_device(options.device)
    full = resolve_suite(suite)
    selected = full.select(options.attacks)
    size = chunk_size(selected, options.batch_size)
    shuffled = bool(selected.shuffle if options.shuffle is None else options.shuffle)
    source = ImageSource(dataset, options.max_images, shuffle_seed=seed if shuffled else None,
                         skip_unreadable=options.skip_unreadable)
    model, is_model_fn = prepare_model(model_or_model_fn, device)
    precision = run_precision(options.precision, device, is_model_fn)
    check_gradients(selected, is_model_fn)
    was_compiled = is_compiled(model)
    with kept_as_given(model):  # the view (a wrapper) too
        try:
            model.eval()
            if options.batch_size == AUTO:
                size = auto_chunk_size(model, is_model_fn, source, device, size)
            first_logits, found = validate_first_batch(model, source, size, device)
            bounds, notes = plan_bounds(selected, options, model, is_model_fn, source, device)
            searches = [e.attack for e in selected.entries] + list(bounds.values())
            copies = SearchCopies.build(model, precision, fp32_copy=any(
                not searches_in_bf16(attack) for attack in searches))
            manifest = resume_manifest(
                full, seed=seed, size=size, source=source, shuffled=shuffled,
                model=model_fingerprint(model, is_model_fn, first_logits), options=options,
                precision=precision, bounds=bounds_on(selected, options))
            compiled = options.compile and compile_run(
                model, copies, is_model_fn, source.get(source.order[:size])[0].to(device),
                gradients=bool(bounds) or any(e.needs_gradients for e in selected.entries))
            yield EvalPlan(suite=selected, source=source, model=model, is_model_fn=is_model_fn,
                           copies=copies, device=device, seed=seed, batch_size=size,
                           precision=precision, manifest=manifest, options=options,
                           warnings=tuple(found), bounds=bounds, bound_notes=notes,
                           compiled=compiled)
        finally:
            if not was_compiled:
                uncompile(model)  # the caller's module is as it was
