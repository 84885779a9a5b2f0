"""SPSA (Uesato et al. 2018) with cleverhans 2.1 semantics, batched across images.
More: docs/attacks.md, "llrnet.attacks.spsa"."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llrnet.attacks.balls import LinfBall
from llrnet.attacks.base import Attack, Pool
from llrnet.attacks.parts import (
    AdamState,
    ImageRng,
    adam_step,
    forward_chunk,
    margin_loss,
    search_limit,
)
from llrnet.core.checks import check_count, check_positive
from llrnet.core.devices import check_memory
from llrnet.core.errors import UsageError
from llrnet.core.memory import BatchLimit, map_batches


def _margins(model: nn.Module, images: Tensor, labels: Tensor, limit: BatchLimit) -> Tensor:
    """``margin_loss`` [M] of ``images`` [M, C, H, W], forwarded at most ``limit.size`` at a
    time (halved on an out-of-memory error: :func:`~llrnet.core.memory.map_batches`)."""
    out = map_batches(lambda a, b: margin_loss(model(images[a:b]), labels[a:b]),
                      images.shape[0], limit)
    return torch.cat(out) if out else images.new_zeros(0)


PROBE_VALUES = 40_000_000
"""Input values the default ``max_batch`` allows in one model call (160 MB in float32)."""
MAX_SAMPLES = 2**16
"""Most probes per step (1,024 times the challenge's 64): a larger value is a mistake."""
MAX_AUTO_BATCH = 1024
"""Cap of the default ``max_batch``: bounds the model's activations on small images."""


class _Workspace:
    """Probe buffers reused by every step of one run.

    One image's 64 probes at 224x224x3 take 38 MB; allocating them afresh each
    step costs more than building them (the memory comes back from the OS
    zeroed, page by page), so they are allocated once per run. ``group``
    images' probes fill at most ``batch`` model inputs.
    """

    def __init__(self, attack: SPSA, x: Tensor) -> None:
        self.batch = attack.batch_for(x[0])
        self.limit = search_limit(attack, forward_chunk(x.device, self.batch), x.device)
        self.group = max(1, min(x.shape[0], self.batch // attack.samples))
        dims = x[0].numel()
        # bits, probes, and the losses' model inputs: refused before any is allocated
        needed = (self.group * attack.samples * 3 // 2 + self.batch) * dims * x.element_size()
        check_memory(needed, x.device, f"SPSA with samples={attack.samples} on images of "
                     f"shape {list(x.shape[1:])}")
        self.bits = torch.empty((self.group, attack.samples // 2, dims), device=x.device,
                                dtype=x.dtype)
        self.probes = torch.empty((self.group, attack.samples, dims), device=x.device,
                                  dtype=x.dtype)


class SPSA(Attack):
    """L-inf SPSA, cleverhans 2.1 (the challenge's ``spsa`` stage).

    Args:
        eps: L-inf radius (challenge: 16/255).
        steps: maximum iterations (challenge: 200).
        samples: probes per step, an even number: ``samples / 2`` antithetic
            Rademacher pairs (challenge: 64), at most :data:`MAX_SAMPLES`; the
            probe buffers are checked against the device's free memory first.
        delta: probe scale (0.01).
        lr: Adam learning rate (0.01); ``beta1``, ``beta2``, ``adam_eps`` as
            cleverhans' TensorAdam (0.9, 0.999, 1e-9).
        early_stop_loss_threshold: stop an image once its margin loss,
            evaluated before the step's update, is below this (-1.0); None
            disables early stopping.
        random_start: start uniformly in the ball (cleverhans always does).
        max_batch: most images forwarded through the model at once; bounds
            memory, does not change results (beyond float noise); halved
            for the rest of the run after an out-of-memory error. None (the
            default) sizes it from the image: as many probes as hold
            :data:`PROBE_VALUES` input values, between ``samples`` and
            :data:`MAX_AUTO_BATCH` (256 at 224x224x3, 1024 at 28x28).
    """

    name = "spsa"
    kind = "black_box"

    def __init__(
        self,
        eps: float = 16 / 255,
        steps: int = 200,
        *,
        samples: int = 64,
        delta: float = 0.01,
        lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.999,
        adam_eps: float = 1e-9,
        early_stop_loss_threshold: float | None = -1.0,
        random_start: bool = True,
        max_batch: int | None = None,
    ) -> None:
        super().__init__()
        self.ball: LinfBall = LinfBall(eps)
        self.steps = check_count(steps, "steps", minimum=0)
        self.samples = check_count(samples, "samples", minimum=2)
        if samples > MAX_SAMPLES:
            raise UsageError(f"samples must be <= {MAX_SAMPLES}, got {samples}")
        if samples % 2:
            raise UsageError(f"samples must be even (antithetic pairs), got {samples}")
        self.delta = check_positive(delta, "delta")
        self.lr = check_positive(lr, "lr")
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        for name, beta in (("beta1", self.beta1), ("beta2", self.beta2)):
            if not 0.0 <= beta < 1.0:
                raise UsageError(f"{name} must be in [0, 1), got {beta}")
        self.adam_eps = check_positive(adam_eps, "adam_eps")
        self.threshold = None if early_stop_loss_threshold is None else float(
            early_stop_loss_threshold
        )
        self.random_start = bool(random_start)
        self.max_batch = None if max_batch is None else check_count(max_batch, "max_batch")

    def batch_for(self, image: Tensor) -> int:
        """The model batch size used for images shaped like ``image`` [C, H, W]."""
        if self.max_batch is not None:
            return self.max_batch
        fit = PROBE_VALUES // max(1, image.numel())
        return max(self.samples, min(MAX_AUTO_BATCH, fit // self.samples * self.samples))

    def _gradient(
        self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, work: _Workspace
    ) -> Tensor:
        """SPSA gradient estimate at ``x`` [n, C, H, W] (``x0 + p``), per image.

        For image i with signs s_k (k < samples/2) and probes ``x + delta s_k``
        then ``x - delta s_k``: ``mean_j loss_j V_j / delta`` with ``V = [v, -v]``,
        ``v = delta s``, equals ``sum_k (loss+_k - loss-_k) s_k / samples``.
        Images are processed in groups whose probes fill ``max_batch``; each
        image's probes are built in ``work``'s buffers with two fused adds from
        its 0/1 bits (s = 2 bit - 1).
        """
        n = x.shape[0]
        pairs = self.samples // 2
        shape = x.shape[1:]
        dims = x[0].numel()
        grad = torch.empty_like(x)
        for g0 in range(0, n, work.group):
            count = min(work.group, n - g0)
            members = list(range(g0, g0 + count))
            bits = rng.subset(members).random_bits_into(work.bits[:count])  # [g, pairs, D]
            probes = work.probes[:count]  # [g, samples, D]
            # x + delta s = (x - delta) + 2 delta bit, and x - delta s = (x + delta) - 2 delta bit.
            base = x[g0 : g0 + count].reshape(count, 1, dims)
            torch.add(base - self.delta, bits, alpha=2 * self.delta, out=probes[:, :pairs])
            torch.add(base + self.delta, bits, alpha=-2 * self.delta, out=probes[:, pairs:])
            flat = probes.reshape(-1, *shape)
            labels = y[members].repeat_interleave(self.samples)
            losses = _margins(model, flat, labels, work.limit).reshape(count, -1)
            diff = (losses[:, :pairs] - losses[:, pairs:]) / self.samples  # [g, pairs]
            # sum_k diff_k s_k = 2 sum_k diff_k bit_k - sum_k diff_k
            ones = torch.bmm(diff[:, None, :], bits)[:, 0]  # [g, D]
            grad[g0 : g0 + count] = (2.0 * ones - diff.sum(dim=1, keepdim=True)).reshape(
                count, *shape
            )
        return grad

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
    ) -> Tensor:
        x0 = x
        ball = self.ball
        p = ball.random_start(x0, rng.generators) if self.random_start else torch.zeros_like(x0)
        # The images still running, compacted: Adam updates their state in place, and
        # they are re-gathered only when some image stops early.
        active = torch.arange(x0.shape[0], device=x0.device)
        active_rng, xa, ya, pa = rng, x0, y, p.clone()
        state = AdamState.zeros_like(pa)
        work = _Workspace(self, x0)
        with torch.no_grad():
            for _ in range(self.steps):
                if active.numel() == 0:
                    break
                current_x = xa + pa
                grad = self._gradient(model, current_x, ya, active_rng, work)
                adam_step(pa, grad, state, lr=self.lr, beta1=self.beta1, beta2=self.beta2,
                          eps=self.adam_eps)
                current = _margins(model, current_x, ya, work.limit)  # before the update
                pa = ball.project(pa, xa)
                if self.threshold is None:
                    continue
                stopped = current < self.threshold
                if bool(stopped.any()):
                    p[active] = pa
                    keep = ~stopped
                    active, xa, ya, pa = active[keep], xa[keep], ya[keep], pa[keep]
                    active_rng = rng.subset(active.cpu())
                    state = state.select(keep)
        p[active] = pa
        return x0 + p

    def budget(self) -> dict[str, int]:
        """``{"steps": steps, "samples": samples}``; a step costs ``samples + 1`` evaluations."""
        return {"steps": self.steps, "samples": self.samples}

    def _scaled(self, factor: int) -> SPSA:
        """``steps * factor`` with the same probes per step, Adam settings and early stop.

        More steps rather than more probes: an image's random stream yields the
        same probes for its first ``steps`` steps, so the scaled walk starts as
        the original did, and images that stopped early stop at the same step.
        """
        return self._replace(steps=self.steps * factor)
