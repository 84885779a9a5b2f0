"""The attack base class: a final ``__call__`` around a subclass's search.
More: docs/attacks.md, "llrnet.attacks.base"."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final, get_args

import torch
from torch import Tensor, nn

from llrnet.attacks.parts import ImageRng
from llrnet.core.checks import check_count
from llrnet.core.contracts import check_images, check_logits
from llrnet.core.errors import InputError, UsageError, first_line
from llrnet.core.memory import BatchLimit, is_out_of_memory
from llrnet.core.modes import kept_as_given

if TYPE_CHECKING:
    from llrnet.attacks.balls import Ball

Pool = tuple[Tensor, Tensor]

_A = TypeVar("_A", bound="Attack")

AttackKind = Literal["clean", "spatial", "corruption", "black_box", "white_box"]
"""What an attack does, which decides how an evaluation runs and checks it:
``clean`` (the images as they are), ``spatial`` (rotations and translations),
``corruption`` (common corruptions), ``black_box`` (a search that reads only
the model's outputs) or ``white_box`` (differentiates through the model: it
needs gradients, so a numpy ``model_fn`` cannot run it)."""

ATTACK_KINDS: tuple[AttackKind, ...] = get_args(AttackKind)
"""Every :data:`AttackKind`, in that order."""

UNDECLARED_KIND: AttackKind = "white_box"
"""The kind of an attack that declares none: the safe assumption that it may need
gradients."""


class CountingModel(nn.Module):
    """Wraps a model: counts forwarded images and checks the logits' shape.

    ``evaluations`` is the total number of images passed through ``forward``.
    ``num_classes`` (set by the attack from its labels) is the least number of
    logits the labels need, so a label the model has no logit for is an
    :class:`InputError`, not an index error deep inside the attack. The
    model's first call failing (images it cannot take: wrong channel count,
    wrong size) is an :class:`InputError` naming the images' shape.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.evaluations = 0
        self.num_classes: int | None = None

    def forward(self, x: Tensor) -> Tensor:
        """Logits [N, K] of images [N, C, H, W], checked; counts N."""
        try:
            output = self.model(x)
        except RuntimeError as error:
            if self.evaluations or is_out_of_memory(error):
                raise
            reason = first_line(error)
            weights = next((p.dtype for p in self.model.parameters() if p.is_floating_point()),
                           x.dtype)
            if weights != x.dtype:
                reason = f"its weights are {weights} but the images {x.dtype}; convert one"
            raise InputError(f"the model cannot take images of shape {list(x.shape)}: "
                             f"{reason}") from error
        # The first call (the clean images) is checked for NaN/inf logits, the rest not
        # (a sync per probe): a model returning NaN makes every gradient NaN.
        logits = check_logits(output, x.shape[0], num_classes=self.num_classes,
                              finite=self.evaluations == 0)
        self.evaluations += int(x.shape[0])
        return logits


def resolve_seeds(seeds: Tensor | int | None, n: int) -> Tensor:
    """Per-image seeds [n] int64 from the contract's ``seeds`` argument.

    None -> 0..n-1; an int s -> s + i; a 1-D integer tensor of length n as is.
    """
    if seeds is None:
        return torch.arange(n, dtype=torch.int64)
    if isinstance(seeds, bool):
        raise InputError("seeds must be an int, a 1-D int64 tensor or None, got a bool")
    if isinstance(seeds, int):
        return torch.arange(n, dtype=torch.int64) + seeds
    if isinstance(seeds, Tensor):
        if seeds.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise InputError(f"seeds must be an integer tensor, got dtype {seeds.dtype}")
        if seeds.dim() != 1 or seeds.shape[0] != n:
            raise InputError(
                f"seeds must have shape [{n}] (one per image), got {list(seeds.shape)}"
            )
        return seeds.detach().to("cpu", torch.int64)
    raise InputError(
        f"seeds must be an int, a 1-D int64 tensor or None, got {type(seeds).__name__}"
    )


