"""Data loading speed: decode + augment of 299x299 JPEGs, images/s at 0, 1 and 2 workers.

Generates ``--images`` JPEGs like the stored bird-or-bicycle files (299x299,
Pillow quality 75, photo-like content: smooth gradients plus noise), then times
one epoch of a ``DataLoader`` over an :class:`llrnet.data.robust.ImageFileDataset`
for two pipelines:

* ``train``: decode + RandomResizedCrop(224) + flip + to-tensor (the augmentation
  used when fine-tuning on bird-or-bicycle / ImageNet);
* ``eval``: decode + Resize(224) + to-tensor (the challenge's transform).

Settings come from :func:`llrnet.data.loader_settings` (persistent workers,
prefetching); the first epoch warms the workers up and is not timed.

Usage::

    .venv/bin/python benchmarks/data_loading.py [--images 512] [--batch-size 32] [--write]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine_description, write_section
from PIL import Image
from torch.utils.data import DataLoader

from llrnet.data import challenge_eval_transform, imagenet_train_transform, loader_settings
from llrnet.data.robust import ImageFileDataset


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` photo-like 299x299 JPEGs (quality 75) in ``folder``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:299, 0:299].astype(np.float32) / 299
    paths = []
    for i in range(n):
        a, b, c = rng.random(3)
        base = np.stack([a * xx + (1 - a) * yy, b * yy, c * (1 - xx)], axis=-1) * 200
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, format="JPEG")
        paths.append(path)
    return paths


def images_per_second(dataset: ImageFileDataset, workers: int, batch_size: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True,
                        **loader_settings("cpu", workers=workers))
    for _ in loader:  # warm-up epoch: worker start-up, page cache
        pass
    start = time.perf_counter()
    count = sum(int(x.shape[0]) for x, _ in loader)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(1)  # each loader process decodes with one thread

    worker_counts = [int(w) for w in args.workers.split(",")]
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        samples = [(p, 0) for p in paths]
        pipelines = {"train": imagenet_train_transform(224), "eval": challenge_eval_transform(224)}
        for name, transform in pipelines.items():
            dataset = ImageFileDataset(samples, transform)
            speeds = [images_per_second(dataset, w, args.batch_size) for w in worker_counts]
            rows.append((name, speeds))
            print(name, " ".join(f"{w} workers: {s:.0f} img/s"
                                 for w, s in zip(worker_counts, speeds)))

    header = "| pipeline | " + " | ".join(f"{w} workers" for w in worker_counts) + " |"
    lines = [
        "## Data loading",
        "",
        f"`benchmarks/data_loading.py --images {args.images} --batch-size {args.batch_size}`: "
        "images/s through a `DataLoader` (settings from `llrnet.data.loader_settings`), "
        "decode + augment of 299x299 JPEGs (quality 75), second epoch timed. "
        "0 workers = in the main process.",
        "",
        header,
        "|---|" + "---|" * len(worker_counts),
        *[f"| {name} | " + " | ".join(f"{s:.0f}" for s in speeds) + " |" for name, speeds in rows],
        "",
        "`train` = RandomResizedCrop(224) + flip + to-tensor; `eval` = Resize(224) + to-tensor.",
        f"Machine: {machine_description()}. Load average (1 min) before / after the run: "
        f"{load_before:.1f} / {os.getloadavg()[0]:.1f}; a load above the core count means "
        "other jobs shared the CPU and the worker columns understate the speed-up.",
    ]
    if args.write:
        write_section("data-loading", "\n".join(lines))


if __name__ == "__main__":
    main()
