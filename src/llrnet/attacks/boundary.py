"""The Boundary attack (Brendel et al. 2018) with foolbox 1.x semantics, batched.
More: docs/attacks.md, "llrnet.attacks.boundary"."""

from __future__ import annotations

import collections
import contextlib
import logging

import torch
from torch import Tensor, nn

from llrnet.attacks.balls import L2Ball
from llrnet.attacks.base import Attack, CountingModel, Pool
from llrnet.attacks.parts import (
    CPU_DECISION_CHUNK,
    CPU_FORWARD_CHUNK,
    ImageRng,
    forward_chunk,
    forward_limited,
    search_limit,
)
from llrnet.core.checks import check_count, check_positive
from llrnet.core.errors import InputError
from llrnet.models.compiled import compiled_in_buckets, is_compiled
from llrnet.models.precision import decision_form, decision_form_applies

logger = logging.getLogger(__name__)


class _Walk:
    """Per-image state of the random walk (float64, flattened images [D])."""

    def __init__(self, original: Tensor, start: Tensor, spherical: float, source: float) -> None:
        self.original = original
        self.perturbed = start
        self.distance = float((start - original).norm())
        self.best = start
        self.best_distance = self.distance
        self.spherical_step = spherical
        self.source_step = source
        self.spherical_stats: collections.deque[bool] = collections.deque(maxlen=100)
        self.step_stats: collections.deque[bool] = collections.deque(maxlen=30)
        self.done = False

    def see(self, point: Tensor, threshold: float) -> float:
        """Record an adversarial point (foolbox's Adversarial keeps the closest one) unless
        the walk is done; returns its L2 distance to the original."""
        d = float((point - self.original).norm())
        if self.done:
            return d
        if d < self.best_distance:
            self.best, self.best_distance = point.clone(), d
        if self.best_distance <= threshold:
            self.done = True
        return d

    def update_step_sizes(self, factor: float) -> None:
        """foolbox 1.x ``update_step_sizes``."""
        sph, stp = self.spherical_stats, self.step_stats
        if not (len(sph) == sph.maxlen or len(stp) == stp.maxlen):
            return
        if len(sph) == sph.maxlen:
            p = sum(sph) / len(sph)
            if p > 0.5:
                self.spherical_step *= factor
                self.source_step *= factor
                sph.clear()
            elif p < 0.2:
                self.spherical_step /= factor
                self.source_step /= factor
                sph.clear()
        if len(stp) == stp.maxlen:
            p = sum(stp) / len(stp)
            if p > 0.5:
                self.source_step *= factor
                stp.clear()
            elif p < 0.2:
                self.source_step /= factor
                stp.clear()


