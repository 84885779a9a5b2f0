"""Training tasks: ``task(model, batch, step) -> {"loss": ..., **logged terms}``.
More: docs/training.md, "llrnet.train.tasks"."""

from __future__ import annotations

from llrnet.core.registry import Registry
from llrnet.train.tasks.adversarial import PGDTask, TRADESTask
from llrnet.train.tasks.common import StepPasses, Task
from llrnet.train.tasks.llr_task import LLRTask
from llrnet.train.tasks.llr_term import LLRTerm
from llrnet.train.tasks.spatial import WorstOfK
from llrnet.train.tasks.standard import StandardTask

TASKS: Registry[type] = Registry("task")
"""Task classes by the name configurations use (``task.name``)."""
TASKS.add(StandardTask, name="standard")
TASKS.add(PGDTask, name="pgd")
TASKS.add(TRADESTask, name="trades")
TASKS.add(LLRTask, name="llr")

__all__ = [
    "TASKS",
    "LLRTask",
    "LLRTerm",
    "PGDTask",
    "StandardTask",
    "StepPasses",
    "TRADESTask",
    "Task",
    "WorstOfK",
]
