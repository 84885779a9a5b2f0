"""Helpers shared by the benchmark scripts: machine description, timing, section writing.

Each script owns one section of ``docs/benchmarks.md``, delimited by HTML comment
markers, and replaces only that section when it runs again.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def machine_description() -> str:
    """One line naming the machine and software the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads"
    )


def real_looking(count: int, size: int = 224) -> torch.Tensor:
    """``count`` real images [count, 3, size, size] in [0, 1]: the bundled digits test
    split (6 vs 7) upscaled bilinearly to ``size`` and repeated over RGB."""
    from torch.nn import functional as F

    from llrnet.data import two_class_digits

    digits = two_class_digits("test").images[:count]
    x = F.interpolate(digits, size=(size, size), mode="bilinear", align_corners=False)
    return x.repeat(1, 3, 1, 1).clamp(0, 1)


def isa() -> str:
    """The bf16-relevant instruction sets of this CPU as torch sees them (AMX, AVX512)."""
    from llrnet.models.precision import cpu_bf16_units

    units = cpu_bf16_units()
    return (f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"AMX-BF16 {'yes' if 'AMX-BF16' in units else 'no'}, "
            f"AVX512-BF16 {'yes' if 'AVX512-BF16' in units else 'no'}")


def best_times(calls: Mapping[str, Callable[[], object]], repeats: int, warmup: bool = True
               ) -> dict[str, float]:
    """Each call's shortest wall time (s) over ``repeats`` interleaved rounds (every call
    once per round, so a machine's load swings hit all of them alike), after one
    untimed round when ``warmup``."""
    if warmup:
        for call in calls.values():
            call()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def write_section(name: str, markdown: str, doc: Path = DOC) -> None:
    """Replace (or append) the section ``name`` of ``docs/benchmarks.md``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)
