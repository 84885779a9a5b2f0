"""Small attack parts shared by PGD, SPSA, the LLR inner loop and training.
More: docs/attacks.md, "llrnet.attacks.parts"."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from llrnet.core.errors import UsageError
from llrnet.core.memory import BatchLimit, map_batches
from llrnet.core.seeding import derive

Eps = float | Tensor
GeneratorLike = torch.Generator | Sequence[torch.Generator] | None

__all__ = [
    "CPU_DECISION_CHUNK",
    "CPU_FORWARD_CHUNK",
    "AdamState",
    "ImageRng",
    "adam_step",
    "cross_entropy_per_example",
    "draw_uniform",
    "forward_chunk",
    "forward_limited",
    "margin_loss",
    "project_l2",
    "project_linf",
    "random_init_l2",
    "random_init_linf",
    "search_limit",
    "wrong_class_margin",
]


def _per_example(value: Eps, like: Tensor) -> Tensor | float:
    """``value`` broadcastable against ``like`` [N, ...] (a float stays a float)."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return float(value)
        return value.to(like).reshape(-1, *([1] * (like.dim() - 1)))
    return float(value)


def project_linf(delta: Tensor, x: Tensor, eps: Eps) -> Tensor:
    """Project ``delta`` onto the L-inf ball of radius ``eps`` and keep ``x + delta`` in [0, 1].

    Exactly cleverhans' ``project_perturbation``: clip to [-eps, eps], then clip
    ``x + delta`` to [0, 1] and return the difference.
    """
    e = _per_example(eps, delta)
    if isinstance(e, float):
        delta = delta.clamp(-e, e)
    else:
        delta = torch.maximum(torch.minimum(delta, e), -e)
    return (x + delta).clamp(0.0, 1.0) - x


def _l2_norm(t: Tensor) -> Tensor:
    """Per-example L2 norm [N] of a batch [N, ...]."""
    return t.flatten(1).norm(p=2, dim=1)


def project_l2(delta: Tensor, x: Tensor, eps: Eps) -> Tensor:
    """Project ``delta`` onto the L2 ball of radius ``eps`` and keep ``x + delta`` in [0, 1].

    The norm is scaled down first, then ``x + delta`` is clipped to [0, 1];
    clipping only shrinks components, so the norm bound still holds.
    """
    e = eps if isinstance(eps, Tensor) else torch.tensor(float(eps))
    e = e.to(delta).expand(delta.shape[0])
    norm = _l2_norm(delta)
    factor = torch.where(norm > e, e / norm.clamp_min(1e-12), torch.ones_like(norm))
    delta = delta * factor.reshape(-1, *([1] * (delta.dim() - 1)))
    return (x + delta).clamp(0.0, 1.0) - x


def draw_uniform(shape: Sequence[int], generator: GeneratorLike, device: torch.device) -> Tensor:
    """U[0, 1) samples of ``shape`` ([N, ...]) on ``device``.

    ``generator`` may be one ``torch.Generator`` (drawn on the generator's
    device), a sequence of N generators (row i drawn from generator i on the
    CPU: per-example randomness independent of batch-mates and of the device),
    or None (the global generator).
    """
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return torch.rand(tuple(shape), generator=generator, device=gen_device).to(device)
    if len(generator) != shape[0]:
        raise UsageError(f"need one generator per example: {len(generator)} for {shape[0]}")
    rows = [torch.rand(tuple(shape[1:]), generator=g) for g in generator]
    return torch.stack(rows).to(device) if rows else torch.empty(tuple(shape), device=device)


def random_init_linf(x: Tensor, eps: Eps, generator: GeneratorLike = None) -> Tensor:
    """A uniform random perturbation in the L-inf ball (then projected into [0, 1])."""
    u = draw_uniform(x.shape, generator, x.device).to(x.dtype)
    e = _per_example(eps, x)
    return project_linf((2.0 * u - 1.0) * e, x, eps)


def random_init_l2(x: Tensor, eps: Eps, generator: GeneratorLike = None) -> Tensor:
    """A uniform random perturbation in the L2 ball (then projected into [0, 1]).

    Direction from a Gaussian (Box-Muller on uniform draws, so per-example
    generators work), radius ``eps * u ** (1 / d)``.
    """
    n = x.shape[0]
    d = x[0].numel()
    u = draw_uniform((n, 2 * d + 1), generator, x.device).to(x.dtype)
    u1 = u[:, :d].clamp_min(1e-12)
    u2 = u[:, d : 2 * d]
    gauss = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)
    direction = gauss / _l2_norm(gauss).clamp_min(1e-12)[:, None]
    e = eps if isinstance(eps, Tensor) else torch.tensor(float(eps))
    radius = e.to(x).expand(n) * u[:, 2 * d] ** (1.0 / d)
    return project_l2((direction * radius[:, None]).reshape(x.shape), x, eps)


