"""Memory-safe batching: OOM halving in the core helper, the attacks and the evaluation."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from llrnet.attacks import PGD, SPSA, Boundary, Chain, Identity, RandomSpatial, SpatialGrid
from llrnet.core.errors import UsageError
from llrnet.core.memory import BatchLimit, batch_for_memory, map_batches
from llrnet.eval import Suite, SuiteEntry, evaluate
from llrnet.eval.plan import EvalOptions, chunk_size
from test_eval_runner import tiny_data

pytestmark = pytest.mark.usefixtures("one_thread")

GIB = 2**30
MIB = 2**20


class Oracle(nn.Module):
    """Batch-invariant logits: logit k = sum(x * w_k) per image (w_1 - w_0 favours a
    brighter left half); raises ``torch.OutOfMemoryError`` on calls of more than
    ``limit`` images, as CUDA would."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        left = torch.zeros(1, 8, 8)
        left[..., :4] = 1.0
        weight = torch.stack([-(2 * left - 1), 2 * left - 1]) * 10 / 32  # [2, 1, 8, 8]
        self.register_buffer("weight", weight)
        self.limit = limit
        self.calls: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.calls.append(int(x.shape[0]))
        if self.limit is not None and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"simulated: {x.shape[0]} images > {self.limit}")
        return (x[:, None] * self.weight).flatten(2).sum(2)


def attacks() -> Suite:
    """One attack of each batching kind: none, chunk only, SPSA probes, Boundary
    candidates, the spatial grid's pairs."""
    entries = (
        SuiteEntry("clean", Identity(), kind="clean"),
        SuiteEntry("pgd", PGD(0.05, 3, 0.02), kind="white_box"),
        SuiteEntry("spsa", SPSA(0.05, 3, samples=4), kind="black_box"),
        SuiteEntry("boundary", Boundary(1.0, iterations=6, max_directions=4,
                                        directions_per_batch=2), kind="black_box"),
        SuiteEntry("grid", SpatialGrid(limits=(2.0, 2.0, 10.0), granularity=(3, 3, 3),
                                       batch_size=16), kind="spatial"),
    )
    return Suite("oom", entries, batch_size=8)


def comparable(path: Path) -> dict[str, Any]:
    results = json.loads(path.read_text())
    for record in results["attacks"].values():
        record.pop("wall_time")
        record.pop("memory", None)
    return results


# --- the pure helpers --------------------------------------------------------------

def test_batch_for_memory_is_the_largest_fitting_power_of_two() -> None:
    assert batch_for_memory(40 * GIB, 300 * MIB) == 64  # 68 fit in half of 40 GiB
    assert batch_for_memory(40 * GIB, 300 * MIB, fraction=1.0) == 128  # 136 fit
    assert batch_for_memory(80 * GIB, 1 * MIB) == 1024  # the cap
    assert batch_for_memory(80 * GIB, 1 * MIB, cap=250) == 128
    assert batch_for_memory(100 * MIB, 300 * MIB) == 1  # nothing fits: still 1
    assert batch_for_memory(0, 1) == 1
    assert batch_for_memory(64 * 10, 10, fraction=1.0) == 64  # exactly 64 fit
    assert batch_for_memory(64 * 10 - 1, 10, fraction=1.0) == 32
    with pytest.raises(UsageError, match="per_image_bytes"):
        batch_for_memory(GIB, 0)
    with pytest.raises(UsageError, match="fraction"):
        batch_for_memory(GIB, 1, fraction=1.5)


def test_map_batches_halves_on_oom_and_processes_every_item_once(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[int, int]] = []

    def work(a: int, b: int) -> list[int]:
        if b - a > 3:
            raise torch.OutOfMemoryError("simulated")
        seen.append((a, b))
        return list(range(a, b))

    limit = BatchLimit(16, "test batch")
    with caplog.at_level(logging.WARNING, logger="llrnet.core.memory"):
        parts = map_batches(work, 11, limit)
    assert [i for part in parts for i in part] == list(range(11))
    assert seen == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 11)]
    assert limit.size == 2 and limit.initial == 16 and limit.halved
    # 11 items: 16 -> the slice's 11 -> 5 -> 2; each new size logged once.
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "test batch: out of memory at 11; continuing at 5 for the rest of the run",
        "test batch: out of memory at 5; continuing at 2 for the rest of the run",
    ]
    # The limit is kept: a later call starts at 2 and never fails.
    caplog.clear()
    assert len(map_batches(work, 4, limit)) == 2 and not caplog.records


def test_map_batches_gives_up_when_one_item_does_not_fit() -> None:
    def work(a: int, b: int) -> None:
        raise torch.OutOfMemoryError("simulated")

    limit = BatchLimit(4, "test batch")
    with pytest.raises(torch.OutOfMemoryError):
        map_batches(work, 3, limit)
    assert limit.size == 1


