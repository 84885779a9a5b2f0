"""Speed of llrnet's spatial grid and SPSA against one-image-at-a-time reference loops.

The reference loops follow the original kit (``unrestricted_advex`` 0.0.4):

* spatial grid: per image, every transform through PIL (8-bit truncation,
  bilinear shrink, pad, bilinear affine with torchvision 0.2's matrix), mapped
  over a ``multiprocessing.Pool`` of all CPUs as the kit did, then the model on
  batches of 32 NHWC numpy images, then the worst-margin selection;
* SPSA: cleverhans 2.1's loop for one image at a time, in numpy (uniform ->
  sign probes, 64 probes through a numpy NHWC ``model_fn``, Adam, the loss
  before the update, projection).

Both run in the same process on the same small model and images, and the
ratio of images/s is reported. Early stopping is disabled for SPSA so both
sides do the same number of model evaluations. Writes the ``attacks`` section
of docs/benchmarks.md with ``--write``.

    python benchmarks/eval_attacks.py --write
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import time

import numpy as np
import PIL.Image
import torch
from common import machine_description, write_section
from torch import nn

from llrnet.attacks import SPSA, SpatialGrid
from llrnet.attacks.spatial import spatial_grid


class SmallNet(nn.Module):
    """A small CNN (pool, two strided convs, linear) standing in for a classifier."""

    def __init__(self, channels: int, pool: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AvgPool2d(pool), nn.Conv2d(channels, 16, 3, stride=2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(32, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LinearNet(nn.Module):
    """Logistic regression on the pixels: the cheapest model that reads every pixel, so
    the numbers measure the attack machinery itself."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_model(kind: str, channels: int, size: int) -> nn.Module:
    torch.manual_seed(0)
    if kind == "linear":
        return LinearNet(channels, size).eval()
    return SmallNet(channels, pool=max(1, size // 56)).eval()


def numpy_model_fn(model: nn.Module):  # type: ignore[no-untyped-def]
    """The kit's model_fn: numpy NHWC float32 -> numpy (N, 2).

    The images are made contiguous NCHW before the model (one copy): a bare
    ``permute`` hands the model a channels-last view, which made the pooling of
    ``SmallNet`` about 3x slower and the reference unfairly slow.
    """

    def call(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            return model(x).numpy()

    return call


# ---------------------------------------------------------------- reference grid
def _reference_transform(args: tuple[np.ndarray, float, float, float, float]) -> np.ndarray:
    """The kit's ``apply_transformation`` (PIL, torchvision 0.2 affine matrix)."""
    x, angle, dx, dy, frac = args
    img = PIL.Image.fromarray((np.squeeze(x) * 255.0).astype(np.uint8))
    w, h = img.size
    pad_x, pad_y = int(float(h) * frac), int(float(w) * frac)
    inner = img.resize((w - 2 * pad_x, h - 2 * pad_y), PIL.Image.BILINEAR)
    framed = PIL.Image.new(img.mode, (w, h))
    framed.paste(inner, (pad_x, pad_y))
    a = math.radians(angle)
    cx, cy = w * 0.5 + 0.5, h * 0.5 + 0.5
    m = [math.cos(a), math.sin(a), 0.0, -math.sin(a), math.cos(a), 0.0]
    m[2] = m[0] * (-cx - dx) + m[1] * (-cy - dy) + cx
    m[5] = m[3] * (-cx - dx) + m[4] * (-cy - dy) + cy
    out = np.asarray(framed.transform((w, h), PIL.Image.AFFINE, m, PIL.Image.BILINEAR))
    out = out.astype(np.float32) / 255.0
    return out.reshape(x.shape)


def reference_grid(model_fn, images: np.ndarray, labels: np.ndarray, transforms: np.ndarray,  # type: ignore[no-untyped-def]
                   frac: float, pool) -> np.ndarray:  # type: ignore[no-untyped-def]
    worst = np.copy(images)
    for i, x in enumerate(images):
        args = [(x, angle, dx, dy, frac) for dx, dy, angle in transforms]
        batch = np.array(pool.map(_reference_transform, args))
        logits = np.concatenate([model_fn(batch[s : s + 32]) for s in range(0, len(batch), 32)])
        best = -np.inf
        label = int(labels[i])
        for lg, adv in zip(logits, batch):
            loss = lg[1 - label] - lg[label]
            if loss > best:
                worst[i], best = adv, loss
    return worst


# ---------------------------------------------------------------- reference SPSA
def reference_spsa(model_fn, x: np.ndarray, y: int, *, eps: float, steps: int,  # type: ignore[no-untyped-def]
                   rs: np.random.RandomState) -> np.ndarray:
    """cleverhans 2.1 SPSA on one NHWC image [1, H, W, C] (no early stop)."""

    def loss(z: np.ndarray) -> np.ndarray:
        lg = model_fn(z.astype(np.float32))
        return lg[:, y] - lg[:, 1 - y]

    def project(p: np.ndarray) -> np.ndarray:
        return np.clip(x + np.clip(p, -eps, eps), 0.0, 1.0) - x

    p = project(rs.uniform(-eps, eps, x.shape).astype(np.float32))
    m = np.zeros_like(p)
    u = np.zeros_like(p)
    for t in range(1, steps + 1):
        dx = 0.01 * np.sign(rs.uniform(-1.0, 1.0, (32, *x.shape[1:]))).astype(np.float32)
        dx = np.concatenate([dx, -dx])
        values = loss(x + p + dx).reshape(-1, 1, 1, 1)
        g = np.mean(values * dx, axis=0, keepdims=True) / 0.01
        m = 0.9 * m + 0.1 * g
        u = 0.999 * u + 0.001 * g * g
        p_new = p - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(u / (1 - 0.999**t)) + 1e-9)
        loss(x + p)  # evaluated before the update (the early-stop check)
        p = project(p_new)
    return x + p


NOTE = """\
Goals (issue 3): >= 10x for the spatial grid and >= 5x for SPSA at 16 images.

Where the goals stand. At the challenge's size (224 px) the grid reaches 12.7-34.8x
in every row. SPSA reaches 6.7x (cnn) and 9.0x (linear) with both cores, and 7.5x
(linear) on one core; the cnn on one core is at the edge, at 4.8x (4.8-5.0x over
three runs of this command on 2026-11-25), because its forwards take about 60% of
llrnet's time. On the 28 px
digits (the quick mode) an image's whole grid takes about 10 ms either way, and
llrnet's Python work per crop, not the pixels, sets the pace: 4.0-5.0x.

How the gains come about. The grid renders one rotated canvas per angle and image
(5 per image) and crops the 775 translations from it, instead of 775 PIL warps; the
crops are copied into one reused input buffer. SPSA builds each image's 64 probes
in buffers allocated once per run, from 64-bit random words unpacked to bits, and
updates its Adam state in place. Reusing buffers matters on a CPU: a
fresh 38-150 MB tensor per step comes back from the OS zeroed page by page, which
cost more than filling it. Before these changes SPSA ran at 1.3-1.8x and the grid
at 5.6-11x, against a reference that was slower still (it fed the model a
channels-last view; it now copies to contiguous NCHW first, which is fairer).

What limits the ratios. Both sides run the same model on the same number of
inputs, so the model's share of the time bounds the ratio: the `linear` rows
(cheapest model) show the machinery, the `cnn` rows a model whose first pooling
layer costs about as much as all of SPSA's own work. On the digits (28x28) the
CNN's forwards dominate and neither attack can gain much on a CPU. Thread counts:
the reference's numpy array work runs on one core whatever the setting (only its
model calls use more), whereas llrnet's tensor work uses every thread, so the
two-thread rows favour llrnet; the one-thread rows compare like with like. The
original kit ran TensorFlow, whose array work would also use both cores.
What batching buys on a GPU (16 x 64 probes per call instead of 64, 256 grid
images per call) cannot be measured here.
"""


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(kind: str, setting: str, size: int, channels: int, grid_images: int, spsa_images: int,
        spsa_steps: int, limits: tuple[float, float, float],
        granularity: tuple[int, int, int], threads: int) -> list[str]:
    torch.set_num_threads(threads)
    model = make_model(kind, channels, size)
    setting = f"{setting}, {kind}, {threads} thread{'s' if threads > 1 else ''}"
    model_fn = numpy_model_fn(model)
    n = max(grid_images, spsa_images)
    x = torch.rand(n, channels, size, size)
    with torch.no_grad():
        y = model(x).argmax(1)
    nhwc = x.permute(0, 2, 3, 1).numpy()
    rows = []

    transforms = spatial_grid("challenge", limits, granularity).numpy()
    grid = SpatialGrid("challenge", limits=limits, granularity=granularity)
    xg, yg = x[:grid_images], y[:grid_images]
    ours = timed(lambda: grid(model, xg, yg))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(multiprocessing.cpu_count()) as pool:
        ref_n = max(1, grid_images // 4)
        ref = timed(lambda: reference_grid(model_fn, nhwc[:ref_n], y[:ref_n].numpy(), transforms,
                                           0.15, pool))
    ours_rate, ref_rate = grid_images / ours, ref_n / ref
    print(f"{setting}: grid ours {ours:.1f} s, reference {ref:.1f} s", flush=True)
    rows.append(f"| {setting} | spatial grid ({len(transforms)} transforms) | {grid_images} / "
                f"{ref_n} | {ours_rate:.2f} | {ref_rate:.3f} | **{ours_rate / ref_rate:.1f}x** |")

    spsa = SPSA(eps=16 / 255, steps=spsa_steps, early_stop_loss_threshold=None)
    xs, ys = x[:spsa_images], y[:spsa_images]
    ours = timed(lambda: spsa(model, xs, ys))
    rs = np.random.RandomState(0)
    ref = timed(lambda: [reference_spsa(model_fn, nhwc[i : i + 1], int(y[i]), eps=16 / 255,
                                        steps=spsa_steps, rs=rs) for i in range(spsa_images)])
    ours_rate, ref_rate = spsa_images / ours, spsa_images / ref
    print(f"{setting}: SPSA ours {ours:.1f} s, reference {ref:.1f} s", flush=True)
    rows.append(f"| {setting} | SPSA ({spsa_steps} steps x 65 evaluations) | {spsa_images} / "
                f"{spsa_images} | {ours_rate:.3f} | {ref_rate:.3f} | "
                f"**{ours_rate / ref_rate:.1f}x** |")
    return rows


def trained_small_net(steps: int) -> nn.Module:
    """SmallNet trained briefly on a synthetic two-class task at 224 px (class 1 iff the
    left half is brighter than the right half), so early stops behave as on a real model."""
    torch.manual_seed(0)
    model = SmallNet(3, pool=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        x, y = synthetic_batch(16)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def synthetic_batch(n: int, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 3, 224, 224, generator=generator) * 0.6
    y = torch.randint(0, 2, (n,), generator=generator)
    bright = torch.where(y == 1, 0, 112)
    for i in range(n):
        x[i, :, :, int(bright[i]) : int(bright[i]) + 112] += 0.4
    return x, y


def suite_costs(images: int, train_steps: int, boundary_iterations: int) -> str:
    """Model evaluations per image of each bird_or_bicycle attack, and the suite's FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from llrnet.eval import get_suite
    from llrnet.models import create_model

    model = trained_small_net(train_steps)
    g = torch.Generator().manual_seed(1)
    # Only correctly classified images and starting points: an attack on a misclassified
    # image (or from an invalid start) returns at once and would understate the cost.
    candidates, labels = synthetic_batch(4 * images + 64, g)
    with torch.no_grad():
        correct = model(candidates).argmax(1) == labels
    if int(correct.sum()) < images + 16:
        raise SystemExit(f"the SmallNet trained for {train_steps} steps classifies only "
                         f"{int(correct.sum())} of {len(labels)} images; train longer")
    keep = correct.nonzero()[:, 0]
    x, y = candidates[keep[:images]], labels[keep[:images]]
    pool = candidates[keep[images:]], labels[keep[images:]]
    suite = get_suite("bird_or_bicycle")
    counts: dict[str, float] = {}
    for entry in suite.entries:
        attack = entry.attack
        stages = getattr(attack, "stages", (attack,))
        for stage in stages:
            if hasattr(stage, "iterations"):
                stage.iterations = boundary_iterations
        attack(model, x, y, seeds=0, pool=pool if entry.needs_pool else None)
        counts[entry.name] = attack.last_stats["model_evaluations"] / images
        print(f"{entry.name}: {counts[entry.name]:.0f} evaluations/image", flush=True)
    big = create_model("llr_pretrain_adv").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        big(torch.rand(1, 3, 224, 224))
    flops = counter.get_total_flops()
    lines = [
        "| attack | images in the suite | model evaluations / image (measured) | forward FLOPs "
        "for llr_pretrain_adv |",
        "|---|---|---|---|",
    ]
    total = 0.0
    for entry in suite.entries:
        n = min(250, entry.max_images or 250)
        cost = counts[entry.name] * n * flops
        total += cost
        lines.append(f"| {entry.name} | {n} | {counts[entry.name]:.0f} | {cost:.3g} |")
    lines.append(f"| **total** | | | **{total:.3g}** |")
    return (
        f"Model evaluations counted by `last_stats` on a SmallNet trained for {train_steps} "
        f"steps on a synthetic two-class task, {images} correctly classified images (other-class "
        "starting points from the correctly classified rest), the `bird_or_bicycle` "
        f"suite's attacks (Boundary capped at {boundary_iterations} iterations), early stops "
        f"included. FLOPs: `FlopCounterMode` on one 224x224 forward of `llr_pretrain_adv` "
        f"({flops / 1e9:.1f} GFLOPs) times the evaluations for the 250 test images "
        "(Boundary: 100). Scoring each attack's final images costs one more forward per "
        "image and attack (not included).\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid-images", type=int, default=8)
    parser.add_argument("--spsa-images", type=int, default=16)
    parser.add_argument("--spsa-steps", type=int, default=20,
                        help="SPSA steps at 224 px (the digits setting runs 200)")
    parser.add_argument("--threads", default=f"1,{torch.get_num_threads()}",
                        help="comma-separated torch thread counts, each measured in turn")
    parser.add_argument("--cost-images", type=int, default=4,
                        help="images for the per-attack evaluation counts (0 skips them)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--boundary-iterations", type=int, default=5000)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    load_before = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    thread_counts = sorted({int(t) for t in str(args.threads).split(",")})
    rows = []
    for threads in thread_counts:
        for kind in ("cnn", "linear"):
            rows += run(kind, "challenge 224x224x3", 224, 3, args.grid_images, args.spsa_images,
                        args.spsa_steps, (18.0, 18.0, 30.0), (5, 5, 31), threads)
            rows += run(kind, "digits 28x28x1", 28, 1, args.grid_images, args.spsa_images, 200,
                        (10.0, 10.0, 10.0), (5, 5, 11), threads)
    torch.set_num_threads(max(thread_counts))
    table = "\n".join([
        "| setting | attack | images (ours / reference) | ours img/s | reference img/s | ratio |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    command = "python benchmarks/eval_attacks.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "write"
    ) + (" --write" if args.write else "")
    text = (
        "## Attacks\n\n"
        f"Command: `{command}`\n\n"
        f"Machine: {machine_description()}; load average before the run {load_before}.\n\n"
        "Models: `cnn` = `SmallNet` in the script (average pool, two strided convs,\n"
        "linear); `linear` = logistic regression on the pixels (the cheapest model that\n"
        "reads every pixel, so its rows measure the attack machinery itself). On a CPU\n"
        "the model's own work is the same in both implementations (same number of\n"
        "evaluations), so the heavier the model, the closer the ratio gets to 1.\n"
        "Reference: the original kit's one-image-at-a-time loops (PIL per transform over a\n"
        "process pool for the grid; one cleverhans-2.1 SPSA run per image, numpy NHWC\n"
        "model_fn, contiguous NCHW into the model). SPSA early stop disabled on both sides\n"
        "(same evaluations); default `max_batch` (256 probes at 224 px, 1024 at 28 px).\n\n"
        f"{table}\n\n"
        f"{NOTE}\n"
    )
    if args.cost_images:
        text += "\n" + suite_costs(args.cost_images, args.train_steps, args.boundary_iterations)
    print(text)
    if args.write:
        write_section("attacks", text)


if __name__ == "__main__":
    main()
