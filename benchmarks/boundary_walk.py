"""Time of the Boundary attack's walk at 224 px with the small CNN of eval_attacks.py.

Boundary's cost beyond the model is the candidate generation (float64, 224x224x3
per candidate); this times a short walk so changes to it can be compared, e.g.
against an older checkout with the same command. Prints the time; writes nothing.

    python benchmarks/boundary_walk.py --images 8 --iterations 60 --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch
from eval_attacks import synthetic_batch, trained_small_net

from llrnet.attacks import Boundary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = trained_small_net(300)
    x, y = synthetic_batch(5 * args.images + 32, torch.Generator().manual_seed(1))
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct], y[correct]
    attack = Boundary(threshold=0.01, iterations=args.iterations)  # never reached: full walk
    start = time.perf_counter()
    attack(model, x[: args.images], y[: args.images], seeds=0,
           pool=(x[args.images :], y[args.images :]))
    seconds = time.perf_counter() - start
    evaluations = attack.last_stats["model_evaluations"]
    print(f"{args.images} images x {args.iterations} iterations: {seconds:.1f} s, "
          f"{evaluations:.0f} model evaluations ({1000 * seconds / evaluations:.2f} ms each)")


if __name__ == "__main__":
    main()
