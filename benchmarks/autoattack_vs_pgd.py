"""Robust accuracy of the demo's models under llrnet's PGD attacks and the authors' AutoAttack.

For each weights file and each eps: clean, PGD-20, PGD-100 x 5 restarts,
multi-targeted PGD-100 and AutoAttack (standard) on all 108 bundled test
digits, through ``llrnet.eval.evaluate`` (resumable: rerun the same command
to continue; each (model, eps) has its own folder under --out). Prints a
markdown table of accuracy@100 (robust accuracy, %) and wall time per
attack. Needs the extra ``llrnet[autoattack]``. Train the models first::

    llrnet train --preset digits_pgd --out runs/pgd
    llrnet train --preset digits_llr --out runs/llr
    python benchmarks/autoattack_vs_pgd.py runs/pgd/final.safetensors \\
        runs/llr/final.safetensors --out runs/aa_vs_pgd --threads 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from common import machine_description

from llrnet.attacks import PGD, Identity, MultiTargetedPGD
from llrnet.attacks.autoattack import AutoAttack
from llrnet.data.digits import two_class_digits
from llrnet.eval import Suite, SuiteEntry, evaluate
from llrnet.models import load_weights

ATTACKS = ("clean", "pgd20", "pgd100x5", "mt_pgd100", "autoattack")


def suite(eps: float) -> Suite:
    """The five attacks at ``eps`` (PGD step size 2.5 eps / steps, Madry et al.)."""
    return Suite(name=f"aa_vs_pgd_{eps}", entries=(
        SuiteEntry("clean", Identity()),
        SuiteEntry("pgd20", PGD(eps, 20, 2.5 * eps / 20)),
        SuiteEntry("pgd100x5", PGD(eps, 100, 2.5 * eps / 100, restarts=5)),
        SuiteEntry("mt_pgd100", MultiTargetedPGD(eps, 100, 2.5 * eps / 100)),
        SuiteEntry("autoattack", AutoAttack(eps)),
    ), batch_size=27)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("weights", nargs="+", help="llrnet weights files (the demo's models)")
    parser.add_argument("--out", required=True, help="folder for the resumable evaluations")
    parser.add_argument("--eps", default="0.2,0.15,0.1", help="comma-separated radii")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_description())
    dataset = two_class_digits("test")
    rows: list[dict[str, Any]] = []
    for path in args.weights:
        model = load_weights(path)
        for eps in (float(e) for e in args.eps.split(",")):
            out = Path(args.out) / f"{Path(path).parent.name}_eps{eps}"
            records = evaluate(model, suite(eps), dataset, out_dir=out, seed=0, progress=False)
            row = {"model": Path(path).parent.name, "eps": eps,
                   **{name: records[name]["accuracy@100"] for name in ATTACKS},
                   **{f"{name}_s": records[name]["wall_time"] for name in ATTACKS}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| model | eps | " + " | ".join(ATTACKS) + " |")
    print("|---|---|" + "---|" * len(ATTACKS))
    for row in rows:
        cells = [f"{100 * row[n]:.1f} ({row[n + '_s']:.0f} s)" for n in ATTACKS]
        print(f"| {row['model']} | {row['eps']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
