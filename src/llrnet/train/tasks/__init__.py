"""Training tasks: ``task(model, batch, step) -> {"loss": ..., **logged terms}``.

A task owns the forward passes and the loss of one batch; the loop
(:mod:`llrnet.train.loop`) owns everything else. ``batch = (x, y)`` with ``x``
float [N, C, H, W] in [0, 1] and ``y`` int64 [N]; ``step`` is the optimizer step
counted from 0 (warm-up schedules read it). The returned ``"loss"`` is the
scalar to back-propagate; every other entry is a detached scalar for logging.

:data:`TASKS` names the task classes for configurations (``task.name`` of a
preset): ``standard``, ``pgd``, ``trades``, ``llr``. A task written elsewhere
can be registered with ``TASKS.add(MyTask, name="mine")``, or passed to
``llrnet.train.train(..., task=...)`` without registering it. Each built-in task
says what a step costs (``passes_per_step()``, :class:`StepPasses`).

The adversarial tasks take ``spatial``: a :class:`WorstOfK` (Engstrom et al.'s
worst of k random rotations and translations per image), applied before the
L-inf attack; and ``llr``: an :class:`LLRTerm`, the LLR regularizer added to
their loss.

The loss, accuracy and attack view follow the model's head
(:func:`llrnet.models.head_of`), so no task needs to be told whether it trains
a softmax classifier or a sigmoid bird logit.
"""

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
