"""``--compile``: a model's forward through ``torch.compile``, warmed up once, eager where
compiling cannot run. More: docs/models.md, "llrnet.models.compiled"."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
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
                  gradients: bool = False, what: str = "the model",
                  dynamic: bool | None = None) -> bool:
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
    ``dynamic``: ``torch.compile``'s (None: static, then dynamic where a second
    shape occurs; False: one graph per shape).
    """
    if is_compiled(module):
        return True
    if _UNAVAILABLE:
        logger.debug("%s runs eager: torch.compile failed earlier (%s)", what, _UNAVAILABLE[0])
        return False
    eager = module.forward
    try:
        compiled = torch.compile(eager, dynamic=dynamic)
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


class _PaddedForward:
    """A static-shape compiled forward fed batches padded to a multiple of ``bucket`` rows
    (copies of the first row), so at most ``max_rows / bucket`` shapes compile; the
    padding rows' outputs are dropped. Eager and unpadded once compiling has failed in
    this process (:func:`give_up`)."""

    def __init__(self, forward: CompiledForward, bucket: int) -> None:
        self.forward = forward
        self.bucket = bucket

    def __call__(self, x: Tensor) -> Tensor:
        if _UNAVAILABLE:
            return self.forward.eager(x)
        n = int(x.shape[0])
        rows = -(-n // self.bucket) * self.bucket
        if rows == n:
            return self.forward(x)
        layout = (torch.channels_last if x.dim() == 4
                  and x.is_contiguous(memory_format=torch.channels_last)
                  else torch.contiguous_format)
        padded = torch.empty((rows, *x.shape[1:]), dtype=x.dtype, device=x.device,
                             memory_format=layout)
        padded[:n] = x
        padded[n:] = x[:1]
        return self.forward(padded)[:n]


@contextlib.contextmanager
def compiled_in_buckets(module: nn.Module, max_rows: int, *, bucket: int = 16,
                        what: str = "the model") -> Iterator[bool]:
    """Within the block, ``module`` forwards through a static-shape ``torch.compile`` of its
    forward, each batch (at most ``max_rows`` rows, in one layout) padded to a multiple
    of ``bucket`` rows: at most ``max_rows / bucket`` graphs compile, each on its first
    call. For attacks that query a model in eval mode many times at varying batch
    sizes (Boundary's walk); rows must be independent (batch norms in eval mode).
    Hooks and wrappers around ``module`` see the unpadded batch. On exit the module's
    own forward is back (a :func:`compile_model` forward included). Yields whether it
    compiled (False where ``torch.compile`` cannot run: then eager, one warning).
    """
    before = module.__dict__.pop("forward", None)
    try:
        limit = max(int(torch._dynamo.config.recompile_limit), -(-max_rows // bucket) + 2)
        with torch._dynamo.config.patch(recompile_limit=limit):
            done = compile_model(module, what=what, dynamic=False)
            if done:
                compiled = module.__dict__["forward"]
                assert isinstance(compiled, CompiledForward)
                module.__dict__["forward"] = _PaddedForward(compiled, bucket)
            yield done
    finally:
        module.__dict__.pop("forward", None)
        if before is not None:
            module.__dict__["forward"] = before
