"""Batch-norm statistics capture and replay (the LLR step's batch-norm handling).
More: docs/training.md, "llrnet.train.bn_replay"."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from llrnet.core.errors import UsageError

__all__ = ["BatchNormReplay", "batch_norm_layers", "frozen_batch_norm"]


def batch_norm_layers(model: nn.Module) -> list[_BatchNorm]:
    """All batch-norm layers of ``model`` (DDP wrappers are looked through)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def _uses_batch_stats(bn: _BatchNorm) -> bool:
    # Exactly nn.BatchNorm's rule: batch statistics in training mode, or always
    # when the layer keeps no running averages.
    return bn.training or bn.running_mean is None or bn.running_var is None


def _reduce_dims(x: Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _shape(stat: Tensor, x: Tensor) -> Tensor:
    return stat.view(1, -1, *([1] * (x.dim() - 2)))


def _normalize(bn: _BatchNorm, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """``(x - mean) / sqrt(var + eps) * weight + bias``, differentiable in mean and var."""
    out = (x - _shape(mean, x)) * _shape(torch.rsqrt(var + bn.eps), x)
    if bn.weight is not None:
        out = out * _shape(bn.weight, x)
    if bn.bias is not None:
        out = out + _shape(bn.bias, x)
    return out


class BatchNormReplay:
    """Record each batch-norm layer's statistics in one pass, normalize later passes with them.

    Args:
        model: any module (possibly DDP-wrapped); its batch-norm layers are
            found once, at construction.

    Recorded statistics are the ones the layer actually normalized with: the
    batch mean and **biased** variance over (N, H, W) in training mode, the
    running averages in eval mode (so replay is then the ordinary eval pass).
    They stay attached to the clean pass's graph; :meth:`replay` with
    ``detach=True`` cuts them.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = batch_norm_layers(model)
        self._stats: dict[int, tuple[Tensor, Tensor]] = {}
        self._active = False
        self._has_record = False

    @property
    def recorded(self) -> bool:
        """Whether statistics of a clean pass are available."""
        return self._has_record and all(id(bn) in self._stats for bn in self.layers)

    def statistics(self) -> list[tuple[Tensor, Tensor]]:
        """The recorded ``(mean [C], biased var [C])`` per layer, in ``model.modules()`` order."""
        return [self._stats[id(bn)] for bn in self.layers if id(bn) in self._stats]

    @contextmanager
    def _patched(self, make_forward: Any) -> Iterator[None]:
        if self._active:
            raise RuntimeError("BatchNormReplay contexts cannot be nested")
        self._active = True
        try:
            for bn in self.layers:
                bn.forward = make_forward(bn)  # type: ignore[method-assign]
            yield
        finally:
            for bn in self.layers:
                bn.__dict__.pop("forward", None)
            self._active = False

    @contextmanager
    def record(self, *, update_running_stats: bool = True) -> Iterator[None]:
        """Run the clean pass: ordinary batch norm, statistics recorded.

        Args:
            update_running_stats: whether this pass updates the running averages
                (exactly as an ordinary training-mode pass would, PyTorch's rule:
                unbiased variance, ``momentum``). LLR's shared nominal/clean pass
                updates them; a separate clean pass (``llr_regularizer`` called
                next to your own nominal pass) does not.
        """
        self._stats = {}
        self._has_record = False

        def make_forward(bn: _BatchNorm) -> Any:
            original = type(bn).forward

            def forward(x: Tensor) -> Tensor:
                if not _uses_batch_stats(bn):
                    assert bn.running_mean is not None and bn.running_var is not None
                    self._stats[id(bn)] = (bn.running_mean, bn.running_var)
                    return original(bn, x)
                var, mean = torch.var_mean(x, dim=_reduce_dims(x), correction=0)
                self._stats[id(bn)] = (mean, var)
                if update_running_stats:
                    return original(bn, x)
                return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)

            return forward

        with self._patched(make_forward):
            yield
        self._has_record = True

    @contextmanager
    def replay(self, *, detach: bool) -> Iterator[None]:
        """Normalize every pass inside with the recorded clean statistics.

        Running averages are never touched. ``detach=True`` treats the statistics
        as constants (LLR's inner maximization); ``detach=False`` lets gradients
        flow into them and through them into the clean pass (LLR's regularizer).
        A layer used with a different batch size than recorded is fine: the
        statistics are per channel.

        Raises:
            RuntimeError: if no clean pass was recorded (call :meth:`record` first).
        """
        if not self.recorded:
            raise RuntimeError("no batch-norm statistics recorded: run a pass under record() first")

        def make_forward(bn: _BatchNorm) -> Any:
            mean, var = self._stats[id(bn)]
            if detach:
                mean, var = mean.detach(), var.detach()

            def forward(x: Tensor) -> Tensor:
                return _normalize(bn, x, mean, var)

            return forward

        with self._patched(make_forward):
            yield


@contextmanager
def frozen_batch_norm(model: nn.Module, *, mode: str = "batch") -> Iterator[None]:
    """Passes inside leave every batch-norm running average untouched.

    Args:
        model: any module (possibly DDP-wrapped).
        mode: ``"batch"``: training-mode layers normalize with each pass's own
            batch statistics (as TF1 adversarial training did: the attack's
            forward passes ran without the moving-average update ops);
            ``"eval"``: every layer normalizes with its running averages.
            Layers in eval mode always use their running averages.
    """
    if mode not in ("batch", "eval"):
        raise UsageError(f"batch-norm mode must be 'batch' or 'eval', got {mode!r}")
    layers = batch_norm_layers(model)

    def make_forward(bn: _BatchNorm) -> Any:
        original = type(bn).forward

        def forward(x: Tensor) -> Tensor:
            if not _uses_batch_stats(bn):
                return original(bn, x)
            if mode == "eval" and bn.running_mean is not None and bn.running_var is not None:
                return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                    False, 0.0, bn.eps)
            return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)

        return forward

    try:
        for bn in layers:
            bn.forward = make_forward(bn)  # type: ignore[method-assign]
        yield
    finally:
        for bn in layers:
            bn.__dict__.pop("forward", None)
