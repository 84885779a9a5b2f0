"""Tasks under DistributedDataParallel (gloo, 2 CPU processes): each rank's LLR step
uses its own batch-norm statistics, and the all-reduced gradient is the mean of
the per-rank single-process gradients."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from llrnet.train.bn_replay import BatchNormReplay
from llrnet.train.tasks import LLRTask, LLRTerm, PGDTask, StandardTask, TRADESTask

WORLD = 2
TASKS = {
    "llr": LLRTask(eps=0.1, steps=2, warmup_steps=0),
    "pgd": PGDTask(eps=0.1, steps=2, step_size=0.05),
    "trades": TRADESTask(eps=0.1, steps=2, step_size=0.05),
    "standard": StandardTask(),
    "pgd_llr_term": PGDTask(eps=0.1, steps=1, step_size=0.1, llr=LLRTerm(steps=1)),
}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Softplus(),
        nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
    ).train()


def _local_batch(rank: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.rand(6, 1, 6, 6, generator=g) * (1 + rank)  # different statistics per rank
    return x.clamp(0, 1), torch.randint(0, 3, (6,), generator=g)


def _grads(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()
            if p.grad is not None}


def _worker(rank: int, store_path: str, out_dir: str) -> None:
    store = dist.FileStore(store_path, WORLD)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD)
    try:
        for name, task in TASKS.items():
            ddp = DistributedDataParallel(_net())
            assert len(BatchNormReplay(ddp).layers) == 1
            torch.manual_seed(10 + rank)
            task(ddp, _local_batch(rank), 0)["loss"].backward()
            save_file(_grads(ddp.module), os.path.join(out_dir, f"{name}_{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_gradients_are_the_mean_of_per_rank_gradients(tmp_path: Path) -> None:
    # spawn, not fork: forking a process whose OpenMP pool already ran deadlocks.
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    for name, task in TASKS.items():
        per_rank = []
        for rank in range(WORLD):
            model = _net()
            torch.manual_seed(10 + rank)
            task(model, _local_batch(rank), 0)["loss"].backward()
            per_rank.append(_grads(model))
        for rank in range(WORLD):
            got = load_file(str(tmp_path / f"{name}_{rank}.safetensors"))
            assert set(got) == set(per_rank[0])
            for key, value in got.items():
                expected = sum(g[key] for g in per_rank) / WORLD
                torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-6,
                                           msg=f"{name} {key} rank {rank}")
