"""Search precision: a bf16, channels_last copy of a model, and when to use one.
More: docs/models.md, "llrnet.models.precision"."""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from llrnet.core.errors import UsageError
from llrnet.models import layers
from llrnet.models.resnet_v2 import OffsetBatchNorm2d

logger = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16", "auto")
"""What ``--precision`` accepts: ``auto`` resolves to ``bf16`` or ``fp32``."""

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _torch_cpu_probe(name: str) -> bool:
    """``torch.cpu.<name>()``; False where this torch has no such probe or it fails."""
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def cpu_has_amx_bf16() -> bool:
    """True if this CPU has AMX tiles with bf16 (``amx_bf16``), as torch reports it."""
    return _torch_cpu_probe("_is_amx_tile_supported")


def cpu_has_avx512_bf16() -> bool:
    """True if this CPU has the AVX512-BF16 dot-product instructions, as torch reports it."""
    return _torch_cpu_probe("_is_avx512_bf16_supported")


def cpu_bf16_units() -> tuple[str, ...]:
    """The bf16 product units of this CPU: ``("AMX-BF16", "AVX512-BF16")``, a part, or ()."""
    units = (("AMX-BF16", cpu_has_amx_bf16()), ("AVX512-BF16", cpu_has_avx512_bf16()))
    return tuple(name for name, present in units if present)


def cuda_has_bf16(device: torch.device) -> bool:
    """True if the CUDA device has native bf16 (compute capability 8.0 or newer)."""
    if not torch.cuda.is_available():
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, _ = torch.cuda.get_device_capability(index)
    return major >= 8


def has_bf16_hardware(device: torch.device) -> bool:
    """True if ``device`` computes bf16 products natively, so a bf16 copy is faster.

    On a CPU: AMX-BF16 or AVX512-BF16 (both measured faster in bf16,
    docs/benchmarks.md "Search precision"; AVX2 or plain AVX-512 without them
    measured about 5x slower). On CUDA: compute capability 8.0 or newer.
    """
    if device.type == "cpu":
        return bool(cpu_bf16_units())
    if device.type == "cuda":
        return cuda_has_bf16(device)
    return False


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`.

    Raises:
        UsageError: any other value.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> Precision:
    """``"fp32"`` or ``"bf16"`` for the requested ``precision`` on ``device``.

    ``auto`` picks ``bf16`` where :func:`has_bf16_hardware` and ``fp32``
    elsewhere, and logs what it chose and why.

    Raises:
        UsageError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    check_precision(precision)
    if precision != "auto":
        return "bf16" if precision == "bf16" else "fp32"
    target = torch.device(device)
    chosen: Precision = "bf16" if has_bf16_hardware(target) else "fp32"
    if target.type == "cpu":
        found = cpu_bf16_units()
        reason = f"{' and '.join(found)} present" if found else "neither AMX-BF16 nor AVX512-BF16"
    else:
        reason = f"{target.type} bf16 {'present' if chosen == 'bf16' else 'absent'}"
    logger.info("precision auto: %s on %s (%s)", chosen, target, reason)
    return chosen


class FastCopy(nn.Module):
    """A model computing in ``dtype`` (channels_last for images) behind an fp32 interface.

    Inputs are cast to ``dtype`` (4-d ones made channels_last); outputs come back
    as float32. Gradients flow through the casts, so white-box attacks work too.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype, channels_last: bool = True) -> None:
        super().__init__()
        inner = copy.deepcopy(model)
        if channels_last:
            inner = inner.to(memory_format=torch.channels_last)
        self.inner = inner.to(dtype=dtype)
        self.dtype = dtype
        self.channels_last = channels_last
        self.train(model.training)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` float [N, C, H, W] (any float dtype) -> the inner model's output, float32."""
        x = x.to(self.dtype)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.inner(x)
        return out.float() if isinstance(out, Tensor) else out