def _check_labels(y: Any, n: int, device: torch.device, name: str) -> Tensor:
    if not isinstance(y, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.dtype != torch.int64:
        raise InputError(f"{name} must be int64 class indices, got dtype {y.dtype}")
    if y.dim() != 1 or y.shape[0] != n:
        raise InputError(f"{name} must have shape [{n}], got {list(y.shape)}")
    if y.device != device:
        raise InputError(f"{name} is on {y.device} but the images are on {device}")
    if n and int(y.min()) < 0:
        raise InputError(f"{name} must be non-negative class indices")
    return y


def _model_device(model: nn.Module) -> torch.device | None:
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return None


def _halved_search_batch(attack: Any) -> int | None:
    """The smallest search batch an out-of-memory error left in ``attack`` or its stages
    (a Chain's), or None when none was lowered."""
    sizes = [_halved_search_batch(stage) for stage in getattr(attack, "stages", ())]
    limit = getattr(attack, "_search_limit", None)
    if isinstance(limit, BatchLimit) and limit.halved:
        sizes.append(limit.size)
    found = [size for size in sizes if size is not None]
    return min(found) if found else None


class Attack:
    """Base class of every attack: ``attack(model, x, y, seeds=..., pool=...) -> x_adv``.

    ``x``: float [N, C, H, W] in [0, 1] on the model's device; ``y``: int64 [N].
    Returns ``x_adv`` of the same shape and dtype, in [0, 1] and inside the
    attack's threat model. The result for image i depends only on the model,
    ``x[i]``, ``y[i]``, ``seeds[i]``, the attack's parameters and ``pool``.

    After a call, ``last_stats`` holds at least ``model_evaluations`` (images
    forwarded through the model, total), plus ``images`` and ``seconds``; and
    ``search_batch`` (model inputs per call) once an out-of-memory error has
    halved the attack's search batch (:func:`~llrnet.attacks.parts.search_limit`).

    Subclasses implement ``_run(model, x, y, rng, pool)`` (``model`` is a
    :class:`CountingModel` in eval mode; ``rng`` an :class:`ImageRng`) and, if
    they search in a norm ball, set ``ball`` (a :class:`~llrnet.attacks.balls.Ball`).
    """

    name: str = "attack"
    #: The threat model the base class clips to after ``_run`` (None: unbounded,
    #: e.g. the spatial grid; the result is only clipped to [0, 1]).
    ball: Ball | None = None
    #: True for attacks that need ``pool`` (Boundary).
    needs_pool: bool = False
    #: True if the attack keeps its strength when it searches with a bf16 copy of
    #: the model (a measured policy, docs/evaluation.md): ``evaluate(precision="bf16")``
    #: gives it :func:`llrnet.models.fast_copy` to search with; others get the fp32
    #: model. Set it on an instance to override (it then joins the recorded config).
    bf16_search: bool = False

    @property
    def kind(self) -> AttackKind:
        """What the attack does (:data:`AttackKind`).

        Every llrnet attack sets it as a class attribute (``kind = "spatial"``);
        a subclass that sets none counts as :data:`UNDECLARED_KIND`.
        """
        return UNDECLARED_KIND

    def __init__(self) -> None:
        self.last_stats: dict[str, float] = {}

    @property
    def eps(self) -> float | None:
        """The radius of :attr:`ball` (None for an unbounded attack)."""
        return None if self.ball is None else self.ball.eps

    @final
    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        *,
        seeds: Tensor | int | None = None,
        pool: Pool | None = None,
    ) -> Tensor:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        device = _model_device(model)
        if isinstance(x, Tensor) and device is not None and device != x.device:
            raise InputError(f"x is on {x.device} but the model is on {device}; move one of them")
        x = check_images(x, "x")
        y = _check_labels(y, x.shape[0], x.device, "y")
        seed_tensor = resolve_seeds(seeds, x.shape[0])
        pool = self._check_pool(pool, x)

        counting = model if isinstance(model, CountingModel) else CountingModel(model)
        if y.numel():
            counting.num_classes = max(counting.num_classes or 0, int(y.max()) + 1)
        before = counting.evaluations
        start = time.perf_counter()
        with kept_as_given(model):  # every submodule's mode, as the caller gave it
            model.eval()
            if x.shape[0] == 0:
                x_adv = x.clone()
            else:
                # Keyed by the attack's name: the stages of a Chain draw independent streams.
                rng = ImageRng(seed_tensor, self.name)
                x_adv = self._run(counting, x.detach(), y, rng, pool)
        x_adv = self._enforce(x.detach(), x_adv.detach()).to(x.dtype)
        self.last_stats = {
            "model_evaluations": float(counting.evaluations - before),
            "images": float(x.shape[0]),
            "seconds": time.perf_counter() - start,
        }
        halved = _halved_search_batch(self)
        if halved is not None:
            self.last_stats["search_batch"] = float(halved)
        return x_adv

    def _check_pool(self, pool: Pool | None, x: Tensor) -> Pool | None:
        if pool is None:
            if self.needs_pool:
                raise UsageError(
                    f"{self.name} needs pool=(images, labels) of clean reference images "
                    "(other-class starting points)"
                )
            return None
        if not isinstance(pool, tuple) or len(pool) != 2:
            raise InputError("pool must be a tuple (images [M, C, H, W], labels [M])")
        images = check_images(pool[0], "pool images")
        if images.shape[1:] != x.shape[1:]:
            raise InputError(
                f"pool images must have the shape of x per image, {list(x.shape[1:])}, "
                f"got {list(images.shape[1:])}"
            )
        if images.device != x.device:
            raise InputError(f"pool images are on {images.device} but x is on {x.device}")
        labels = _check_labels(pool[1], images.shape[0], x.device, "pool labels")
        return images, labels

    def _enforce(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """Clip ``x_adv`` to the attack's ball around ``x`` and to [0, 1]."""
        if x_adv.shape != x.shape:
            raise RuntimeError(
                f"{self.name} returned shape {list(x_adv.shape)} for {list(x.shape)}"
            )
        if self.ball is None:
            return x_adv.clamp(0.0, 1.0)
        return self.ball.clip(x, x_adv)

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
    ) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def budget(self) -> dict[str, int]:
        """The attack's budget knobs, e.g. PGD ``{"steps": 20, "restarts": 1}``.

        Keys are the attack's own attribute names (counts of steps, probes,
        candidates, grid points per axis); ``{}`` means the attack has no budget
        to scale (Identity, corruptions, one random transform).
        """
        return {}

    def scaled(self, factor: int) -> Attack:
        """A new attack like this one with its total budget multiplied by about ``factor``.

        Same class, ``name``, threat model (ball, eps) and every other
        parameter; each attack documents how it spends the factor (docs/attacks.md,
        "Budgets and how they scale"). ``scaled(1)`` gives the same results as
        the original for the same seeds; ``self`` is not changed.

        Raises:
            UsageError: ``factor`` is not an int >= 1, or the attack has no
                budget (``budget() == {}``).
        """
        check_count(factor, "factor")
        if not self.budget():
            raise UsageError(f"attack {self.name!r} ({type(self).__name__}) has no budget to "
                             "scale; check budget() first")
        return self._scaled(factor)

    def _scaled(self, factor: int) -> Attack:
        """The budgeted subclass's :meth:`scaled` (``factor`` checked, budget non-empty)."""
        raise UsageError(f"attack {self.name!r} ({type(self).__name__}) does not say how to "
                         "scale its budget")

    def _replace(self: _A, **changes: Any) -> _A:
        """A shallow copy with ``changes`` set and no run-time statistics; ``self`` unchanged."""
        clone = copy.copy(self)
        clone.last_stats = {}
        for key, value in changes.items():
            if not hasattr(self, key):
                raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")
            setattr(clone, key, value)
        return clone


def searches_in_bf16(attack: Any) -> bool:
    """True if ``attack`` may search with a bf16 copy of the model.

    Its ``bf16_search`` policy; a :class:`~llrnet.attacks.Chain` (anything with
    ``stages``) only if every stage may; a callable without the attribute never.
    """
    stages = getattr(attack, "stages", None)
    if stages is not None:
        return all(searches_in_bf16(stage) for stage in stages)
    return bool(getattr(attack, "bf16_search", False))


class Identity(Attack):
    """The clean "attack": returns the input unchanged (no model evaluations)."""

    name = "clean"
    kind = "clean"
    bf16_search = True  # measured: docs/evaluation.md, "Search precision"

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
    ) -> Tensor:
        return x.clone()