class Boundary(Attack):
    """Decision-based Boundary attack under an L2 ``threshold`` (challenge: 10; digits: 4).

    Needs ``pool=(images, labels)`` of clean images for the starting points.

    Args:
        threshold: L2 radius: early stop at or below it, final projection onto it.
        iterations: maximum walk iterations (5000).
        max_directions: candidates per iteration (25).
        spherical_step, source_step: initial relative step sizes (1e-2).
        step_adaptation: multiplicative step-size adaptation (1.5).
        convergence: stop when the source step falls below this (1e-7).
        directions_per_batch: candidates classified per image at a time;
            trades model calls for batching, does not change results.
        max_batch: most images forwarded through the model at once (halved
            for the rest of the run after an out-of-memory error).
    """

    name = "boundary"
    kind = "black_box"
    bf16_search = True  # measured: docs/evaluation.md, "Search precision"
    needs_pool = True
    #: On a CPU (float32 images and model) the walk queries the model in its
    #: :func:`~llrnet.models.precision.decision_form` (folded batch norms, channels_last,
    #: restored after the walk) in calls of :data:`CPU_DECISION_CHUNK`; False: as it is.
    fast_decisions = True
    #: With ``fast_decisions``, the walk's decision form also runs through a static-shape
    #: ``torch.compile`` (:func:`~llrnet.models.compiled.compiled_in_buckets`; calls padded
    #: to a multiple of 16 images): 1.1-1.25x the walk's queries per second once compiled
    #: (docs/benchmarks.md, "Black-box attack speed"), after seconds of compiling per model.
    #: Also on when the model given is compiled (``llrnet eval --compile``).
    compile_decisions = False

    def __init__(
        self,
        threshold: float = 10.0,
        *,
        iterations: int = 5000,
        max_directions: int = 25,
        spherical_step: float = 1e-2,
        source_step: float = 1e-2,
        step_adaptation: float = 1.5,
        convergence: float = 1e-7,
        directions_per_batch: int = 5,
        max_batch: int = 256,
    ) -> None:
        super().__init__()
        self.ball: L2Ball = L2Ball(check_positive(threshold, "threshold"))
        self.iterations = check_count(iterations, "iterations", minimum=0)
        self.max_directions = check_count(max_directions, "max_directions")
        self.spherical_step = check_positive(spherical_step, "spherical_step")
        self.source_step = check_positive(source_step, "source_step")
        self.step_adaptation = check_positive(step_adaptation, "step_adaptation")
        self.convergence = check_positive(convergence, "convergence", allow_zero=True)
        self.directions_per_batch = check_count(directions_per_batch, "directions_per_batch")
        self.max_batch = check_count(max_batch, "max_batch")

    @property
    def threshold(self) -> float:
        """The L2 radius (the radius of :attr:`ball`)."""
        return self.ball.eps

    def _predict(self, model: nn.Module, images: Tensor, dtype: torch.dtype,
                 fast: bool = False, channels_last: bool | None = None) -> Tensor:
        """The model's decisions [M] on ``images`` [M, ...], forwarded in calls of at most
        ``max_batch`` (halved for the rest of the run after an out-of-memory error);
        ``fast``: the run walks on the model's
        :func:`~llrnet.models.precision.decision_form`: calls of at most
        :data:`CPU_DECISION_CHUNK` on a CPU (every call of the run, so a halved size
        holds for all of them), channels_last images unless ``channels_last`` is False."""
        if images.shape[0] == 0:
            return torch.zeros(0, dtype=torch.int64, device=images.device)
        chunk = forward_chunk(images.device, self.max_batch,
                              CPU_DECISION_CHUNK if fast else CPU_FORWARD_CHUNK)
        limit = search_limit(self, chunk, images.device)
        cl = fast if channels_last is None else channels_last
        layout = torch.channels_last if cl and images.dim() == 4 else torch.contiguous_format
        return forward_limited(
            lambda part: model(part.to(dtype).contiguous(memory_format=layout)).argmax(dim=1),
            images, limit)

    def _starting_points(self, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool) -> Tensor:
        images, labels = pool
        starts = []
        for i, g in enumerate(rng.generators):
            others = torch.nonzero(labels != y[i]).flatten()
            if others.numel() == 0:
                raise InputError(
                    f"pool has no image of a class other than {int(y[i])}; Boundary needs "
                    "other-class starting points"
                )
            pick = int(torch.randint(0, others.numel(), (1,), generator=g))
            starts.append(images[others[pick]])
        return torch.stack(starts)

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
    ) -> Tensor:
        assert pool is not None  # the base class checked needs_pool
        dtype = x.dtype
        result = x.clone()
        inner = model.model if isinstance(model, CountingModel) else model
        fast = bool(self.fast_decisions and x.device.type == "cpu" and dtype == torch.float32
                    and decision_form_applies(inner))
        with torch.no_grad():
            # The clean check queries the model as given (its own layout).
            correct = self._predict(model, x, dtype, fast, channels_last=False) == y
            todo = torch.nonzero(correct).flatten().tolist()
            if not todo:
                return result
            with contextlib.ExitStack() as stack:
                changed = fast and stack.enter_context(decision_form(inner))
                if changed and (self.compile_decisions or is_compiled(inner)):
                    stack.enter_context(compiled_in_buckets(
                        inner, min(self.max_batch, CPU_DECISION_CHUNK),
                        what="Boundary's decision form"))
                self._search(model, x, y, rng, pool, todo, result, bool(changed))
        return result

    def _search(
        self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool,
        todo: list[int], result: Tensor, fast: bool,
    ) -> None:
        """Starting points and walks for the correctly classified images ``todo``;
        writes the adversarial images into ``result``; ``fast``: see :meth:`_predict`."""
        dtype = x.dtype
        sub_rng = rng.subset(todo)
        starts = self._starting_points(x[todo], y[todo], sub_rng, pool)
        valid = (self._predict(model, starts, dtype, fast) != y[todo]).tolist()
        gave_up = len(valid) - sum(valid)
        if gave_up:
            logger.info("boundary: %d starting points not misclassified; inputs returned",
                        gave_up)
        keep = [k for k, ok in enumerate(valid) if ok]
        walks = [
            _Walk(x[todo[k]].double().flatten(), starts[k].double().flatten(),
                  self.spherical_step, self.source_step)
            for k in keep
        ]
        for walk in walks:
            walk.done = walk.distance <= self.threshold
        self._walk(model, walks, sub_rng.subset(keep), y[[todo[k] for k in keep]], x.shape[1:],
                   dtype, fast)
        for k, walk in zip(keep, walks):
            adv = walk.best
            dist = float((adv - walk.original).norm())
            if dist > self.threshold:
                adv = walk.original + (adv - walk.original) * (self.threshold / dist)
            result[todo[k]] = adv.reshape(x.shape[1:]).to(dtype)

    def _walk(
        self, model: nn.Module, walks: list[_Walk], rng: ImageRng, y: Tensor,
        shape: torch.Size, dtype: torch.dtype, fast: bool,
    ) -> None:
        group_size = max(1, self.max_batch // self.directions_per_batch)
        for step in range(1, self.iterations + 1):
            for walk in walks:
                if walk.source_step < self.convergence:
                    walk.done = True
            active = [k for k, w in enumerate(walks) if not w.done]
            if not active:
                return
            do_spherical = step % 10 == 0
            for s in range(0, len(active), group_size):
                group = active[s : s + group_size]
                self._iteration(model, [walks[k] for k in group], rng.subset(group), y[group],
                                shape, dtype, do_spherical, step, fast)
            for k in active:
                walks[k].update_step_sizes(self.step_adaptation)

    def _iteration(
        self, model: nn.Module, walks: list[_Walk], rng: ImageRng, y: Tensor,
        shape: torch.Size, dtype: torch.dtype, do_spherical: bool, step: int, fast: bool,
    ) -> None:
        """One walk iteration for a group of images: candidates in order until a success."""
        found = [False] * len(walks)
        # One stream per image and iteration; candidate j is its (j + 1)-th draw.
        streams = rng.child("walk", step)
        for j0 in range(0, self.max_directions, self.directions_per_batch):
            rem = [k for k, w in enumerate(walks) if not found[k] and not w.done]
            if not rem:
                return
            count = min(self.directions_per_batch, self.max_directions - j0)
            candidates, spherical = self._candidates([walks[k] for k in rem],
                                                     streams.subset(rem), count)
            labels = y[rem].repeat_interleave(count)
            flat = (len(rem) * count, *shape)
            if do_spherical:
                adv_s = self._predict(model, spherical.reshape(flat), dtype, fast) != labels
                adv_s = adv_s.reshape(len(rem), count)
                adv_c = torch.zeros_like(adv_s)
                if bool(adv_s.any()):
                    pred = self._predict(model, candidates[adv_s].reshape(-1, *shape), dtype,
                                         fast)
                    adv_c[adv_s] = pred != labels.reshape(len(rem), count)[adv_s]
            else:
                adv_c = self._predict(model, candidates.reshape(flat), dtype, fast) != labels
                adv_c = adv_c.reshape(len(rem), count)
                adv_s = torch.zeros_like(adv_c)
            adv_s_list, adv_c_list = adv_s.tolist(), adv_c.tolist()
            for r, k in enumerate(rem):
                walk = walks[k]
                for j in range(count):
                    if do_spherical:
                        walk.spherical_stats.appendleft(adv_s_list[r][j])
                        if not adv_s_list[r][j]:
                            continue
                        walk.see(spherical[r, j], self.threshold)
                        walk.step_stats.appendleft(adv_c_list[r][j])
                    if adv_c_list[r][j]:
                        point = candidates[r, j]
                        distance = walk.see(point, self.threshold)
                        if distance < walk.distance:
                            walk.perturbed, walk.distance = point.clone(), distance
                        found[k] = True
                        break

    def _candidates(self, walks: list[_Walk], streams: ImageRng, count: int
                    ) -> tuple[Tensor, Tensor]:
        """foolbox 1.x ``generate_candidate_default`` for the next ``count`` candidates
        of the iteration, per image; ``streams`` are the images' streams of this
        iteration (:meth:`ImageRng.child`), positioned after the candidates drawn so far.

        Returns (candidates, spherical candidates), each [n, count, D] float64.
        The two results are the only full-size tensors: every step updates them
        in place (at 224 px one image's 25 candidates take 30 MB, and fresh
        temporaries of that size cost more than the arithmetic).
        """
        original = torch.stack([w.original for w in walks])[:, None]  # [n, 1, D]
        perturbed = torch.stack([w.perturbed for w in walks])[:, None]
        dims = original.shape[-1]
        device = original.device
        sph = torch.tensor([w.spherical_step for w in walks], dtype=torch.float64,
                           device=device)[:, None, None]
        src = torch.tensor([w.source_step for w in walks], dtype=torch.float64,
                           device=device)[:, None, None]
        unnormalized = original - perturbed
        source_norm = unnormalized.norm(dim=-1, keepdim=True)
        direction = unnormalized / source_norm
        # The spherical step: noise orthogonal to the direction, scaled to sph * |x - x'|.
        # [n, count, D]: the next `count` cells of each image's stream for this iteration.
        noise = streams.normal_cells_into(
            torch.empty((len(walks), count, dims), dtype=torch.float64, device=device))
        dot = torch.bmm(noise, direction.transpose(1, 2))  # [n, count, 1]
        noise.addcmul_(dot, direction, value=-1.0)
        noise.mul_(sph * source_norm / noise.norm(dim=-1, keepdim=True))
        factor = 1.0 / torch.sqrt(sph**2 + 1.0)
        spherical = noise.sub_(unnormalized).mul_(factor).add_(original).clamp_(0.0, 1.0)
        # Then the step towards the original.
        candidates = torch.sub(original, spherical)  # the new direction, for now
        new_norm = candidates.norm(dim=-1, keepdim=True)
        length = src * source_norm + (new_norm - source_norm)
        length = length.clamp_min(0.0) / new_norm
        candidates.mul_(length).add_(spherical).clamp_(0.0, 1.0)
        return candidates, spherical

    def budget(self) -> dict[str, int]:
        """``{"iterations": iterations, "max_directions": max_directions}``."""
        return {"iterations": self.iterations, "max_directions": self.max_directions}

    def _scaled(self, factor: int) -> Boundary:
        """``iterations * factor`` with the same candidates per iteration and step schedule.

        Candidate ``j`` of iteration ``t`` draws the same noise in both, so the
        scaled walk repeats the original's first ``iterations`` iterations and
        then goes on (unless it converged or reached the threshold first).
        """
        return self._replace(iterations=self.iterations * factor)