@dataclass
class AdamState:
    """Per-example Adam state for a perturbation: moments ``m``, ``v`` (shape of
    the parameter) and step count ``t`` [N] (float)."""

    m: Tensor
    v: Tensor
    t: Tensor

    @classmethod
    def zeros_like(cls, param: Tensor) -> AdamState:
        """Fresh state (cleverhans' ``init_state``: zeros, t = 0)."""
        zeros = torch.zeros_like(param)
        return cls(zeros, zeros.clone(), torch.zeros(param.shape[0], device=param.device))

    def select(self, index: Tensor) -> AdamState:
        """The state of the examples ``index`` (bool mask or int indices)."""
        return AdamState(self.m[index], self.v[index], self.t[index])


def adam_step(
    param: Tensor,
    grad: Tensor,
    state: AdamState,
    *,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-9,
) -> None:
    """One bias-corrected Adam step that *minimizes*, updating ``param`` [N, ...] and
    ``state`` in place (per-example step counts).

    Exactly cleverhans 2.1's ``TensorAdam._apply_gradients``::

        t += 1; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2
        param -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    ``eps`` defaults to cleverhans' 1e-9 (not torch's 1e-8).
    """
    state.t.add_(1.0)
    state.m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
    state.v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    shape = (-1, *([1] * (param.dim() - 1)))
    m_hat = state.m / (1.0 - beta1**state.t).reshape(shape)
    denom = (state.v / (1.0 - beta2**state.t).reshape(shape)).sqrt_().add_(eps)
    param.addcdiv_(m_hat, denom, value=-lr)


def cross_entropy_per_example(logits: Tensor, y: Tensor) -> Tensor:
    """Softmax cross-entropy per example [N] (to be maximized by an attack)."""
    return F.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """``logit[y] - max_{k != y} logit[k]`` per example [N]; negative means misclassified.

    cleverhans' ``margin_logit_loss`` (SPSA minimizes it).
    """
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - others.amax(dim=1)


