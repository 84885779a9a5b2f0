"""Evaluation speed with ``compile=True`` against eager: ``llrnet.eval.evaluate`` on
``llr_pretrain_adv`` (random weights, upscaled digits, its own decisions as labels) under
``clean`` and a cut challenge ``spatial_grid``, fp32 and bf16, per batch size; the
method is :func:`configuration`'s. Usage: ``.venv/bin/python benchmarks/eval_compile.py
[--batch-sizes 1,8,32] [--chunks 2] [--precisions fp32,bf16] [--granularity 3,1,1]
[--write]``, or ``--dry-run`` (tiny model, 32 px, batch 1,2, backend ``eager``)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch._dynamo
from common import isa, machine_description, real_looking, write_section
from torch import nn

from llrnet.attacks import Identity, SpatialGrid
from llrnet.attacks.spatial_limits import BIRD_OR_BICYCLE
from llrnet.eval import Suite, SuiteEntry, evaluate
from llrnet.models import challenge_view, create_model

SECTION = "eval_compile"
COMPILED_LOG = re.compile(r"compiled in ([0-9.]+) s")
RECOMPILE_LIMIT = 64
"""Dynamo's recompile limit here (default 8): every configuration of this one process
compiles the same forward, and past the limit dynamo would silently run eager."""


def suite(granularity: tuple[int, int, int]) -> Suite:
    """``clean`` and the challenge grid at ``granularity`` (angle, dx, dy values)."""
    grid = SpatialGrid(BIRD_OR_BICYCLE.grid, limits=BIRD_OR_BICYCLE.limits,
                       granularity=granularity,
                       border_fraction=BIRD_OR_BICYCLE.border_fraction)
    return Suite("eval_compile", (SuiteEntry("clean", Identity()),
                                  SuiteEntry("spatial_grid", grid)), batch_size=1)


def setup(dry_run: bool, images: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model (random weights, seed 0), ``images`` upscaled digits [N, 3, S, S] in
    [0, 1] (S = 224, or 32 in a dry run) and the model's own decisions [N] on them."""
    torch.manual_seed(0)
    if dry_run:
        model = create_model("llr_pretrain_adv_tiny", preprocess=False)
    else:
        model = create_model("llr_pretrain_adv")
    model.eval()
    x = real_looking(images, 32 if dry_run else 224)
    with torch.no_grad():
        labels = challenge_view(model)(x).argmax(1)
    return model, x, labels


class _Seconds(logging.Handler):
    """Collects the compile seconds ``llrnet.models.compiled`` logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = COMPILED_LOG.search(record.getMessage())
        if found:
            self.seconds.append(float(found.group(1)))


@contextmanager
def compile_log() -> Iterator[_Seconds]:
    """The compile times logged inside the block (INFO of ``llrnet.models.compiled``)."""
    logger = logging.getLogger("llrnet.models.compiled")
    handler, level = _Seconds(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def _table(value: Any) -> Any:
    """A results.json value without its ``wall_time`` fields (timings differ by run)."""
    if isinstance(value, dict):
        return {k: _table(v) for k, v in value.items() if k != "wall_time"}
    if isinstance(value, list):
        return [_table(v) for v in value]
    return value


def run(model: nn.Module, attacks: Suite, x: torch.Tensor, y: torch.Tensor, *, batch: int,
        images: int, precision: str, compiled: bool) -> dict[str, Any]:
    """One ``evaluate`` (fresh output folder): its attack records, the results.json
    ``attacks`` table without timings, the logged compile seconds, the dynamo graphs
    compiled during it, its whole wall time and its attacks' chunk time (s)."""
    before = _graphs()
    with tempfile.TemporaryDirectory() as out, compile_log() as log:
        start = time.perf_counter()
        records = evaluate(model, attacks, (x, y), out_dir=out, seed=0, batch_size=batch,
                           max_images=images, shuffle=False, progress=False,
                           precision=precision, white_box_bounds=False, compile=compiled)
        total = time.perf_counter() - start
        table = _table(json.loads((Path(out) / "results.json").read_text())["attacks"])
    chunks = sum(record["wall_time"] for record in records.values())
    return {"records": records, "table": table, "compile_s": sum(log.seconds),
            "graphs": _graphs() - before, "total_s": total, "chunks_s": chunks}


def _speed(record: dict[str, Any]) -> float:
    return record["images"] / record["wall_time"] if record["wall_time"] > 0 else float("nan")