def fast_copy(model: nn.Module, precision: str = "bf16", *, channels_last: bool = True
              ) -> nn.Module:
    """A copy of ``model`` that computes in ``precision`` (``fp32`` or ``bf16``).

    ``bf16`` converts weights and buffers to bfloat16 and (by default) 4-d
    weights and inputs to channels_last; ``fp32`` with ``channels_last`` gives
    the fp32 channels_last copy. The copy takes and returns float32 tensors,
    keeps ``model``'s train/eval mode, and leaves ``model`` untouched. Resolve
    ``auto`` first with :func:`resolve_precision`.

    Raises:
        UsageError: ``precision`` is not ``fp32`` or ``bf16``.
    """
    if precision not in _DTYPES:
        raise UsageError(f"fast_copy needs precision fp32 or bf16, got {precision!r} "
                         "(resolve 'auto' with resolve_precision first)")
    return FastCopy(model, _DTYPES[precision], channels_last=channels_last)


_FOLDABLE_NORMS = (nn.BatchNorm2d, OffsetBatchNorm2d)
"""Norm types whose eval-mode forward is the affine map :func:`_folded` folds."""


def _folded(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of a convolution computing ``norm(conv(x))`` (``norm`` in eval
    mode), in float64 then rounded to the weights' dtype: ``w * s`` and
    ``(b - mean) * s + beta`` per output channel, ``s = gamma / sqrt(var + eps)``
    (gamma 1 and beta 0 where absent)."""
    assert norm.running_mean is not None and norm.running_var is not None
    with torch.no_grad():
        scale = 1.0 / torch.sqrt(norm.running_var.double() + norm.eps)
        if norm.weight is not None:
            scale = scale * norm.weight.double()
        shift = -norm.running_mean.double() * scale
        if norm.bias is not None:
            shift = shift + norm.bias.double()
        if conv.bias is not None:
            shift = shift + conv.bias.double() * scale
        weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
        return weight.to(conv.weight.dtype), shift.to(conv.weight.dtype)


def _fold_pairs(model: nn.Module) -> Iterator[tuple[nn.Module, str, str]]:
    """(block, conv name, norm name) for each fold a block's own class declares in
    ``batch_norm_folds`` (a subclass, whose forward may differ, does not inherit it)
    where the norm is a plain eval-mode batch norm with running statistics."""
    for block in list(model.modules()):
        for conv_name, norm_name in vars(type(block)).get("batch_norm_folds", ()):
            conv, norm = getattr(block, conv_name), getattr(block, norm_name)
            if (isinstance(conv, nn.Conv2d) and type(norm) in _FOLDABLE_NORMS
                    and norm.running_mean is not None and norm.running_var is not None):
                yield block, conv_name, norm_name


def fold_batch_norms(model: nn.Module) -> int:
    """Fold, in place and for good, each batch norm that a block declares reads only a
    convolution's output (its class's ``batch_norm_folds``: ``(conv, norm)`` attribute
    names) into that convolution; the norm becomes ``nn.Identity``. Eval-mode models
    only (the running statistics); the logits stay equal up to float rounding.
    :func:`decision_form` does the same for the length of a block and undoes it.

    Returns the number of norms folded.

    Raises:
        UsageError: ``model`` is in training mode.
    """
    if model.training:
        raise UsageError("fold_batch_norms needs an eval-mode model (it uses running statistics)")
    folded = 0
    for block, conv_name, norm_name in list(_fold_pairs(model)):
        conv = getattr(block, conv_name)
        weight, bias = _folded(conv, getattr(block, norm_name))
        conv.weight = nn.Parameter(weight, requires_grad=False)
        conv.bias = nn.Parameter(bias, requires_grad=False)
        setattr(block, norm_name, nn.Identity())
        folded += 1
    return folded


def decision_form_applies(model: nn.Module) -> bool:
    """True if :func:`decision_form` changes ``model``: every module in eval mode,
    every parameter and buffer float32 on a CPU, and at least one parameter."""
    tensors = [*model.parameters(), *model.buffers()]
    floats = [t for t in tensors if t.is_floating_point()]
    return (bool(floats) and not any(m.training for m in model.modules())
            and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in floats))


@contextlib.contextmanager
def decision_form(model: nn.Module) -> Iterator[bool]:
    """Within the block, ``model`` (eval mode, float32, on a CPU) computes its logits
    faster, equal to its own up to float rounding, for attacks that read only its
    decisions (Boundary): each declared batch norm folded into its convolution (as
    :func:`fold_batch_norms`), 4-d parameters and buffers channels_last (feed it
    channels_last images), softplus in its inference form
    (:func:`llrnet.models.layers.softplus_inference`; under no_grad). On exit the
    model is restored exactly: the same parameter and module objects, the same
    values and layout. The model itself runs every forward, so its hooks and
    counters see every query. Yields whether it changed the model (False where
    :func:`decision_form_applies` is False: the model is left as it is).

    On one thread with the digits WRN-10-1 it forwards 1.1-1.2x the images per
    CPU second of the model as given at the same call size
    (``benchmarks/decision_form.py``; docs/benchmarks.md, "Black-box attack speed").
    """
    if not decision_form_applies(model):
        yield False
        return
    undo: list[tuple[object, str, object]] = []  # (object, attribute, old value)
    try:
        for block, conv_name, norm_name in list(_fold_pairs(model)):
            conv, norm = getattr(block, conv_name), getattr(block, norm_name)
            weight, bias = _folded(conv, norm)
            undo += [(conv, "weight", conv.weight), (conv, "bias", conv.bias),
                     (block, norm_name, norm)]
            conv.weight = nn.Parameter(weight, requires_grad=False)
            conv.bias = nn.Parameter(bias, requires_grad=False)
            setattr(block, norm_name, nn.Identity())
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() == 4:
                undo.append((tensor, "data", tensor.data))
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
        for module in model.modules():
            for name, value in list(vars(module).items()):
                if value is layers.softplus:
                    undo.append((module, name, value))
                    setattr(module, name, layers.softplus_inference)
        yield True
    finally:
        for owner, name, value in reversed(undo):
            setattr(owner, name, value)


@dataclass(frozen=True)
class SearchCopies:
    """The models an evaluation's attacks search with, beside the fp32 ``model`` that judges.

    In a bf16 run ``bf16`` is ``model``'s bf16 channels_last copy and ``fp32``
    (built when some attack searches in fp32) its fp32 channels_last copy: the
    same precision, a faster layout. In an fp32 run both are None and every
    attack searches with ``model``.
    """

    model: nn.Module
    bf16: nn.Module | None = None
    fp32: nn.Module | None = None

    @classmethod
    def build(cls, model: nn.Module, precision: Precision, *, fp32_copy: bool) -> SearchCopies:
        """The copies a ``precision`` run needs (eval mode); ``fp32_copy``: some attack
        of the run searches in fp32."""
        if precision != "bf16":
            return cls(model)
        fp32 = fast_copy(model, "fp32").eval() if fp32_copy else None
        return cls(model, fast_copy(model, "bf16").eval(), fp32)

    def search_precision(self, bf16_allowed: bool) -> Precision:
        """``bf16`` if an attack whose policy is ``bf16_allowed`` searches in bf16 here."""
        return "bf16" if self.bf16 is not None and bf16_allowed else "fp32"

    def searcher(self, bf16_allowed: bool) -> nn.Module:
        """The model an attack whose policy is ``bf16_allowed`` searches with: the bf16
        copy if allowed; in a bf16 run the fp32 channels_last copy otherwise; the model
        itself in an fp32 run."""
        if self.bf16 is not None and bf16_allowed:
            return self.bf16
        return self.fp32 if self.fp32 is not None else self.model

    def disagreements(self, x: Tensor, logits: Tensor) -> int | None:
        """Images of ``x`` [N, C, H, W] on which the bf16 copy's decision differs from
        ``logits`` [N, K] (the fp32 model's); None in an fp32 run."""
        if self.bf16 is None:
            return None
        with torch.no_grad():
            fast = self.bf16(x)
        return int((fast.argmax(1) != logits.argmax(1)).sum())


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Within the block, CUDA convolutions and matrix products use full fp32 (no TF32).

    torch lets cuDNN use TF32 by default; a judgement of fp32 numbers must not.
    The previous settings are restored on exit. On a CPU nothing changes.
    """
    cudnn = torch.backends.cudnn.allow_tf32
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn
        torch.backends.cuda.matmul.allow_tf32 = matmul