def test_other_errors_are_not_retried() -> None:
    calls = []

    def work(a: int, b: int) -> None:
        calls.append(b - a)
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        map_batches(work, 8, BatchLimit(8, "test batch"))
    assert calls == [8]


# --- attacks -----------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: SPSA(0.05, 3, samples=4),
    lambda: Boundary(1.0, iterations=6, max_directions=4, directions_per_batch=2),
    lambda: SpatialGrid(limits=(2.0, 2.0, 10.0), granularity=(3, 3, 3), batch_size=16),
    lambda: Chain(RandomSpatial(limits=(2.0, 2.0, 10.0), border=1), SPSA(0.05, 3, samples=4)),
], ids=["spsa", "boundary", "grid", "chain"])
def test_search_batches_halve_without_changing_results(make: Any) -> None:
    x, y = tiny_data(6)
    pool = tiny_data(24)
    kwargs = {"pool": pool} if make().needs_pool else {}
    reference = make()(Oracle(), x, y, seeds=3, **kwargs)
    attack = make()
    model = Oracle(limit=3)
    x_adv = attack(model, x, y, seeds=3, **kwargs)
    assert torch.equal(x_adv, reference)
    assert attack.last_stats["search_batch"] <= 3
    assert max(size for size in model.calls[-5:]) <= 3  # the halved size was kept
    # The next call on the same attack starts from the halved size: no failed call.
    model.calls.clear()
    attack(model, x, y, seeds=3, **kwargs)
    assert max(model.calls) <= 3


# --- evaluation --------------------------------------------------------------------

def test_evaluation_halves_on_oom_and_gives_the_small_batch_results(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tiny_data()
    with caplog.at_level(logging.WARNING, logger="llrnet.core.memory"):
        records = evaluate(Oracle(limit=2), attacks(), data, out_dir=tmp_path / "oom",
                           progress=False)
    evaluate(Oracle(), attacks(), data, out_dir=tmp_path / "small", batch_size=2,
             progress=False)
    assert comparable(tmp_path / "oom/results.json") == comparable(tmp_path / "small/results.json")
    # The lowered sizes are recorded, and each job logged each new size once.
    assert records["pgd"]["memory"] == {"working_batch": 2}
    assert records["clean"]["memory"] == {"working_batch": 2}  # the judge's forward
    assert records["spsa"]["memory"]["search_batch"] <= 2
    assert records["grid"]["memory"]["search_batch"] <= 2
    saved = json.loads((tmp_path / "oom/results.json").read_text())
    assert saved["attacks"]["pgd"]["memory"] == {"working_batch": 2}
    pgd_lines = [r.getMessage() for r in caplog.records
                 if r.getMessage().startswith("pgd: images per attack call")]
    assert pgd_lines == [
        "pgd: images per attack call: out of memory at 8; continuing at 4 for the rest of "
        "the run",
        "pgd: images per attack call: out of memory at 4; continuing at 2 for the rest of "
        "the run",
    ]
    # A run that never ran out of memory records nothing.
    small = json.loads((tmp_path / "small/results.json").read_text())
    assert all("memory" not in record for record in small["attacks"].values())


def test_batch_size_auto_on_a_cpu_is_the_suites(tmp_path: Path) -> None:
    data = tiny_data()
    evaluate(Oracle(), attacks(), data, out_dir=tmp_path / "auto", batch_size="auto",
             attacks=["clean", "pgd"], progress=False)
    evaluate(Oracle(), attacks(), data, out_dir=tmp_path / "default", attacks=["clean", "pgd"],
             progress=False)
    manifest = json.loads((tmp_path / "auto/state/manifest.json").read_text())
    assert manifest["batch_size"] == 8
    assert (comparable(tmp_path / "auto/results.json")
            == comparable(tmp_path / "default/results.json"))
    assert chunk_size(attacks(), "auto") == 8
    assert EvalOptions(batch_size="auto").batch_size == "auto"
    with pytest.raises(UsageError, match="'auto'"):
        chunk_size(attacks(), "big")


def test_resuming_with_auto_names_the_saved_batch_size(tmp_path: Path) -> None:
    data = tiny_data()
    evaluate(Oracle(), attacks(), data, out_dir=tmp_path, batch_size=4, attacks=["clean"],
             progress=False)
    with pytest.raises(UsageError, match=r"run at batch size 4; batch size auto chose 8 here\. "
                                         r"Resume it with --batch-size 4"):
        evaluate(Oracle(), attacks(), data, out_dir=tmp_path, batch_size="auto",
                 attacks=["clean"], progress=False)


def test_cli_batch_size_takes_auto() -> None:
    from llrnet.cli.eval_cmd import _batch_size

    assert _batch_size("auto") == "auto"
    assert _batch_size("12") == 12