def wrong_class_margin(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{k != y} logit[k] - logit[y]`` per example [N] (= ``-margin_loss``)."""
    return -margin_loss(logits, y)


CPU_FORWARD_CHUNK = 64
"""Most images per model call on a CPU. Measured with one thread: a WRN-10-1 on
28x28 digits and a tiny ResNet v2 on 64x64x3 run 1.5-2x more images per second in
calls of 64 than of 256-1024 (the activations of a call stay in the caches)."""


CPU_DECISION_CHUNK = 128
"""Most images per model call on a CPU for a model in its channels_last decision form
(:func:`llrnet.models.precision.decision_form`). Measured with one thread on the
digits WRN-10-1 (``benchmarks/decision_form.py``, CPU time): in that form calls of
32-160 images ran 1.13-1.16x the images per second of the model as given in calls
of 16, calls of 256 0.93x (docs/benchmarks.md, "Black-box attack speed")."""


def forward_chunk(device: torch.device, max_batch: int, cpu_chunk: int = CPU_FORWARD_CHUNK
                  ) -> int:
    """Images per model call for an attack whose ``max_batch`` bounds a call: at most
    ``cpu_chunk`` (:data:`CPU_FORWARD_CHUNK` unless the caller queries a
    channels_last decision form) on a CPU, ``max_batch`` elsewhere (a GPU gains from large
    calls). Results do not depend on it beyond float rounding."""
    return min(max_batch, cpu_chunk) if device.type == "cpu" else max_batch


def search_limit(attack: object, size: int, device: torch.device) -> BatchLimit:
    """The attack's limit on model inputs per call, starting at ``size``.

    Kept on the attack (a private attribute), so a size halved after an
    out-of-memory error (:func:`forward_limited`) holds for its later calls too;
    a call that starts from another ``size`` gets a fresh limit.
    """
    limit = getattr(attack, "_search_limit", None)
    if not isinstance(limit, BatchLimit) or limit.initial != size:
        limit = BatchLimit(size, f"{getattr(attack, 'name', 'attack')} search batch", device)
        attack._search_limit = limit  # type: ignore[attr-defined]
    limit.device = device
    return limit


def forward_limited(fn: Callable[[Tensor], Tensor], inputs: Tensor, limit: BatchLimit) -> Tensor:
    """``fn`` over ``inputs`` [M, ...] in slices of at most ``limit.size`` rows, concatenated
    ([M, ...]); an out-of-memory error halves the limit and retries the slice
    (:func:`llrnet.core.memory.map_batches`). ``fn`` must treat rows independently."""
    parts = map_batches(lambda a, b: fn(inputs[a:b]), inputs.shape[0], limit)
    return torch.cat(parts)


class ImageRng:
    """Per-image random streams: image i draws only from its own ``torch.Generator``,
    seeded ``llrnet.core.seeding.derive(seed_i, *keys)``.

    This is what makes every attack batch-invariant: an image's random numbers
    do not depend on its batch-mates. The keys name the stream: the attack base
    class passes the attack's ``name``, so the stages of a composite attack draw
    independent streams from the same seeds. Draws happen on the CPU (so CPU
    and CUDA runs see the same numbers) and are moved to the requested device.
    """

    def __init__(self, seeds: Tensor | Sequence[int], *keys: int | str) -> None:
        values = seeds.tolist() if isinstance(seeds, Tensor) else list(seeds)
        self.seeds: list[int] = [int(s) for s in values]
        self.keys: tuple[int | str, ...] = keys
        self.generators: list[torch.Generator] = [
            torch.Generator().manual_seed(derive(s, *keys)) for s in self.seeds
        ]

    def __len__(self) -> int:
        return len(self.generators)

    def subset(self, index: Sequence[int] | Tensor) -> ImageRng:
        """The streams of the images ``index`` (sharing generator state with ``self``)."""
        idx = index.tolist() if isinstance(index, Tensor) else list(index)
        out = ImageRng([], *self.keys)
        out.seeds = [self.seeds[i] for i in idx]
        out.generators = [self.generators[i] for i in idx]
        return out

    def uniform(self, shape: Sequence[int], device: torch.device) -> Tensor:
        """[N, *shape] samples from U[0, 1), row i from image i's stream."""
        return draw_uniform((len(self), *shape), self.generators, device)

    def random_bits(self, shape: Sequence[int], device: torch.device) -> Tensor:
        """[N, *shape] random booleans (the stream :meth:`random_bits_into` draws)."""
        out = torch.empty((len(self.generators), *shape), device=device)
        return self.random_bits_into(out).bool()

    def random_bits_into(self, out: Tensor) -> Tensor:
        """Fill ``out`` [N, ...] (any float dtype, any device) with random 0/1 values,
        row i from image i's stream; returns ``out``.

        Each image draws ``ceil(numel / 64)`` int64 values on the CPU and the bits
        are unpacked on ``out``'s device (bit j of byte b lands at ``j * bytes + b``),
        64 times fewer generator calls than one draw per value and no allocation of
        the full-size result.
        """
        n = len(self.generators)
        if out.shape[0] != n:
            raise UsageError(f"out has {out.shape[0]} rows for {n} streams")
        count = out[0].numel() if n else 0
        words = (count + 63) // 64
        raw = torch.empty((n, words), dtype=torch.int64)
        for r, g in enumerate(self.generators):
            torch.randint(-(2**63), 2**63 - 1, (words,), generator=g, out=raw[r])
        octets = raw.to(out.device).view(torch.uint8)  # [n, 8 * words]
        shifts = torch.arange(8, dtype=torch.uint8, device=out.device)[None, :, None]
        bits = torch.bitwise_right_shift(octets[:, None, :], shifts).bitwise_and_(1)
        out.view(n, count).copy_(bits.view(n, -1)[:, :count])
        return out

    def rademacher(
        self, shape: Sequence[int], device: torch.device, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """[N, *shape] random signs (+1 where :meth:`random_bits` is True, else -1)."""
        bits = self.random_bits_into(torch.empty((len(self), *shape), device=device, dtype=dtype))
        return bits.mul_(2).sub_(1)

    def normal(self, shape: Sequence[int], device: torch.device) -> Tensor:
        """[N, *shape] standard normal samples (float32)."""
        return self.normal_into(torch.empty((len(self), *shape), device=device))

    def normal_into(self, out: Tensor) -> Tensor:
        """Fill ``out`` [N, ...] (any float dtype, any device) with standard normal samples,
        row i from image i's stream (drawn in float32 on the CPU); returns ``out``."""
        if out.shape[0] != len(self.generators):
            raise UsageError(f"out has {out.shape[0]} rows for {len(self.generators)} streams")
        for r, g in enumerate(self.generators):
            out[r].copy_(torch.randn(tuple(out.shape[1:]), generator=g))
        return out

    def child(self, *keys: int | str) -> ImageRng:
        """Fresh streams for the same images, seeded ``derive(seed_i, *self.keys, *keys)``."""
        return ImageRng(self.seeds, *self.keys, *keys)

    def normal_cells_into(self, out: Tensor) -> Tensor:
        """Fill ``out`` [N, M, ...] (any float dtype, any device) with standard normal
        samples; returns ``out``.

        Cell (i, j) is the next draw of shape ``out.shape[2:]`` from image i's stream
        (one ``torch.randn`` call per cell, in float32 on the CPU), so the numbers of a
        stream's k-th cell do not depend on how the cells were grouped into calls:
        drawing M cells at once or M cells over several calls gives the same values.
        """
        if out.shape[0] != len(self.generators):
            raise UsageError(f"out has {out.shape[0]} rows for {len(self.generators)} streams")
        drawn = torch.empty(tuple(out.shape), dtype=torch.float32)  # one copy to out's device
        for r, g in enumerate(self.generators):
            for j in range(out.shape[1]):
                torch.randn(tuple(out.shape[2:]), generator=g, out=drawn[r, j])
        return out.copy_(drawn)

    def integers(self, high: int) -> list[int]:
        """One integer in [0, high) per image."""
        return [int(torch.randint(0, high, (1,), generator=g)) for g in self.generators]
