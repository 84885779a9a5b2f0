"""fp32 vs bf16 search, in one run: attack strength (fp32-judged accuracy) and images/s.

Parts (``--part``, several allowed):

* ``digits``: the ``digits`` suite on the demo's three trained models (standard,
  PGD, LLR; ``--demo DIR`` from ``llrnet demo --out DIR`` or its training) under
  ``evaluate(precision="fp32")`` and ``evaluate(precision="bf16")`` with *every*
  attack forced to search in bf16 (SPSA included), so the per-attack policy can
  be read off. Accuracy is always judged by the fp32 model.
* ``resnet``: the ``bird_or_bicycle`` suite's attacks on a ResNet-50 v2 at 224 px
  with budgets cut to minutes (stated in the output), fp32 vs bf16 search:
  images/s and fp32-judged accuracy. No trained bird-or-bicycle weights or data
  exist offline, so the model is ``resnet50_v2_imagenet`` with a 2-class output,
  random weights and batch-norm statistics recalibrated on the images (so that
  its decisions depend on the input), the images are digits upscaled to 224 px
  RGB, and the labels are the fp32 model's own clean decisions (clean accuracy
  100% by construction; an attack's accuracy is then the share it failed to flip).
* ``whitebox``: white-box PGD (20 steps) on the demo models with the gradient
  taken through the bf16 copy vs fp32, and the LLR inner loop's objective
  (local linearity deviation, maximised by 10 PGD-style steps) in bf16 vs fp32.
* ``probes``: SPSA's loss differences at delta 0.01 through the fp32 model and its
  bf16 copy: their size against bf16's resolution, sign flips, and the cosine of
  each gradient estimate with the true gradient (digits models, the ResNet-50).
* ``forward``: ``llr_pretrain_adv`` (ResNet-152 v2) forward at batch 1, 8, 32,
  fp32 NCHW vs bf16 channels_last, and torchvision's ResNet-152 at batch 8 the
  same way (whether llrnet's model gains what a standard one gains).
* ``layout``: the ResNet-50's forward at batch 4, 16, 45 in fp32 NCHW, fp32
  channels_last and bf16 channels_last (what bounds the grid's bf16 speed-up),
  and the cut SPSA alone in an fp32 run (the model as given) and in a bf16 run
  (its fp32 search through the fp32 channels_last copy).
* ``corruptions``: where the corruptions attack's time goes at 224 px: each of the
  17 corruptions' own CPU time per image (the challenge's reference code, the
  same in both precisions), the ResNet-50's fp32 and bf16 forward per image at
  the attack's batch, the attack's wall time in an fp32 and a bf16 run, and the
  speed-up the fixed costs (corrupting, fp32 judgement) leave at most.

Every part prints the machine (CPU model, AMX, torch threads); ratios are
measured within one run, on a machine that may be shared.

    .venv/bin/python benchmarks/precision.py --part digits resnet whitebox probes forward \\
        --demo /tmp/demo_out [--write]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import best_times, isa, machine_description, real_looking, write_section
from torch import nn

from llrnet.attacks import (
    PGD,
    SPSA,
    Boundary,
    Chain,
    CommonCorruptions,
    Identity,
    RandomSpatial,
    SpatialGrid,
)
from llrnet.core.allocator import keep_freed_memory
from llrnet.eval import Suite, SuiteEntry, evaluate, get_suite
from llrnet.models import create_model, fast_copy, load_weights

MODELS = ("standard", "pgd", "llr")
EPS = 0.1  # the demo models' training and evaluation radius (presets digits_*)


def force_bf16(suite: Suite) -> Suite:
    """A copy of ``suite`` whose every attack (and Chain stage) searches in bf16."""
    entries = []
    for entry in suite.entries:
        attack = copy.deepcopy(entry.attack)
        for stage in getattr(attack, "stages", (attack,)):
            stage.bf16_search = True
        entries.append(SuiteEntry(entry.name, attack, entry.max_images, entry.kind))
    return Suite(suite.name, tuple(entries), suite.options, suite.batch_size, suite.shuffle)


def _run(model: Any, suite: Suite, data: Any, precision: str, images: int
         ) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory() as out:
        return evaluate(model, suite, data, out_dir=out, seed=0, max_images=images,
                        progress=False, precision=precision)


def _cell(record: dict[str, Any]) -> str:
    return f"{100 * record['accuracy@100']:.1f}"


def _compare(rows: list[tuple[str, str, dict[str, Any], dict[str, Any]]]) -> list[str]:
    """Markdown rows: model, attack, acc fp32, acc bf16 (judged fp32), flips, time ratio."""
    lines = ["| model | attack | images | accuracy, fp32 search (%) | accuracy, bf16 search "
             "(%, fp32-judged) | bf16/fp32 decisions differing | fp32 s | bf16 s | speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model, attack, a, b in rows:
        speed = a["wall_time"] / b["wall_time"] if b["wall_time"] > 0 else float("nan")
        lines.append(f"| {model} | {attack} | {a['images']} | {_cell(a)} | {_cell(b)} | "
                     f"{b['precision_disagreements']} | {a['wall_time']:.1f} | "
                     f"{b['wall_time']:.1f} | {speed:.1f}x |")
    return lines


def part_digits(demo: Path, images: int) -> str:
    from llrnet.data import two_class_digits

    data = two_class_digits("test")
    suite = get_suite("digits")
    forced = force_bf16(suite)
    rows = []
    for name in MODELS:
        model = load_weights(demo / name / "train" / "final.safetensors")
        fp32 = _run(model, suite, data, "fp32", images)
        bf16 = _run(model, forced, data, "bf16", images)
        for attack in suite.names:
            rows.append((name, attack, fp32[attack], bf16[attack]))
        print(f"digits {name} done", flush=True)
    return "\n".join([
        f"`digits` suite (its own budgets; Boundary on its first {min(images, 50)} images), "
        f"first {images} test images, demo models; bf16 forced on every attack.", "",
        *_compare(rows)])


class _Recalibrated(nn.Module):
    """Random ResNet-50 v2 with a 2-class output; its BN statistics set from ``x``."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = create_model("resnet50_v2_imagenet", num_classes=2)
        for module in self.net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # cumulative average
        self.net.train()
        with torch.no_grad():
            self.net(x)
        self.net.eval()
        with torch.no_grad():
            margin = self.net(x)
        # Centre the decisions: half the images on each side, as a trained model's would be.
        self.register_buffer("offset", torch.stack([margin[:, 0] - margin[:, 1]]).median()
                             * torch.tensor([0.5, -0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) - self.offset


RESNET_BUDGETS = {"grid": "challenge grid at granularity (3, 3, 5) = 45 transforms",
                  "corruptions": "the 17 challenge corruptions, severity 1",
                  "spsa": "SPSA eps 16/255, 4 steps, 16 samples, after random spatial",
                  "boundary": "Boundary 20 iterations, 5 directions, after random spatial"}


def resnet_suite() -> Suite:
    spatial = RandomSpatial(limits=(18.0, 18.0, 30.0), border=20)
    entries = (
        SuiteEntry("clean", Identity()),
        SuiteEntry("spatial_grid", SpatialGrid("challenge", granularity=(3, 3, 5))),
        SuiteEntry("common_corruptions", CommonCorruptions(workers=0)),
        SuiteEntry("spsa_with_random_spatial",
                   Chain(spatial, SPSA(eps=16 / 255, steps=4, samples=16))),
        SuiteEntry("boundary_with_random_spatial",
                   Chain(copy.deepcopy(spatial), Boundary(threshold=10.0, iterations=20,
                                                          max_directions=5))),
    )
    return Suite("resnet50_cut", entries, batch_size=4)


def _resnet_and_images(images: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The recalibrated ResNet-50, ``images`` upscaled digits and its own clean decisions."""
    x = real_looking(max(images, 8) * 4)
    model = _Recalibrated(x[: 8 * 4])
    with torch.no_grad():
        labels = model(x).argmax(1)
    return model, x[:images], labels[:images]


def _compile_glass_blur() -> None:
    """glass_blur's numba compile (about 10 s, once per process), kept out of the timings:
    otherwise whichever precision runs first pays it."""
    from llrnet.attacks.corruptions import corrupt_image

    corrupt_image(np.zeros((32, 32, 3), dtype=np.uint8), ("glass_blur",), 1, [0])


def part_resnet(images: int) -> str:
    model, x, labels = _resnet_and_images(images)
    _compile_glass_blur()
    print(f"resnet labels (own decisions): {labels.tolist()}", flush=True)
    suite = resnet_suite()
    fp32 = _run(model, suite, (x, labels), "fp32", images)
    bf16 = _run(model, force_bf16(suite), (x, labels), "bf16", images)
    rows = [("resnet50_v2", a, fp32[a], bf16[a]) for a in suite.names]
    throughput = ["", "| attack | images/s fp32 | images/s bf16 |", "|---|---|---|"]
    for attack in suite.names:
        a, b = fp32[attack], bf16[attack]
        throughput.append(f"| {attack} | {a['images'] / a['wall_time']:.3f} | "
                          f"{b['images'] / b['wall_time']:.3f} |")
    return "\n".join([
        f"ResNet-50 v2, 224 px, {images} images, budgets cut: "
        + "; ".join(RESNET_BUDGETS.values()) + ". Random weights with recalibrated "
        "batch norm, upscaled digits, labels = the fp32 model's clean decisions (so clean "
        "accuracy is 100% by construction). bf16 forced on every attack.", "",
        *_compare(rows), *throughput])


def part_whitebox(demo: Path, images: int) -> str:
    from llrnet.data import two_class_digits

    data = two_class_digits("test")
    x, y = data.images[:images], data.labels[:images]
    lines = ["| model | PGD L-inf 0.1, 20 steps: accuracy, fp32 gradient (%) | bf16 gradient "
             "(%, fp32-judged) | fp32 s | bf16 s | LLR deviation gamma at the point found: "
             "fp32 search | bf16 search (fp32-judged) |", "|---|---|---|---|---|---|---|"]
    for name in MODELS:
        model = load_weights(demo / name / "train" / "final.safetensors").eval()
        fast = fast_copy(model, "bf16").eval()
        pgd = PGD(EPS, 20, 2.5 * EPS / 20)
        pgd(fast, x[:2], y[:2], seeds=0)  # warm-up of both paths
        pgd(model, x[:2], y[:2], seeds=0)
        result = {}
        for label, searcher in (("fp32", model), ("bf16", fast)):
            start = time.perf_counter()
            adv = pgd(searcher, x, y, seeds=0)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                accuracy = float((model(adv).argmax(1) == y).float().mean())
            result[label] = (accuracy, seconds)
        gammas = {label: _gamma_found(model, searcher, x[:32], y[:32])
                  for label, searcher in (("fp32", model), ("bf16", fast))}
        lines.append(f"| {name} | {100 * result['fp32'][0]:.1f} | {100 * result['bf16'][0]:.1f} "
                     f"| {result['fp32'][1]:.2f} | {result['bf16'][1]:.2f} | "
                     f"{gammas['fp32']:.4f} | {gammas['bf16']:.4f} |")
        print(f"whitebox {name} done", flush=True)
    return "\n".join([f"Demo models, first {images} digits test images; the LLR inner loop "
                      "(eps 0.1, 10 signed-gradient steps maximising the local linearity "
                      "deviation) on 32 images.", "", *lines])


def _gamma_found(reference: nn.Module, searcher: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 eps: float = EPS, steps: int = 10) -> float:
    """The LLR inner maximisation run on ``searcher``; gamma judged on ``reference`` (fp32)."""
    torch.manual_seed(0)
    delta = (torch.rand_like(x) * 2 - 1) * eps
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(searcher(xg), y, reduction="sum"), xg)
    with torch.no_grad():
        base = F.cross_entropy(searcher(x), y, reduction="none")
    for _ in range(steps):
        delta.requires_grad_(True)
        value = F.cross_entropy(searcher(x + delta), y, reduction="none")
        dev = (value - base - (delta * grad).flatten(1).sum(1)).abs()
        (g,) = torch.autograd.grad(dev.sum(), delta)
        delta = (delta.detach() + 0.25 * eps * g.sign()).clamp(-eps, eps)
    xr = x.clone().requires_grad_(True)
    (grad_r,) = torch.autograd.grad(F.cross_entropy(reference(xr), y, reduction="sum"), xr)
    with torch.no_grad():
        base_r = F.cross_entropy(reference(x), y, reduction="none")
        value_r = F.cross_entropy(reference(x + delta), y, reduction="none")
        dev_r = (value_r - base_r - (delta * grad_r).flatten(1).sum(1)).abs()
    return float(dev_r.mean())


def _probe_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pairs: int,
                 delta: float = 0.01) -> dict[str, float]:
    """SPSA's gradient estimate at ``x`` from ``pairs`` antithetic Rademacher probes at
    ``delta``, with the loss differences computed by the fp32 model and by its bf16 copy.

    Returns medians over images of: |loss difference| (fp32) relative to the bf16 spacing
    of the logits (2**-8 of their magnitude), the share of probe pairs whose difference
    has the other sign in bf16, and the cosines of the bf16 and fp32 estimates with the
    true (autograd, fp32) gradient and with each other.
    """
    from llrnet.attacks.parts import margin_loss

    fast = fast_copy(model, "bf16").eval()
    xg = x.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(margin_loss(model(xg), y).sum(), xg)
    generator = torch.Generator().manual_seed(0)
    rows: dict[str, list[float]] = {"ratio": [], "sign": [], "cos_fp32": [], "cos_bf16": [],
                                    "cos_both": []}
    with torch.no_grad():
        for i in range(x.shape[0]):
            v = (torch.randint(0, 2, (pairs, *x.shape[1:]), generator=generator) * 2 - 1) * delta
            probes = torch.cat([x[i] + v, x[i] - v])
            labels = y[i].repeat(2 * pairs)
            estimates, diffs = {}, {}
            for label, m in (("fp32", model), ("bf16", fast)):
                loss = margin_loss(m(probes), labels)
                diffs[label] = loss[:pairs] - loss[pairs:]
                estimates[label] = (diffs[label].view(-1, *[1] * (x.dim() - 1)) * v).mean(0)
            spacing = float(model(x[i:i + 1]).abs().max()) * 2 ** -8
            rows["ratio"].append(float(diffs["fp32"].abs().median()) / spacing)
            rows["sign"].append(float((diffs["fp32"].sign() != diffs["bf16"].sign())
                                      .float().mean()))
            flat = {k: e.flatten() for k, e in estimates.items()}
            rows["cos_fp32"].append(float(F.cosine_similarity(flat["fp32"], true[i].flatten(), 0)))
            rows["cos_bf16"].append(float(F.cosine_similarity(flat["bf16"], true[i].flatten(), 0)))
            rows["cos_both"].append(float(F.cosine_similarity(flat["fp32"], flat["bf16"], 0)))
    return {k: float(torch.tensor(v).median()) for k, v in rows.items()}


def part_probes(demo: Path, images: int) -> str:
    """SPSA probe differences at delta 0.01: do they survive bf16?"""
    from llrnet.data import two_class_digits

    data = two_class_digits("test")
    cases: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    for name in MODELS:
        model = load_weights(demo / name / "train" / "final.safetensors").eval()
        cases.append((f"digits {name}", model, data.images[:images], data.labels[:images]))
    x = real_looking(32)
    resnet = _Recalibrated(x)
    with torch.no_grad():
        labels = resnet(x).argmax(1)
    cases.append(("resnet50_v2 224 px", resnet, x[:min(images, 4)], labels[:min(images, 4)]))
    lines = ["| model | median abs probe difference / bf16 logit spacing | probe pairs with the "
             "sign flipped in bf16 (%) | cos(fp32 estimate, true gradient) | cos(bf16 estimate, "
             "true gradient) | cos(bf16, fp32 estimate) |", "|---|---|---|---|---|---|"]
    for name, model, xs, ys in cases:
        stats = _probe_stats(model, xs, ys, pairs=32)
        lines.append(f"| {name} | {stats['ratio']:.2f} | {100 * stats['sign']:.1f} | "
                     f"{stats['cos_fp32']:.3f} | {stats['cos_bf16']:.3f} | "
                     f"{stats['cos_both']:.3f} |")
        print(f"probes {name} done", flush=True)
    return "\n".join(["SPSA's probe differences (32 antithetic pairs at delta 0.01, margin loss, "
                      f"at the clean images; medians over {images} digits images and 4 ResNet "
                      "images): the fp32 model vs its bf16 copy.", "", *lines])


#: Forwards per image of each bird_or_bicycle attack at its upper bound (docs/benchmarks.md,
#: "Evaluation cost"), plus the one scoring forward, and the suite's image counts.
SUITE_FORWARDS = {"clean": (0 + 1, 250), "spatial_grid": (775 + 1, 250),
                  "common_corruptions": (17 + 1, 250),
                  "spsa_with_random_spatial": (13_000 + 1, 250),
                  "boundary_with_random_spatial": (125_000 + 1, 100)}
FORWARD_GFLOPS = 23.02  # one 224x224 forward of llr_pretrain_adv (docs/benchmarks.md)
H100_PEAK_TFLOPS = {"bf16": 989.4, "tf32": 494.7}  # H100 SXM, dense, NVIDIA's data sheet
BF16_ATTACKS = ("clean", "spatial_grid", "common_corruptions", "boundary_with_random_spatial")


def projection(fp32_rate: float, bf16_rate: float) -> str:
    """The full suite's wall time for llr_pretrain_adv, projected from forward rates."""
    total = sum(per * images for per, images in SUITE_FORWARDS.values())
    fp32_hours = total / fp32_rate / 3600
    mixed = sum(per * images / (bf16_rate if name in BF16_ATTACKS else fp32_rate)
                for name, (per, images) in SUITE_FORWARDS.items()) / 3600
    all_bf16 = total / bf16_rate / 3600
    flops = total * FORWARD_GFLOPS * 1e9
    h100 = {k: flops / (v * 1e12) / 3600 for k, v in H100_PEAK_TFLOPS.items()}
    spsa = SUITE_FORWARDS["spsa_with_random_spatial"]
    spsa_flops = spsa[0] * spsa[1] * FORWARD_GFLOPS * 1e9
    h100["policy"] = ((flops - spsa_flops) / H100_PEAK_TFLOPS["bf16"]
                      + spsa_flops / H100_PEAK_TFLOPS["tf32"]) / 1e12 / 3600
    return "\n".join([
        f"**Projection, not a measurement**: the full `bird_or_bicycle` suite for "
        f"`llr_pretrain_adv` at the attacks' upper-bound budgets is {total:,} forwards "
        f"({flops / 1e15:.0f} PFLOPs). From the batch-32 forward rates above, on this CPU: "
        f"all fp32 {fp32_hours:,.0f} h ({fp32_hours / 24:.1f} days); bf16 search with SPSA in "
        f"fp32 (the policy) {mixed:,.0f} h ({mixed / 24:.1f} days); everything in bf16 "
        f"{all_bf16:,.0f} h. Attack-side work (transforms, corruptions, Boundary's "
        "bookkeeping) is left out, and Boundary and SPSA usually stop early on weak models.",
        "",
        f"On one H100 SXM at its published dense peak ({H100_PEAK_TFLOPS['bf16']} TFLOP/s "
        f"bf16, {H100_PEAK_TFLOPS['tf32']} TFLOP/s TF32), a lower bound: {h100['bf16']:.2f} h "
        f"all bf16, {h100['tf32']:.2f} h all TF32, {h100['policy']:.2f} h with the policy "
        f"(SPSA in TF32, the rest bf16); at an assumed 40% of peak {h100['bf16'] / 0.4:.2f}, "
        f"{h100['tf32'] / 0.4:.2f} and {h100['policy'] / 0.4:.2f} h. CUDA paths cannot be "
        "timed on this machine."])


def _best_times(models: dict[str, nn.Module], x: torch.Tensor, repeats: int,
                warmup: bool = True) -> dict[str, float]:
    """Each model's shortest forward of ``x`` (s) over ``repeats`` interleaved rounds,
    after one untimed round when ``warmup``."""
    with torch.inference_mode():
        return best_times({name: partial(m, x) for name, m in models.items()}, repeats, warmup)


def part_forward(repeats: int) -> str:
    model = create_model("llr_pretrain_adv").eval()
    fast = fast_copy(model, "bf16").eval()
    rates = (float("nan"), float("nan"))
    lines = ["| batch | fp32 NCHW img/s | bf16 channels_last img/s | speed-up | max abs "
             "logit diff |", "|---|---|---|---|---|"]
    for batch in (1, 8, 32):
        x = torch.rand(batch, 3, 224, 224)
        with torch.inference_mode():
            ref, out = model(x), fast(x)  # also the warm-up of the timings
        best = _best_times({"fp32": model, "bf16": fast}, x, repeats, warmup=False)
        a, b = best["fp32"], best["bf16"]
        lines.append(f"| {batch} | {batch / a:.2f} | {batch / b:.2f} | {a / b:.1f}x | "
                     f"{float((ref - out).abs().max()):.3g} |")
        rates = (batch / a, batch / b)
        print(f"forward batch {batch} done", flush=True)
    return "\n".join([f"`llr_pretrain_adv` (random weights), best of {repeats}, interleaved.",
                      "", *lines, "", _torchvision_reference(repeats), "", projection(*rates)])


def _torchvision_reference(repeats: int, batch: int = 8) -> str:
    """torchvision's ResNet-152 (random weights) at ``batch``: the same bf16 gain as ours?"""
    import torchvision

    model = torchvision.models.resnet152().eval()
    fast = fast_copy(model, "bf16").eval()
    x = torch.rand(batch, 3, 224, 224)
    best = _best_times({"fp32": model, "bf16": fast}, x, repeats)
    return (f"For reference, torchvision's ResNet-152 (random weights) at batch {batch}, best "
            f"of {repeats}, interleaved: fp32 NCHW {batch / best['fp32']:.2f} images/s, bf16 "
            f"channels_last {batch / best['bf16']:.2f}, {best['fp32'] / best['bf16']:.1f}x.")


def _best_runs(model: nn.Module, suites: dict[str, Suite], data: Any, images: int,
               repeats: int) -> dict[str, tuple[float, dict[str, Any]]]:
    """Per precision, the shortest wall time (s) of the suites' one attack over ``repeats``
    interleaved evaluations, and that attack's last record."""
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for _ in range(repeats):
        for precision, suite in suites.items():
            (record,) = _run(model, suite, data, precision, images).values()
            wall = min(record["wall_time"], best.get(precision, (float("inf"),))[0])
            best[precision] = (wall, record)
    return best


def part_layout(images: int, repeats: int) -> str:
    model, x, labels = _resnet_and_images(images)
    copies = {"fp32 NCHW": model, "fp32 channels_last": fast_copy(model, "fp32").eval(),
              "bf16 channels_last": fast_copy(model, "bf16").eval()}
    lines = ["| batch | " + " | ".join(f"{name} img/s" for name in copies) + " |",
             "|---|---|---|---|"]
    for batch in (4, 16, 45):
        xb = torch.rand(batch, 3, 224, 224)
        best = _best_times(copies, xb, repeats)
        lines.append(f"| {batch} | " + " | ".join(f"{batch / t:.1f}" for t in best.values())
                     + " |")
        print(f"layout batch {batch} done", flush=True)
    entry = next(e for e in resnet_suite().entries if e.name == "spsa_with_random_spatial")
    suite = Suite("spsa_only", (entry,), batch_size=4)
    best = _best_runs(model, {"fp32": suite, "bf16": suite}, (x, labels), images, repeats)
    (a, fp32_record), (b, bf16_record) = best["fp32"], best["bf16"]
    accuracy = {"fp32": 100 * fp32_record["accuracy@100"],
                "bf16": 100 * bf16_record["accuracy@100"]}
    return "\n".join([
        f"ResNet-50 v2 forward at 224 px (random weights, recalibrated batch norm), best of "
        f"{repeats}, interleaved.", "", *lines, "",
        f"{RESNET_BUDGETS['spsa']}, {images} images, alone: fp32 run (the model as given) "
        f"{a:.1f} s, accuracy {accuracy['fp32']:.1f}%; bf16 run (SPSA searches in fp32 through "
        f"the fp32 channels_last copy) {b:.1f} s, accuracy {accuracy['bf16']:.1f}%: "
        f"{a / b:.2f}x (best of {repeats}, interleaved)."])


def _corruption_costs(image: torch.Tensor, repeats: int) -> dict[str, float]:
    """Seconds per 224-px image of each challenge corruption (best of ``repeats`` seeds)."""
    from llrnet.attacks.corruptions import CHALLENGE_CORRUPTIONS, corrupt_image

    levels = (image * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    _compile_glass_blur()
    costs = {}
    for name in CHALLENGE_CORRUPTIONS:
        times = []
        for seed in range(repeats):
            start = time.perf_counter()
            corrupt_image(levels, (name,), 1, [seed])
            times.append(time.perf_counter() - start)
        costs[name] = min(times)
    return costs


def part_corruptions(images: int, repeats: int) -> str:
    model, x, labels = _resnet_and_images(images)
    costs = _corruption_costs(x[0], repeats)
    corrupt_s = sum(costs.values())
    ranked = sorted(costs.items(), key=lambda item: -item[1])
    entry = next(e for e in resnet_suite().entries if e.name == "common_corruptions")
    # The batch the attack classifies: every corruption of the chunk's images at once.
    xb = entry.attack.corrupt(x, list(range(images))).flatten(0, 1)
    batch = len(xb)
    copies = {"fp32": model, "bf16": fast_copy(model, "bf16").eval()}
    forward = {name: t / batch for name, t in _best_times(copies, xb, repeats).items()}
    only = Suite("corruptions_only", (entry,), batch_size=images)
    best = _best_runs(model, {"fp32": only, "bf16": force_bf16(only)}, (x, labels), images,
                      repeats)
    a, b = (best[p][0] / images for p in ("fp32", "bf16"))
    fixed = corrupt_s + forward["fp32"]  # corrupting + the fp32 judgement of the chosen image
    return "\n".join([
        f"ResNet-50 v2 at 224 px, the 17 challenge corruptions at severity 1, {images} images, "
        f"best of {repeats}.", "",
        "| per 224-px image | seconds |", "|---|---|",
        f"| the 17 corruptions (CPU, same in both precisions) | {corrupt_s:.3f} |",
        *(f"| - {name} | {t:.4f} |" for name, t in ranked[:4]),
        f"| one fp32 forward (batch {batch}) | {forward['fp32']:.4f} |",
        f"| one bf16 channels_last forward (batch {batch}) | {forward['bf16']:.4f} |",
        f"| the attack in an fp32 run (17 fp32 forwards + corrupting + judgement) | {a:.3f} |",
        f"| the attack in a bf16 run (17 bf16 forwards + corrupting + fp32 judgement) | "
        f"{b:.3f} |", "",
        f"Speed-up of the attack {a / b:.2f}x (forward alone "
        f"{forward['fp32'] / forward['bf16']:.2f}x). With an infinitely fast bf16 forward the "
        f"fixed costs (corrupting {corrupt_s:.3f} s, fp32 judgement {forward['fp32']:.3f} s) "
        f"would still cap it at {a / fixed:.1f}x on this machine."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = ["digits", "resnet", "whitebox", "probes", "forward", "layout", "corruptions"]
    parser.add_argument("--part", nargs="+", default=parts, choices=parts)
    parser.add_argument("--demo", type=Path, default=Path("demo_out"),
                        help="the demo's output folder (DIR/<model>/train/final.safetensors)")
    parser.add_argument("--digits-images", type=int, default=108)
    parser.add_argument("--resnet-images", type=int, default=4)
    parser.add_argument("--probe-images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also save the sections here")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    keep_freed_memory()  # as `llrnet eval` does (llrnet.core.allocator): speed only
    header = f"Machine: {machine_description()}; {isa()}."
    print(header, flush=True)
    sections = {}
    for part in args.part:
        if part == "digits":
            text = part_digits(args.demo, args.digits_images)
        elif part == "resnet":
            text = part_resnet(args.resnet_images)
        elif part == "whitebox":
            text = part_whitebox(args.demo, args.digits_images)
        elif part == "probes":
            text = part_probes(args.demo, args.probe_images)
        elif part == "layout":
            text = part_layout(args.resnet_images, args.repeats)
        elif part == "corruptions":
            text = part_corruptions(args.resnet_images, args.repeats)
        else:
            text = part_forward(args.repeats)
        sections[part] = text
        print(text, flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"header": header, **sections}, indent=2))
    if args.write:
        write_section("precision", document(header, sections, " ".join(args.part)))


def document(header: str, sections: dict[str, str], parts: str) -> str:
    """The ``precision`` section of docs/benchmarks.md from the parts' texts."""
    return "\n\n".join([
        "## Search precision (fp32 vs bf16 search, `benchmarks/precision.py`)",
        f"{header} Command: `nice -n 5 .venv/bin/python benchmarks/precision.py --part {parts} "
        "--demo DEMO_OUT --write`, DEMO_OUT holding the demo's trained models (`llrnet demo "
        "--out DEMO_OUT`). Measured on a machine shared with other jobs: times swing between "
        "runs; compare the fp32 and bf16 columns of one table (one run).",
        *sections.values()])


if __name__ == "__main__":
    main()
