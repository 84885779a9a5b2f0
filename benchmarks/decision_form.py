"""Forward speed levers for decision-based attacks on the digits WRN-10-1, on a CPU.

Images per CPU second of the benchmark thread (one torch thread; CPU time, because a
crowded machine's wall time mostly measures the scheduler) of the model as given and
of variants: batch norms folded, ``softplus_inference``, both, the decision form
(both + channels_last, ``llrnet.models.precision.decision_form``), ``torch.jit``
freezing, ``torch.inference_mode``, oneDNN off, torch's ``F.softplus``, the bf16
copy; then the decision form's call size. Every variant runs once per round,
interleaved; each figure is the median over rounds of the per-round ratio to the
model as given at the same call size (the sweep: in calls of 16, foolbox's size).

    PYTHONPATH=src python benchmarks/decision_form.py --rounds 9
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import time
from collections.abc import Callable, Iterator

import torch
from blackbox_speed import setup
from common import isa, machine_description
from torch import Tensor, nn
from torch.nn import functional as F

from llrnet.models import fast_copy, layers
from llrnet.models.precision import decision_form, fold_batch_norms


def with_activation(model: nn.Module, activation: Callable[[Tensor], Tensor]) -> nn.Module:
    """A copy of ``model`` whose softplus attributes are ``activation``."""
    out = copy.deepcopy(model)
    for module in out.modules():
        for name, value in list(vars(module).items()):
            if value is layers.softplus:
                setattr(module, name, activation)
    return out


def folded(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its declared batch norms folded."""
    out = copy.deepcopy(model)
    fold_batch_norms(out)
    return out


@contextlib.contextmanager
def mkldnn_off() -> Iterator[None]:
    """``no_grad`` with oneDNN disabled."""
    with torch.backends.mkldnn.flags(enabled=False), torch.no_grad():
        yield


def rate(model: nn.Module, images: Tensor, size: int,
         context: Callable[[], contextlib.AbstractContextManager[object]] = torch.no_grad,
         channels_last: bool = False) -> float:
    """Images per CPU second forwarding ``images`` in calls of ``size``."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    batches = [images[s : s + size].contiguous(memory_format=layout)
               for s in range(0, images.shape[0] - size + 1, size)]
    start = time.thread_time()
    with context():
        for batch in batches:
            model(batch)
    return size * len(batches) / (time.thread_time() - start)


def interleaved(cases: dict[str, Callable[[], float]], baseline: str, rounds: int
                ) -> dict[str, float]:
    """Median over ``rounds`` of each case's rate over ``baseline``'s in the same round."""
    ratios: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        rates = {name: case() for name, case in cases.items()}
        for name in cases:
            ratios[name].append(rates[name] / rates[baseline])
    return {name: statistics.median(values) for name, values in ratios.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = "/".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{machine_description()}\n{isa()}\nload average before the run {load}")
    model, _, _, pool, _, _ = setup("digits", 16)
    images = pool.repeat(1 + args.images // pool.shape[0], 1, 1, 1)[: args.images]
    jit = torch.jit.freeze(torch.jit.trace(copy.deepcopy(model), images[:64]))
    variants: dict[str, Callable[[int], float]] = {
        "model as given": lambda n: rate(model, images, n),
        "batch norms folded": lambda n: rate(fold, images, n),
        "softplus_inference": lambda n: rate(fast_softplus, images, n),
        "both": lambda n: rate(both, images, n),
        "decision form (both + channels_last)": lambda n: form_rate(n),
        "torch.jit.trace + freeze": lambda n: rate(jit, images, n),
        "torch.inference_mode": lambda n: rate(model, images, n, torch.inference_mode),
        "oneDNN off": lambda n: rate(model, images, n, mkldnn_off),
        "F.softplus": lambda n: rate(torch_softplus, images, n),
        "bf16 channels_last copy": lambda n: rate(bf16, images, n),
    }
    fold = folded(model)
    fast_softplus = with_activation(model, layers.softplus_inference)
    both = with_activation(folded(model), layers.softplus_inference)
    torch_softplus = with_activation(model, F.softplus)
    bf16 = fast_copy(model, "bf16").eval()

    def form_rate(size: int) -> float:
        with decision_form(model):
            return rate(model, images, size, channels_last=True)

    print("\n| variant | calls of 16 | calls of 64 | calls of 128 |\n|---|---|---|---|")
    columns = [interleaved({name: (lambda f=f, n=n: f(n)) for name, f in variants.items()},
                           "model as given", args.rounds) for n in (16, 64, 128)]
    for name in variants:
        print(f"| {name} | " + " | ".join(f"{c[name]:.2f}x" for c in columns) + " |")
    sizes = (16, 32, 64, 80, 96, 128, 160, 192, 256)
    sweep = {"model as given, 16": lambda: rate(model, images, 16)}
    sweep |= {f"model as given, {n}": (lambda n=n: rate(model, images, n)) for n in (64,)}
    sweep |= {f"decision form, {n}": (lambda n=n: form_rate(n)) for n in sizes}
    ratios = interleaved(sweep, "model as given, 16", args.rounds)
    print("\nagainst the model as given in calls of 16: " +
          ", ".join(f"{name} {value:.2f}x" for name, value in ratios.items()))


if __name__ == "__main__":
    main()
