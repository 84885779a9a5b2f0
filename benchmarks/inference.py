"""Inference speed of ``llr_pretrain_adv`` against torchvision's ResNet-152, one run.

Measures images/s at batch 1, 8 and 32 on this CPU for:

* torchvision ``resnet152`` (fp32 eager): the reference;
* ``llr_pretrain_adv`` fp32 eager (our default path, preprocessing included);
* fast paths: channels_last, bf16 autocast, bf16 weights and inputs channels_last
  (``llrnet.models.fast_copy``, what ``--precision bf16`` runs), torch.compile (each
  also reported as max abs logit difference against fp32 eager, and as the share of
  bird/bicycle decisions that flip, on random and on real-looking inputs).

The weights are random, so the bird logit barely depends on the image; flips are
counted at the threshold 0 and at the median of the fp32 logits over the inputs
(a threshold inside the data, the hard case).

The two models are timed interleaved (reference, ours, reference, ours, ...) on
the same inputs so machine noise hits both alike; the ratio is the result. Each
fast path is timed alternately with our fp32 eager path the same way.

With ``--compile-only`` it measures only what ``--compile`` changes: ``llr_pretrain_adv``
compiled (``llrnet.models.compiled.compile_model``) against eager, in fp32 and as the
bf16 channels_last copy, at each batch size, each compiled module timed alternately with
its eager self (the ``compile`` section of docs/benchmarks.md).

Usage::

    .venv/bin/python benchmarks/inference.py [--batch-sizes 1,8,32] [--repeats 3]
        [--no-compile] [--write]
    .venv/bin/python benchmarks/inference.py --compile-only [--batch-sizes 1,8,32]
        [--repeats 2] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from common import isa, machine_description, real_looking, write_section

from llrnet.models import create_model, fast_copy, head_of
from llrnet.models.compiled import compile_model

Forward = Callable[[torch.Tensor], torch.Tensor]


def _time(forward: Forward, x: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        forward(x)
    return time.perf_counter() - start


def _paths(model: torch.nn.Module, compile_model: bool) -> dict[str, Forward]:
    def channels_last(x: torch.Tensor) -> torch.Tensor:
        return model_cl(x.contiguous(memory_format=torch.channels_last))

    def bf16(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(x).float()

    fast = fast_copy(model, "bf16").eval()
    model_cl = model.to(memory_format=torch.channels_last)
    paths: dict[str, Forward] = {"channels_last": channels_last, "bf16 autocast": bf16,
                                 "bf16 channels_last (fast_copy)": fast}
    if compile_model:
        paths["torch.compile"] = torch.compile(model)  # type: ignore[assignment]
    return paths


def _flips(model: torch.nn.Module, forward: Forward, x: torch.Tensor) -> tuple[float, float]:
    """Shares of flipped decisions: at bird logit 0 and at the fp32 logits' median (taken
    between the two middle values)."""
    head = head_of(model)
    with torch.inference_mode():
        exact = head.bird_logit(model(x)).float()
        fast = head.bird_logit(forward(x)).float()
    ordered = exact.sort().values
    middle = len(ordered) // 2
    # Between the two middle values: no input lies on the threshold itself.
    median = (ordered[middle - 1] + ordered[middle]) / 2 if len(ordered) > 1 else ordered[0]
    at_zero = float(((exact > 0) != (fast > 0)).float().mean())
    at_median = float(((exact > median) != (fast > median)).float().mean())
    return at_zero, at_median


def compile_comparison(batch_sizes: list[int], repeats: int) -> str:
    """The ``compile`` section: compiled against eager ``llr_pretrain_adv``, fp32 and bf16
    channels_last, at each batch size (ratios of the medians of interleaved timings)."""
    torch.manual_seed(0)
    fp32 = create_model("llr_pretrain_adv").eval()
    eager = {"fp32": fp32, "bf16 channels_last": fast_copy(fp32, "bf16").eval()}
    rows, first_calls = [], []
    compiled: dict[str, torch.nn.Module] = {}
    for name in eager:
        copy = create_model("llr_pretrain_adv").eval()
        copy.load_state_dict(fp32.state_dict())
        compiled[name] = copy if name == "fp32" else fast_copy(copy, "bf16").eval()
        if not compile_model(compiled[name], what=name):
            raise SystemExit(f"torch.compile cannot run here ({name})")
    for batch in batch_sizes:
        x = torch.rand(batch, 3, 224, 224)
        for name, module in eager.items():
            first_calls.append(f"{name}, batch {batch}: {_time(compiled[name], x):.1f} s")
            _time(module, x)  # warm-up
            eager_times, compiled_times = [], []
            for _ in range(repeats):
                eager_times.append(_time(module, x))
                compiled_times.append(_time(compiled[name], x))
            with torch.inference_mode():
                diff = (compiled[name](x).float() - module(x).float()).abs().max().item()
            slow, fast = statistics.median(eager_times), statistics.median(compiled_times)
            rows.append(f"| {batch} | {name} | {batch / slow:.2f} | {batch / fast:.2f} | "
                        f"{slow / fast:.3f}x | {diff:.2e} |")
            print(rows[-1], flush=True)
    sizes = ",".join(str(b) for b in batch_sizes)
    command = (f"`.venv/bin/python benchmarks/inference.py --compile-only --batch-sizes {sizes} "
               f"--repeats {repeats} --write`")
    return "\n".join([
        "## torch.compile (`llr_pretrain_adv`, `--compile`)",
        "",
        f"Machine: {machine_description()}; {isa()}. Command: {command}.",
        f"Images/s, median of {repeats} interleaved repeats (eager, compiled, eager, ...) "
        "on the same 224x224 inputs; the compiled module is the same model through "
        "`llrnet.models.compiled.compile_model` (torch.compile, default mode); the max abs "
        "logit difference is compiled against eager in the same precision.",
        "",
        "| batch | precision | eager (img/s) | compiled (img/s) | compiled / eager | "
        "max abs logit diff |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "First call at each new batch size (compiling, or recompiling for a dynamic batch "
        "dimension; not in the timings above): " + "; ".join(first_calls) + ".",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--flip-images", type=int, default=32,
                        help="random and real-looking images for the flip counts")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--compile-only", action="store_true",
                        help="only compiled vs eager, fp32 and bf16 channels_last")
    args = parser.parse_args()
    if args.compile_only:
        text = compile_comparison([int(b) for b in args.batch_sizes.split(",")], args.repeats)
        print(text)
        if args.write:
            write_section("compile", text)
        return
    torch.manual_seed(0)
    ours = create_model("llr_pretrain_adv").eval()
    reference = torchvision.models.resnet152().eval()
    rows = []
    fast_rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        x = torch.rand(batch, 3, 224, 224)
        _time(reference, x)  # warm-up
        _time(ours, x)
        ref_times, our_times = [], []
        for _ in range(args.repeats):
            ref_times.append(_time(reference, x))
            our_times.append(_time(ours, x))
        ref_speed = batch / statistics.median(ref_times)
        our_speed = batch / statistics.median(our_times)
        ratio = our_speed / ref_speed
        rows.append(f"| {batch} | {ref_speed:.2f} | {our_speed:.2f} | {ratio:.3f}x |")
        print(rows[-1], flush=True)
        with torch.inference_mode():
            exact = ours(x)
        fresh = create_model("llr_pretrain_adv").eval()
        fresh.load_state_dict(ours.state_dict())
        for name, forward in _paths(fresh, not args.no_compile).items():
            _time(forward, x)  # warm-up (compiles)
            # Interleaved with the fp32 eager path, so load on a shared machine hits both.
            times, ratios = [], []
            for _ in range(args.repeats):
                base = _time(ours, x)
                times.append(_time(forward, x))
                ratios.append(base / times[-1])
            with torch.inference_mode():
                diff = (forward(x).float() - exact).abs().max().item()
            speed = batch / statistics.median(times)
            flips = ""
            if batch == max(int(b) for b in args.batch_sizes.split(",")):
                shares = [_flips(fresh, forward, inputs) for inputs in (
                    torch.rand(args.flip_images, 3, 224, 224), real_looking(args.flip_images))]
                flips = " | ".join(f"{100 * a:.1f} / {100 * m:.1f}" for a, m in shares)
            else:
                flips = "- | -"
            ratio = statistics.median(ratios)
            fast_rows.append(
                f"| {batch} | {name} | {speed:.2f} | {ratio:.3f}x | {diff:.2e} | "
                f"{flips} |"
            )
            print(fast_rows[-1], flush=True)
    command = "`.venv/bin/python benchmarks/inference.py " + (
        f"--batch-sizes {args.batch_sizes} --repeats {args.repeats}"
        + (" --no-compile" if args.no_compile else "") + " --write`"
    )
    text = "\n".join([
        "## Inference (`llr_pretrain_adv` vs torchvision ResNet-152)",
        "",
        f"Machine: {machine_description()}; {isa()}. Command: {command}.",
        "Images/s, median of the repeats, fp32 eager, 224x224 inputs, both models timed "
        "interleaved on the same inputs. Ours includes the submission preprocessing "
        "(central crop + TF1 resize + 2x-1) and TF-SAME padding.",
        "",
        "| batch | torchvision resnet152 (img/s) | llr_pretrain_adv (img/s) | ours / torchvision |",
        "|---|---|---|---|",
        *rows,
        "",
        "Fast paths of `llr_pretrain_adv` (speed relative to our fp32 eager path, timed "
        "alternately with it, median of the per-repeat ratios; accuracy as "
        "max abs logit difference against fp32 eager on random weights; flipped bird/bicycle "
        f"decisions in % at threshold 0 / at the fp32 median, on {args.flip_images} random "
        "and real-looking (upscaled digits) images, counted at the largest batch):",
        "",
        "| batch | path | img/s | vs fp32 eager | max abs logit diff | flips, random (%) "
        "| flips, real-looking (%) |",
        "|---|---|---|---|---|---|---|",
        *fast_rows,
    ])
    print(text)
    if args.write:
        write_section("inference", text)


if __name__ == "__main__":
    main()
