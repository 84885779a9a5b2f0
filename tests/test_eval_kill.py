"""``llrnet eval`` killed with SIGKILL mid-attack, then rerun: results.json equals an
uninterrupted run's (times aside), and the killed write's temporary is gone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from llrnet.cli import main
from llrnet.models import create_model, save_weights
from process_helpers import sigkill_at

# The real CLI, stopped for good while writing pgd's chunk 2 (chunks 0 and 1 are saved).
STOP_MID_ATTACK = """
import os, sys, time
from pathlib import Path
import llrnet.eval.state as state
real = state.save_file
def save_file(tensors, path, metadata=None):
    real(tensors, path, metadata=metadata)
    if metadata.get("attack") == "pgd" and metadata.get("chunk") == "2":
        # The marker appears whole or not at all (the parent reads it once it exists).
        Path(sys.argv[1] + ".part").write_text(path)
        os.replace(sys.argv[1] + ".part", sys.argv[1])
        time.sleep(600)
state.save_file = save_file
from llrnet.cli import main
sys.exit(main(sys.argv[2:]))
"""


def untimed(path: Path) -> dict[str, Any]:
    results = json.loads(path.read_text())
    for record in results["attacks"].values():
        record.pop("wall_time")
    return results


def eval_killed_mid_attack(tmp_path: Path, *extra: str,
                           env: dict[str, str] | None = None) -> Callable[[Path], list[str]]:
    """A WRN-10-1 weights file evaluated with ``llrnet eval --suite linf`` (8 images in
    chunks of 2, ``extra`` appended) into ``tmp_path/straight``, and in a child process
    (``env``) into ``tmp_path/killed``, SIGKILLed while writing pgd's chunk 2 (its
    temporary's path is in ``tmp_path/writing``). Returns the CLI arguments for an
    output folder, to rerun the killed one."""
    torch.manual_seed(0)
    weights = tmp_path / "digits.safetensors"
    save_weights(create_model("digits_wrn", depth=10, width=1), weights)
    marker = tmp_path / "writing"

    def args(out: Path) -> list[str]:
        return ["eval", "--suite", "linf", "--weights", str(weights), "--out", str(out),
                "--max-images", "8", "--batch-size", "2", "--no-progress", *extra]

    child = subprocess.Popen([sys.executable, "-c", STOP_MID_ATTACK, str(marker),
                              *args(tmp_path / "killed")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert main(args(tmp_path / "straight")) == 0
    sigkill_at(child, marker, seconds=240, what="the attack never reached chunk 2")
    return args


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_sigkill_mid_attack_then_rerun_matches(tmp_path: Path) -> None:
    args = eval_killed_mid_attack(tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    marker = tmp_path / "writing"
    state = tmp_path / "killed" / "state" / "pgd"
    assert sorted(p.name for p in state.glob("chunk_*")) == ["chunk_00000.safetensors",
                                                            "chunk_00001.safetensors"]
    written = marker.read_text()
    assert written and Path(written).is_file()  # the temporary of chunk 2
    assert not (tmp_path / "killed" / "results.json").exists()

    assert main(args(tmp_path / "killed")) == 0
    assert untimed(tmp_path / "killed" / "results.json") == \
        untimed(tmp_path / "straight" / "results.json")
    assert not [p for p in state.iterdir() if p.name.endswith(".tmp")]