def _differing(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``identical``, or the attack.field pairs whose values differ."""
    fields = [f"{name}.{key}" for name in a for key in a[name]
              if a[name][key] != b.get(name, {}).get(key)]
    return "identical" if a == b else "differ: " + ", ".join(fields or ["attacks"])


def configuration(model: nn.Module, attacks: Suite, x: torch.Tensor, y: torch.Tensor,
                  batch: int, chunks: int, precision: str) -> dict[str, Any]:
    """One configuration's summary row: three evaluations, in this order, eager on
    ``batch x chunks`` images; compiled on the first ``batch`` of them (untimed: the
    ``compile_run`` warm-up, whose seconds come from the log, and the recompiles for
    the grid's batch shapes); compiled on all of them (timed). Images/s come from each
    attack's results.json ``wall_time`` (chunks only, no planning or compiling); the
    eager and timed compiled tables are compared without their ``wall_time`` fields.
    bf16: the grid searches with the bf16 channels_last copy, the fp32 model judges."""
    images = batch * chunks
    eager = run(model, attacks, x, y, batch=batch, images=images, precision=precision,
                compiled=False)
    first = run(model, attacks, x, y, batch=batch, images=batch, precision=precision,
                compiled=True)
    timed = run(model, attacks, x, y, batch=batch, images=images, precision=precision,
                compiled=True)
    row: dict[str, Any] = {"batch": batch, "precision": precision, "images": images,
                           "first_compile_s": first["compile_s"],
                           "first_run_s": first["total_s"], "first_graphs": first["graphs"],
                           "first_chunk_s": first["chunks_s"],
                           "timed_chunk_s": timed["chunks_s"] / chunks,
                           "timed_graphs": timed["graphs"], "timed_compile_s": timed["compile_s"],
                           "tables": _differing(eager["table"], timed["table"])}
    for name in attacks.names:
        slow, fast = _speed(eager["records"][name]), _speed(timed["records"][name])
        row[name] = {"eager": slow, "compiled": fast, "ratio": fast / slow,
                     "accuracy": eager["records"][name]["accuracy@100"]}
    return row


def markdown(rows: Sequence[dict[str, Any]], names: Sequence[str], command: str,
             transforms: int, dry_run: bool, backend: str) -> str:
    """The ``eval_compile`` section of docs/benchmarks.md."""
    head = "| batch | precision | images |" + "".join(
        f" {n} eager (img/s) | {n} compiled (img/s) | {n} compiled / eager |" for n in names)
    lines = [head + " first compiled run: compile_run warm-up (s, log) | its whole evaluate "
             "(s) | its chunk / a timed chunk (s) | graphs compiled (first / timed run) | "
             "results.json tables |",
             "|" + "---|" * (3 + 3 * len(names) + 5)]
    for row in rows:
        cells = "".join(f" {row[n]['eager']:.2f} | {row[n]['compiled']:.2f} | "
                        f"{row[n]['ratio']:.3f}x |" for n in names)
        lines.append(f"| {row['batch']} | {row['precision']} | {row['images']} |{cells} "
                     f"{row['first_compile_s']:.1f} | {row['first_run_s']:.1f} | "
                     f"{row['first_chunk_s']:.1f} / {row['timed_chunk_s']:.1f} | "
                     f"{row['first_graphs']} / {row['timed_graphs']} | {row['tables']} |")
    title = "## Evaluation with `--compile` (`llr_pretrain_adv`, `evaluate(compile=True)`)"
    if dry_run:
        title += " (dry run: tiny model, 32 px, backend `eager`)"
    return "\n".join([
        title, "",
        f"Machine: {machine_description()}; {isa()}. Command: `{command}`.",
        f"`llrnet.eval.evaluate` with `compile=False` then `compile=True` on the same "
        f"images (upscaled digits, labels = the model's own clean decisions, random "
        f"weights), attacks `clean` and the challenge `spatial_grid` cut to {transforms} "
        f"transforms: forward-only attacks, so only forwards are compiled (torch.compile "
        f"backend `{backend}`, dynamo recompile limit {RECOMPILE_LIMIT}). bf16: the grid "
        "searches with the bf16 channels_last copy, the fp32 model judges; both are "
        "compiled. Images/s from each attack's results.json `wall_time` (its chunks, no "
        "planning or compiling), one eager and one compiled run per row, in one process. "
        "Before the timed compiled run, an untimed compiled run on the first `batch` "
        "images compiles (its `compile_run` warm-up seconds from the log; the recompiles "
        "for the grid's batch shapes inside its chunks, the difference between its chunk "
        "and a timed chunk); graphs compiled during the timed run should be 0. Tables "
        "compared with `wall_time` removed.",
        "",
        *lines,
    ])


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="evaluate() compiled against eager on llr_pretrain_adv")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--chunks", type=int, default=2, help="chunks per timed run")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--granularity", default="3,1,1",
                        help="values per axis of the challenge grid (angle, dx, dy)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny model at 32 px, batch sizes 1,2, one chunk, backend eager")
    parser.add_argument("--out", type=Path, help="also write the section and rows here")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)
    batches = [1, 2] if args.dry_run else _ints(args.batch_sizes)
    chunks = 1 if args.dry_run else args.chunks
    backend = "eager" if args.dry_run else args.backend
    granularity = tuple(_ints(args.granularity))
    if len(granularity) != 3 or chunks < 1 or not batches:
        parser.error("--granularity takes 3 values, --chunks >= 1, --batch-sizes >= 1 value")
    attacks = suite((granularity[0], granularity[1], granularity[2]))
    model, x, y = setup(args.dry_run, max(batches) * chunks)
    rows = []
    # A clean dynamo state: an earlier compile in this process (a test run, say) would
    # otherwise have marked batch dimensions dynamic, and symbolic shapes cost minutes.
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT), \
            mock.patch.object(torch, "compile", partial(torch.compile, backend=backend)):
        for precision in args.precisions.split(","):
            for batch in batches:
                rows.append(configuration(model, attacks, x, y, batch, chunks, precision))
                print(json.dumps(rows[-1]), flush=True)
    torch._dynamo.reset()
    command = ".venv/bin/python benchmarks/eval_compile.py " + (
        "--dry-run" if args.dry_run else
        f"--batch-sizes {','.join(map(str, batches))} --chunks {chunks} "
        f"--precisions {args.precisions} --granularity {args.granularity}"
        + ("" if backend == "inductor" else f" --backend {backend}") + " --write")
    transforms = granularity[0] * granularity[1] * granularity[2]
    text = markdown(rows, attacks.names, command, transforms, args.dry_run, backend)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "eval_compile.md").write_text(text + "\n")
        (args.out / "eval_compile.json").write_text(json.dumps({"rows": rows}, indent=1))
    if args.write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
