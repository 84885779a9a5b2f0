"""What the bird_or_bicycle suite costs: model evaluations per image, and FLOPs for LLR.

1. Train a small, fast 224x224 classifier (two-class digits 6 vs 7, upsampled
   to 224x224 RGB: real images, no download) for a few epochs.
2. Run the ``bird_or_bicycle`` suite on it with llrnet's runner (reduced image
   counts, see --images) and read the model evaluations each attack actually
   spent (counted by the attack base class, early stops included).
3. Count the FLOPs of one 224x224 forward of ``llr_pretrain_adv`` (ResNet-152 v2)
   with ``torch.utils.flop_counter.FlopCounterMode`` and scale: measured
   evaluations/image x suite images x FLOPs, next to the upper bound
   from docs/challenge.md section 4 (no early stop anywhere).

Writes the ``## Evaluation cost`` section of docs/benchmarks.md with --write-docs.

    .venv/bin/python benchmarks/eval_cost.py --images 16 --boundary-images 8 --write-docs

The run's state lives in --out, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_description, write_section

# Full warm-up suite sizes (docs/challenge.md section 4) and their per-image upper bounds
# on model evaluations (what a model that never lets an attack stop early costs).
SUITE_IMAGES = {"clean": 250, "spatial_grid": 250, "common_corruptions": 250,
                "spsa_with_random_spatial": 250, "boundary_with_random_spatial": 100}
UPPER_BOUND = {
    "clean": (0, "no attack"),
    "spatial_grid": (775, "775 transforms"),
    "common_corruptions": (17, "17 corruptions"),
    "spsa_with_random_spatial": (200 * 65, "200 steps x (64 probes + 1)"),
    "boundary_with_random_spatial": (5000 * 25, "5,000 iterations x 25 candidates"),
}


class SmallNet(nn.Module):
    """224x224x3 in [0, 1] -> 2 logits: 8x average pooling, then a small CNN (fast on CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(8),
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(32, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(2 * x - 1))


def digits_224(split: Literal["train", "test"]) -> tuple[Tensor, Tensor]:
    from llrnet.data import two_class_digits

    data = two_class_digits(split)
    images = F.interpolate(data.images, size=(224, 224), mode="bilinear", align_corners=False)
    return images.clamp(0, 1).repeat(1, 3, 1, 1), data.labels


def train(model: nn.Module, images: Tensor, labels: Tensor, epochs: int) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(32):
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def llr_forward_flops() -> int:
    from llrnet.models import BirdOrBicycleClassifier, create_model
    from llrnet.models.heads import ChallengeView

    classifier = create_model("llr_pretrain_adv")
    assert isinstance(classifier, BirdOrBicycleClassifier)
    model = ChallengeView(classifier).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, 224, 224))
    return int(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="test images per attack")
    parser.add_argument("--boundary-images", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", default="bench_out/eval_cost")
    parser.add_argument("--attacks", default=None,
                        help="comma-separated subset of the suite (others are reported as not "
                        "measured); the state in --out is shared between subsets")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    from llrnet.eval import accuracy_at_coverage, evaluate, format_table, get_suite

    torch.manual_seed(0)
    train_x, train_y = digits_224("train")
    test_x, test_y = digits_224("test")
    model = SmallNet()
    start = time.perf_counter()
    train(model, train_x, train_y, args.epochs)
    train_seconds = time.perf_counter() - start
    with torch.no_grad():
        clean_accuracy = accuracy_at_coverage(model(test_x), test_y, 1.0)
    print(f"small model trained in {train_seconds:.0f}s, clean test accuracy "
          f"{clean_accuracy:.3f}", flush=True)

    suite = get_suite("bird_or_bicycle", boundary_images=args.boundary_images)
    attacks = None if args.attacks is None else args.attacks.split(",")
    results = evaluate(model, suite, (test_x, test_y), out_dir=args.out, seed=0,
                       max_images=args.images, batch_size=8, attacks=attacks)
    print(format_table(results), flush=True)
    flops = llr_forward_flops()
    print(f"llr_pretrain_adv: {flops / 1e9:.2f} GFLOPs per 224x224 forward", flush=True)

    rows = []
    measured_total = bound_total = 0.0
    unmeasured = []
    for name in suite.names:
        bound, formula = UPPER_BOUND[name]
        images = SUITE_IMAGES[name]
        # +1: the runner's scoring forward of each final image.
        upper = (bound + 1) * images * flops
        bound_total += upper
        if name not in results:
            unmeasured.append(name)
            measured_total += upper
            rows.append(f"| {name} | not measured | - | {bound:,} ({formula}) | {images} "
                        f"| ({upper / 1e12:,.1f}) | {upper / 1e12:,.1f} |")
            continue
        record = results[name]
        per_image = record["model_evaluations_per_image"]
        measured = (per_image + 1) * images * flops
        measured_total += measured
        rows.append(f"| {name} | {record['images']} | {per_image:,.1f} | {bound:,} ({formula}) "
                    f"| {images} | {measured / 1e12:,.1f} | {upper / 1e12:,.1f} |")
    note = ("" if not unmeasured else
            f" Not measured within this run's time budget: {', '.join(unmeasured)}; "
            "the measured total counts them at their upper bound (in parentheses).")
    markdown = "\n".join([
        "## Evaluation cost",
        "",
        "Model evaluations (images forwarded) per image that each attack of the "
        "`bird_or_bicycle` suite actually spent, counted by the attack base class (early "
        "stops included), on a small trained model: a 3-layer CNN on 8x-average-pooled "
        f"224x224 inputs, trained {args.epochs} epochs on the two-class digits (6 vs 7) "
        f"upsampled to 224x224 RGB (clean test accuracy {clean_accuracy:.3f}). "
        f"**Reduced image counts**: {args.images} test images per attack and "
        f"{min(args.boundary_images, args.images)} for Boundary (the suite uses 250 and 100). "
        "The weak model lets SPSA and Boundary stop early; a robust model such as "
        "`llr_pretrain_adv` does not, so its cost is close to the upper bound column." + note,
        "",
        f"FLOPs of one 224x224 forward of `llr_pretrain_adv` (ResNet-152 v2, with the "
        f"crop/resize preprocessing) counted by `torch.utils.flop_counter.FlopCounterMode`: "
        f"**{flops / 1e9:.2f} GFLOPs** (multiply-add = 2 FLOPs). Suite totals add one scoring "
        "forward per image and attack; no attack of this suite needs backward passes.",
        "",
        "| attack | images measured | evals/image measured | evals/image upper bound "
        "| suite images | TFLOPs at measured rate | TFLOPs at upper bound |",
        "|---|---|---|---|---|---|---|",
        *rows,
        f"| **total** | | | | | **{measured_total / 1e12:,.1f}** | "
        f"**{bound_total / 1e12:,.1f}** |",
        "",
        f"At the upper bound the suite is {bound_total / flops:,.0f} forwards of ResNet-152, "
        f"about {bound_total / 1e15:,.1f} PFLOPs; dominated by Boundary "
        "(100 x 125,000) and SPSA (250 x 13,000).",
        "",
        f"Machine: {machine_description()}; shared with other jobs while measured, so wall "
        "times in results.json are not meaningful here.",
        "",
        "Command: `.venv/bin/python benchmarks/eval_cost.py "
        f"--images {args.images} --boundary-images {args.boundary_images}"
        + ("" if args.attacks is None else f" --attacks {args.attacks}") + " --write-docs`",
    ])
    print(markdown)
    (Path(args.out) / "eval_cost.json").write_text(json.dumps(
        {"flops_per_forward": flops, "clean_accuracy": clean_accuracy,
         "evaluations_per_image": {n: r["model_evaluations_per_image"]
                                   for n, r in results.items()}}, indent=2))
    if args.write_docs:
        write_section("evaluation-cost", markdown)


if __name__ == "__main__":
    main()
