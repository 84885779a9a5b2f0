"""A real kill: ``llrnet train`` killed with SIGKILL mid-run, then ``--resume``d,
ends with weights bit-identical to an uninterrupted run (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llrnet.train import load_config, load_run_config, train

SETTINGS = [
    "steps=60", "batch_size=16", "model.kwargs={width: 1}", "data.size=8",
    "checkpoint_every=5", "keep_checkpoints=2", "log_every=10", "tensorboard=false",
    "data.eval_images=8", "eval.steps=1", "eval.eps=0.1", "optim.lr=0.02",
    "data.augment=crop", "data.pad=1",
]


def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "llrnet", "train", "--out", str(out), "--no-progress",
            "--threads", "1", *extra]


def start(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # as the subprocess (--threads 1): same kernels
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    sets = [f"--set={s}" for s in SETTINGS]
    killed = start(command(tmp_path / "killed", "--preset", "digits_standard", *sets))
    config = load_config("digits_standard", SETTINGS)
    # The uninterrupted run, in this process while the other one starts up.
    straight = train(config, tmp_path / "straight", progress=False)

    manifests = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 240
    while not any(manifests.glob("step-*.json")) and killed.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    _, err = killed.communicate()
    assert killed.returncode == -signal.SIGKILL, f"not killed mid-run: {err.decode()}"
    assert not (tmp_path / "killed" / "final.safetensors").exists()

    resumed = train(load_run_config(tmp_path / "killed"), tmp_path / "killed", resume=True,
                    progress=False)
    assert resumed.finished and resumed.step == config.steps
    a = load_file(str(straight.weights))
    b = load_file(str(resumed.weights))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
