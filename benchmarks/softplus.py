"""torch's softplus against llrnet's (``llrnet.models.layers.softplus``), per element.

On one torch thread, an activation of the digits Wide-ResNet's size
(256 x 16 x 28 x 28 float32): forward, forward + backward, and ``log1p`` alone
(the op inside torch's CPU softplus). Each is timed in this process (torch's
default kernels for this CPU) and in a child process with
``ATEN_CPU_CAPABILITY=avx2`` (the AVX2 kernels), so one run shows whether this
CPU's AVX-512 ``log1p`` is the slow part. Best of ``--repeats`` interleaved rounds,
in ns per element.

    .venv/bin/python benchmarks/softplus.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from common import best_times, isa, machine_description

from llrnet.models.layers import softplus

SHAPE = (256, 16, 28, 28)


def _backward(act: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        leaf = x.detach().requires_grad_(True)
        act(leaf).sum().backward()
    return run


def measure(repeats: int) -> dict[str, float]:
    """ns per element of each op under this process's CPU kernels."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(SHAPE) * 3
    n = x.numel()
    with torch.no_grad():
        forward = best_times({"F.softplus": lambda: F.softplus(x),
                              "llrnet softplus": lambda: softplus(x),
                              "log1p": lambda: torch.log1p(x.abs())}, repeats)
    both = best_times({"F.softplus fwd+bwd": _backward(F.softplus, x),
                       "llrnet softplus fwd+bwd": _backward(softplus, x)}, repeats)
    return {op: seconds / n * 1e9 for op, seconds in {**forward, **both}.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                          **measure(args.repeats)}))
        return
    default = {"capability": torch.backends.cpu.get_cpu_capability(), **measure(args.repeats)}
    child = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(args.repeats)],
                           env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"},
                           capture_output=True, text=True, check=True)
    avx2 = json.loads(child.stdout)
    print(f"Machine: {machine_description()}; {isa()}. Shape {list(SHAPE)} float32, "
          f"best of {args.repeats}, ns per element.")
    print()
    print(f"| op | {default['capability']} kernels | {avx2['capability']} kernels |")
    print("|---|---|---|")
    for op in default:
        if op != "capability":
            print(f"| {op} | {default[op]:.2f} | {avx2[op]:.2f} |")


if __name__ == "__main__":
    main()
