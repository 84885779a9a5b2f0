"""Training metrics: a JSONL file (one record per logged step) and TensorBoard.
More: docs/training.md, "llrnet.train.logging"."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from torch import Tensor

from llrnet.core.fileio import atomic_write_text

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a run folder or the file itself)."""
    target = Path(path)
    if target.is_dir():
        target = target / METRICS_FILE
    if not target.is_file():
        return []
    records = []
    for line in target.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: ignore it
            continue
    return records


class MetricsLogger:
    """Writes metrics to ``out_dir/metrics.jsonl`` and (optionally) ``out_dir/tensorboard``.

    A context manager: leaving the ``with`` block closes it.

    Args:
        out_dir: the run folder.
        enabled: False on ranks other than 0 (nothing is written).
        tensorboard: also write TensorBoard event files.
        resume_step: when resuming, drop records with ``step > resume_step``.
    """

    def __init__(self, out_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(out_dir) / METRICS_FILE
        self._writer: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            kept = [r for r in read_metrics(self.path)
                    if int(r.get("step", 0)) <= resume_step and not r.get("final")]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif self.path.exists():
            self.path.unlink()
        if tensorboard:
            # deferred: optional-heavy (tensorboard), only when logging to it
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(out_dir) / "tensorboard"),
                                         purge_step=resume_step + 1 if resume_step else None)

    def log(self, step: int, values: Mapping[str, float], *, final: bool = False) -> None:
        """Append one record for ``step`` (non-finite values are written as null);
        ``final`` marks the final evaluation's record (``"final": true``)."""
        if not self.enabled:
            return
        record: dict[str, Any] = {"step": step, "final": True} if final else {"step": step}
        for name, value in values.items():
            number = float(value)
            record[name] = number if math.isfinite(number) else None
            if self._writer is not None and math.isfinite(number):
                self._writer.add_scalar(name, number, step)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class RunningMeans:
    """Running means of the task's terms between two log lines, plus throughput.

    ``add`` each step's terms (scalar tensors; others are ignored) and image
    count; ``means()`` gives the means and ``images_per_second`` since creation.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.images = 0
        self.start = time.perf_counter()

    def add(self, terms: Mapping[str, Tensor], images: int) -> None:
        for name, value in terms.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                self.sums[name] = self.sums.get(name, 0.0) + float(value.detach().float())
        self.count += 1
        self.images += images

    def means(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        values = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        values["images_per_second"] = self.images / elapsed
        return values
