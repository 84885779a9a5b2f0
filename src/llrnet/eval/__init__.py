"""Evaluation: the challenge metric, attack suites, the resumable runner, reports.
More: docs/evaluation.md, "llrnet.eval"."""

from __future__ import annotations

from llrnet.eval import suite_catalog as _suite_catalog  # noqa: F401  (registers the suites)
from llrnet.eval.checks import EvaluationWarning
from llrnet.eval.metrics import accuracy_at_coverage, coverage_curve
from llrnet.eval.plan import EvalOptions
from llrnet.eval.report import format_table
from llrnet.eval.runner import evaluate
from llrnet.eval.suites import Suite, SuiteEntry, get_suite, list_suites, register_suite

__all__ = [
    "EvalOptions",
    "EvaluationWarning",
    "Suite",
    "SuiteEntry",
    "accuracy_at_coverage",
    "coverage_curve",
    "evaluate",
    "format_table",
    "get_suite",
    "list_suites",
    "register_suite",
]
