"""Two processes under torchrun (gloo, CPU) give the results of one.

This file is also the worker script: ``torchrun --nproc_per_node 2
tests/test_eval_distributed.py OUT`` runs :func:`run` on each rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn


def data() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(22, 1, 8, 8, generator=generator)
    return images, (images[..., :4].mean(dim=(1, 2, 3)) > 0.5).long()


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))


def run(out_dir: str) -> dict[str, Any]:
    from llrnet.attacks import PGD, Identity
    from llrnet.eval import Suite, SuiteEntry, evaluate

    suite = Suite("dist", (SuiteEntry("clean", Identity(), kind="clean"),
                           SuiteEntry("pgd", PGD(0.1, 3, 0.04), kind="white_box",
                                      max_images=17)), batch_size=4)
    return evaluate(model(), suite, data(), out_dir=out_dir, seed=3, progress=False)


def without_times(path: Path) -> dict[str, Any]:
    results = json.loads(path.read_text())
    for record in results["attacks"].values():
        record.pop("wall_time")
    return results


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_equal_one(tmp_path: Path) -> None:
    here = Path(__file__).parent  # this file's folder and this checkout's src (not another)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(here), str(here.parent / "src")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--standalone", __file__, str(tmp_path / "two")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    run(str(tmp_path / "one"))
    two = without_times(tmp_path / "two/results.json")
    assert two == without_times(tmp_path / "one/results.json")
    assert two["attacks"]["pgd"]["images"] == 17
    config = json.loads((tmp_path / "two/config.json").read_text())
    assert config["processes"] == 2
    # Each rank wrote its own chunks: 0, 2, 4 by rank 0 and 1, 3 by rank 1.
    assert len(list((tmp_path / "two/state/clean").glob("chunk_*"))) == 6


if __name__ == "__main__":
    run(sys.argv[1])
