"""Two processes (torchrun, gloo) train like one process with the same global batch.

The equivalence is exact up to float reduction order for models without batch
norm; with batch norm each process normalizes with its own shard's statistics
(per device, as DeepMind's multi-device code), which the second run exercises
(LLR with its batch-norm replay under DDP) without claiming equality.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llrnet.train import load_config, train

MODEL = "test_tiny_conv_no_bn"
SETTINGS = [
    f"model.name={MODEL}", "model.kwargs={}", "data.size=8", "batch_size=16", "steps=6",
    "checkpoint_every=3", "log_every=3", "tensorboard=false", "data.eval_images=8",
    "eval.steps=1", "eval.eps=0.1", "optim.lr=0.1", "optim.weight_decay=0.01",
    "optim.warmup_steps=2", "ema_decay=0.5",
]
LLR = [
    "model.kwargs={width: 1}", "data.size=8", "batch_size=8", "steps=2", "tensorboard=false",
    "data.eval_images=8", "eval.steps=1", "eval.eps=0.1", "task.name=llr",
    "task.options={eps: 0.1, steps: 1, warmup_steps: 0}",
]

REGISTER = f'''
import torch
from torch import nn
from llrnet.models import list_models, register_model

if "{MODEL}" not in list_models():
    @register_model("{MODEL}")
    def _tiny(*, classes: int = 2) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Softplus(), nn.Flatten(),
                             nn.Linear(4 * 6 * 6, classes))
'''

SCRIPT = REGISTER + '''
import json, sys
from llrnet.core import distributed
from llrnet.train import load_config, train

out, settings, llr_out, llr_settings = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], \\
    json.loads(sys.argv[4])
torch.set_num_threads(1)
train(load_config(None, settings), out, progress=False)
train(load_config("digits_llr", llr_settings), llr_out, progress=False)
# Under DDP every rank must hold the same parameters after training.
import torch.distributed as dist
from llrnet.models import load_weights
state = torch.load(sorted((__import__("pathlib").Path(llr_out) / "checkpoints").glob("*.pt"))[-1],
                   weights_only=True)["model"]
total = sum(float(v.double().sum()) for k, v in state.items() if "running" not in k
            and "num_batches" not in k)
# One file per rank: lines printed by two processes at once can interleave.
report = __import__("pathlib").Path(llr_out) / f"rank{distributed.rank()}.json"
report.write_text(json.dumps({"rank": distributed.rank(), "world": distributed.world_size(),
                              "checksum": total}))
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture()
def _registered() -> Iterator[None]:
    exec(REGISTER, {})  # the same test model in this process
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.usefixtures("_registered")
def test_two_gloo_processes_match_one_process(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    two = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port()), str(script),
         str(tmp_path / "two"), json.dumps(SETTINGS), str(tmp_path / "llr"), json.dumps(LLR)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # One process, in this process, while the two start up.
    one = train(load_config(None, SETTINGS), tmp_path / "one", progress=False)
    _, err = two.communicate(timeout=300)
    assert two.returncode == 0, err.decode()[-3000:]

    a = load_file(str(one.weights))
    b = load_file(str(tmp_path / "two" / "final.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), name
    assert not torch.equal(a["3.weight"], torch.zeros_like(a["3.weight"]))

    reports = [json.loads((tmp_path / "llr" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    assert all(r["world"] == 2 for r in reports)
    assert reports[0]["checksum"] == pytest.approx(reports[1]["checksum"], rel=1e-6)
