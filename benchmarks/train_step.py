"""Cost of one training step of each task, as multiples of one standard step, one run.

On a fixed small model (``digits_wrn``: WRN-10-2 softplus, 1 channel, 28x28,
batch 64 by default) and one fixed batch, a "step" is ``task(model, batch,
step)`` + ``loss.backward()`` (the optimizer update is the same for every task
and left out). Time: the tasks are timed round-robin (standard, PGD-1, ...,
standard, PGD-1, ...) so machine noise hits all alike; the median per task is
divided by the standard step's median. Peak memory: each task runs once in a
fresh subprocess and reports its peak resident set size during the step minus
the resident size before it (Linux VmHWM, reset just before the step; CPU has
no allocator statistics), divided by the standard step's.

Goals (issue 4): PGD-K within 1.1x of (K + 1) standard steps; LLR-S within
1.15x of (S + 4). ``--profile NAME`` prints torch.profiler's top operators for
one task (e.g. ``--profile llr-2``) to explain a miss.

Usage::

    .venv/bin/python benchmarks/train_step.py [--batch 64] [--repeats 5] [--threads 1]
        [--no-memory] [--profile llr-10] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from common import machine_description, write_section

from llrnet.models import create_model
from llrnet.train.tasks import LLRTask, PGDTask, StandardTask, TRADESTask

Task = Callable[..., dict[str, torch.Tensor]]

TASKS: dict[str, tuple[Task, float]] = {
    # name: (task, budget in standard steps from the goals, 0 = none)
    "standard": (StandardTask(), 1.0),
    "pgd-1": (PGDTask(eps=0.3, steps=1, step_size=0.1), 2.0),
    "pgd-2": (PGDTask(eps=0.3, steps=2, step_size=0.1), 3.0),
    "pgd-10": (PGDTask(eps=0.3, steps=10, step_size=0.1), 11.0),
    "trades-10": (TRADESTask(eps=0.3, steps=10, step_size=0.1), 12.0),
    "llr-1": (LLRTask(eps=0.3, steps=1, warmup_steps=0), 5.0),
    "llr-2": (LLRTask(eps=0.3, steps=2, warmup_steps=0), 6.0),
    "llr-10": (LLRTask(eps=0.3, steps=10, warmup_steps=0), 14.0),
}
TOLERANCE = {"pgd": 1.1, "llr": 1.15, "trades": 1.1, "standard": 1.0}


def _setup(batch: int) -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = create_model("digits_wrn").train()
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 2, (batch,))
    return model, (x, y)


def _step(task: Task, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    start = time.perf_counter()
    task(model, batch, 10_000)["loss"].backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def measure_time(batch: int, repeats: int) -> dict[str, float]:
    """Median seconds of one step per task (round-robin, one warm-up round)."""
    model, data = _setup(batch)
    samples: dict[str, list[float]] = {name: [] for name in TASKS}
    for round_index in range(repeats + 1):
        for name, (task, _) in TASKS.items():
            seconds = _step(task, model, data)
            if round_index > 0:
                samples[name].append(seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1]) * 1024  # kB
    raise OSError(f"{key} not in /proc/self/status")


def one_memory(name: str, batch: int) -> int:
    """Peak RSS growth (bytes) during one step of ``name`` in this (fresh) process.

    Linux: the peak (VmHWM) is reset by writing 5 to /proc/self/clear_refs just
    before the step, so import-time peaks do not hide the step's.
    """
    model, data = _setup(batch)
    with torch.no_grad():
        model(data[0])
    before = _proc_status_bytes("VmRSS:")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    _step(TASKS[name][0], model, data)
    return _proc_status_bytes("VmHWM:") - before


def measure_memory(batch: int, threads: int) -> dict[str, int]:
    """Each task in a fresh subprocess (peak RSS is per process)."""
    out = {}
    for name in TASKS:
        result = subprocess.run(
            [sys.executable, __file__, "--memory-child", name, "--batch", str(batch),
             "--threads", str(threads)],
            check=True, capture_output=True, text=True, cwd=os.path.dirname(__file__),
        )
        out[name] = int(json.loads(result.stdout.strip().splitlines()[-1])["bytes"])
    return out


def profile(name: str, batch: int) -> str:
    """torch.profiler's operator table (self CPU time) for one step of ``name``."""
    model, data = _setup(batch)
    task = TASKS[name][0]
    _step(task, model, data)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _step(task, model, data)
    return str(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def table(times: dict[str, float], memory: dict[str, int] | None) -> str:
    base = times["standard"]
    lines = [
        "| task | ms/step | x standard | goal (x standard) | within goal "
        "| peak memory x standard |",
        "|---|---:|---:|---:|:---:|---:|",
    ]
    for name, (_, budget) in TASKS.items():
        ratio = times[name] / base
        limit = budget * TOLERANCE[name.split("-")[0]]
        goal = f"<= {limit:.2f} ({budget:g} x {TOLERANCE[name.split('-')[0]]:g})"
        ok = "yes" if ratio <= limit else "**no**"
        mem = "-"
        if memory is not None and memory["standard"] > 0:
            mem = f"{memory[name] / memory['standard']:.2f}"
        lines.append(f"| {name} | {1000 * times[name]:.1f} | {ratio:.2f} | {goal} | {ok} | {mem} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--profile", choices=sorted(TASKS))
    parser.add_argument("--memory-child", choices=sorted(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps({"bytes": one_memory(args.memory_child, args.batch)}))
        return
    if args.profile:
        print(profile(args.profile, args.batch))
        return
    times = measure_time(args.batch, args.repeats)
    memory = None if args.no_memory else measure_memory(args.batch, args.threads)
    command = ("`.venv/bin/python benchmarks/train_step.py "
               f"--batch {args.batch} --repeats {args.repeats} --threads {args.threads}"
               f"{' --no-memory' if args.no_memory else ''} --write`")
    report = (
        "### Cost of one training step\n\n"
        f"One training step per task (`digits_wrn`, batch {args.batch} of 28x28, "
        f"median of {args.repeats} round-robin repeats), as multiples of one standard step.\n"
        f"Machine: {machine_description()}. Command: {command}\n\n{table(times, memory)}\n"
    )
    print(report)
    if args.write:
        write_section("train_step", report)


if __name__ == "__main__":
    main()
