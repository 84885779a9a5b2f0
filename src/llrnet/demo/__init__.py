"""``llrnet demo``: the demo's orchestration, apart from the library's layers (it uses both
training and evaluation): the recipe, the run, the report and its figures."""

from __future__ import annotations

from llrnet.demo.recipe import EVAL_GROUPS, MODELS, PGD_EPS, PGD_STEPS, DemoModel, demo_suite
from llrnet.demo.report import leaderboard
from llrnet.demo.run import DemoResult, run_demo, run_model

__all__ = [
    "EVAL_GROUPS",
    "MODELS",
    "PGD_EPS",
    "PGD_STEPS",
    "DemoModel",
    "DemoResult",
    "demo_suite",
    "leaderboard",
    "run_demo",
    "run_model",
]
