"""The challenge's common corruptions: worst of 17 ImageNet-C corruptions at severity 1.
More: docs/attacks.md, "llrnet.attacks.corruptions"."""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from llrnet.attacks.base import Attack, Pool
from llrnet.attacks.geometry import to_uint8_levels
from llrnet.attacks.parts import ImageRng
from llrnet.core.checks import check_count
from llrnet.core.errors import RunError, UsageError
from llrnet.core.seeding import derive

#: The challenge's 17 corruptions, in the reference order (snow and frost disabled there).
CHALLENGE_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "fog", "brightness", "contrast", "elastic_transform",
    "pixelate", "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate",
)
_SEEDED = ("impulse_noise", "glass_blur")  # take an explicit ``seed`` argument


def _available() -> tuple[str, ...]:
    from imagecorruptions import (
        get_corruption_names,  # deferred: optional-heavy imagecorruptions, on first use
    )

    return tuple(get_corruption_names("all"))


def corrupt_image(image: np.ndarray, names: Sequence[str], severity: int,
                  seeds: Sequence[int]) -> np.ndarray:
    """Corrupt one uint8 image [H, W, 3] with each of ``names``: uint8 [K, H, W, 3].

    ``seeds[k]`` seeds numpy's global generator (and the ``seed`` argument
    where the corruption takes one) before corruption k. Runs in worker
    processes; imports ``imagecorruptions`` lazily.
    """
    from imagecorruptions import (
        corruption_dict,  # deferred: optional-heavy imagecorruptions, on first use
    )
    out = np.empty((len(names), *image.shape), dtype=np.uint8)
    for k, (name, seed) in enumerate(zip(names, seeds)):
        np.random.seed(seed)
        kwargs: dict[str, Any] = {"seed": seed} if name in _SEEDED else {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = corruption_dict[name](Image.fromarray(image), severity, **kwargs)
        except Exception as error:  # re-raised with the corruption's name
            raise RunError(
                f"corruption {name!r} failed on a {image.shape[0]}x{image.shape[1]} image: {error}"
            ) from error
        values = np.asarray(result)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            # Some corruptions return NaN on flat images (28 px digits); the reference's
            # np.uint8 cast makes them 0 on x86 with a RuntimeWarning per call. Do the
            # same, explicitly and without the warning.
            values = np.nan_to_num(values, nan=0.0)
        out[k] = np.uint8(values)
    return out


def _corrupt_task(args: tuple[np.ndarray, tuple[str, ...], int, list[int]]) -> np.ndarray:
    return corrupt_image(*args)


class CommonCorruptions(Attack):
    """Worst common corruption by wrong-class logit (the challenge's ``common_corruptions``).

    Args:
        corruptions: names, in search order (default: the challenge's 17).
        severity: 1..5 (challenge: 1).
        workers: processes for the CPU work; None = min(4, CPUs); 0 = in-process.
        batch_size: corrupted images classified at once.
    """

    name = "common_corruptions"
    kind = "corruption"
    bf16_search = True  # measured: docs/evaluation.md, "Search precision"

    def __init__(
        self,
        corruptions: Sequence[str] = CHALLENGE_CORRUPTIONS,
        *,
        severity: int = 1,
        workers: int | None = None,
        batch_size: int = 256,
    ) -> None:
        super().__init__()
        names = tuple(corruptions)
        if not names:
            raise UsageError("corruptions must name at least one corruption")
        known = _available()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UsageError(f"unknown corruptions {unknown}; valid names: {list(known)}")
        self.corruptions = names
        if severity not in (1, 2, 3, 4, 5) or isinstance(severity, bool):
            raise UsageError(f"severity must be an integer in 1..5, got {severity!r}")
        self.severity = int(severity)
        if workers is None:
            workers = min(4, os.cpu_count() or 1)
        self.workers = check_count(workers, "workers", minimum=0)
        self.batch_size = check_count(batch_size, "batch_size")
        self._pool: Executor | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None  # process pools do not pickle
        return state

    def close(self) -> None:
        """Shut the worker processes down (they are also reaped at interpreter exit)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _seeds(self, image_seed: int) -> list[int]:
        """numpy seeds of one image's corruptions: derived from the image's seed and
        the corruption's name, reduced mod 2**32 (numpy's seed range)."""
        return [derive(image_seed, self.name, name) % (2**32) for name in self.corruptions]

    def corrupt(self, x: Tensor, seeds: Sequence[int]) -> Tensor:
        """Every corruption of every image: [N, K, C, H, W] float in [0, 1] (multiples of 1/255
        for 3 channels; 1-channel results are the mean of the 3 corrupted channels)."""
        n, c = x.shape[:2]
        if c not in (1, 3):
            raise UsageError(f"common corruptions need 1- or 3-channel images, got {c}")
        levels = to_uint8_levels(x).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        if c == 1:
            levels = np.repeat(levels, 3, axis=3)
        tasks = [
            (np.ascontiguousarray(levels[i]), self.corruptions, self.severity,
             self._seeds(int(seeds[i])))
            for i in range(n)
        ]
        if self.workers == 0 or n == 0:
            results = [_corrupt_task(t) for t in tasks]
        else:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
                )
            try:
                results = list(self._pool.map(_corrupt_task, tasks))
            except BrokenProcessPool as error:
                self._pool = None
                raise RunError(
                    "a corruption worker process died; spawned workers re-import the main "
                    "script, so guard it with `if __name__ == '__main__':`, or pass workers=0"
                ) from error
        out = torch.from_numpy(np.stack(results)).to(x.device)  # [N, K, H, W, 3] uint8
        out = out.permute(0, 1, 4, 2, 3).to(torch.float32) / 255.0
        if c == 1:
            out = out.mean(dim=2, keepdim=True)
        return out.to(x.dtype)

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
    ) -> Tensor:
        n = x.shape[0]
        k = len(self.corruptions)
        corrupted = self.corrupt(x, rng.seeds)
        flat = corrupted.reshape(n * k, *x.shape[1:])
        labels = y.repeat_interleave(k)
        with torch.no_grad():
            scores = []
            for s in range(0, n * k, self.batch_size):
                logits = model(flat[s : s + self.batch_size])
                wrong = logits.scatter(1, labels[s : s + self.batch_size, None], float("-inf"))
                scores.append(wrong.amax(dim=1))
            score = torch.cat(scores).reshape(n, k).float()
        # torch.argmax returns the first maximal index: the first corruption in order wins ties.
        choice = torch.nan_to_num(score, nan=float("-inf")).argmax(dim=1)
        return corrupted[torch.arange(n, device=x.device), choice]
