"""``--compile``: a model's forward through ``torch.compile``, warmed up once, eager where
compiling cannot run. More: docs/models.md, "llrnet.models.compiled"."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from llrnet.core.errors import first_line

logger = logging.getLogger(__name__)

_UNAVAILABLE: list[str] = []
"""Why ``torch.compile`` failed in this process (at most one reason): every later
:func:`compile_model` runs eager without a second warning."""


class CompiledForward:
    """The instance ``forward`` of a compiled module: ``torch.compile`` of its class's
    forward, and the eager forward where a compiled call fails but the eager one works
    (then one warning, and the module is eager from then on)."""

    def __init__(self, module: nn.Module, compiled: Callable[..., Any],
                 eager: Callable[..., Any], what: str) -> None:
        self.module = module
        self.compiled = compiled
        self.eager = eager
        self.what = what

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.compiled(*args, **kwargs)
        except Exception as error:
            result = self.eager(*args, **kwargs)  # a model's own error is raised from here
            give_up(self.module, self.what, error)
            return result


def is_compiled(module: nn.Module) -> bool:
    """True if :func:`compile_model` compiled ``module``'s forward (and it still is)."""
    return isinstance(module.__dict__.get("forward"), CompiledForward)


def uncompile(module: nn.Module) -> None:
    """Make ``module`` eager again (its class's forward); nothing if it is not compiled."""
    if is_compiled(module):
        del module.__dict__["forward"]


def give_up(module: nn.Module, what: str, error: BaseException) -> None:
    """``torch.compile`` cannot run here: ``module`` goes eager, with one warning per
    process naming the reason."""
    uncompile(module)
    if not _UNAVAILABLE:
        _UNAVAILABLE.append(f"{type(error).__name__}: {first_line(error)}")
        warnings.warn(f"torch.compile cannot run here ({_UNAVAILABLE[0]}); {what} runs "
                      "eager", RuntimeWarning, stacklevel=2)


def compile_model(module: nn.Module, example: Tensor | None = None, *,
                  gradients: bool = False, what: str = "the model") -> bool:
    """Compile ``module``'s forward in place with ``torch.compile``; True if it is compiled.

    The module keeps its class, parameters, ``state_dict`` keys and hooks (its
    instance ``forward`` is replaced; :func:`uncompile` restores it), so weight
    hashes and checkpoints are those of the eager module. With ``example`` (a
    batch it will see, e.g. float [N, C, H, W] images in [0, 1]), the module is
    called once on it without autograd and, with ``gradients``, once more with
    the input's gradient taken: compiling happens here, its time goes to the log
    (INFO), and later calls run the compiled code (a new input shape or
    train/eval mode still recompiles once, where it first occurs). A failure of
    ``torch.compile`` or of the compiled code (no C++ compiler, an unsupported
    platform) leaves the module eager with one ``RuntimeWarning`` per process.
    """
    if is_compiled(module):
        return True
    if _UNAVAILABLE:
        logger.debug("%s runs eager: torch.compile failed earlier (%s)", what, _UNAVAILABLE[0])
        return False
    eager = module.forward
    try:
        compiled = torch.compile(eager)
    except Exception as error:
        give_up(module, what, error)
        return False
    module.__dict__["forward"] = CompiledForward(module, compiled, eager, what)
    if example is not None:
        warm_up(module, example, gradients=gradients, what=what)
    return is_compiled(module)


def warm_up(module: nn.Module, example: Tensor, *, gradients: bool, what: str) -> None:
    """Call ``module`` on ``example`` (and take the input gradient when ``gradients``) so
    that ``torch.compile`` compiles now; log the seconds it took. A failure there makes
    the module eager (:func:`give_up`)."""
    start = time.perf_counter()
    try:
        with torch.no_grad():
            module(example)
        if gradients and is_compiled(module):
            x = example.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                output = module(x)
                torch.autograd.grad(output.float().sum(), x)
    except Exception as error:
        give_up(module, what, error)
        return
    if is_compiled(module):
        logger.info("torch.compile: %s compiled in %.1f s (its first calls, on a batch of "
                    "%d; not in any timing)", what, time.perf_counter() - start, len(example))
