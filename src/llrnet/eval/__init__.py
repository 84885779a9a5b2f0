"""Evaluation: the challenge metric, attack suites, the resumable runner, reports.
More: docs/evaluation.md, "llrnet.eval"."""

from __future__ import annotations

from llrnet.eval import suite_catalog as _suite_catalog  # noqa: F401  (registers the suites)
from llrnet.eval.checks import EvaluationWarning
from llrnet.eval.metrics import COVERAGES, CoverageCurve, accuracy_at_coverage, coverage_curve
from llrnet.eval.model_fn import ModelFnModule
from llrnet.eval.report import format_table
from llrnet.eval.runner import evaluate
from llrnet.eval.seeds import image_seed, image_seeds
from llrnet.eval.suites import (
    Suite,
    SuiteEntry,
    attack_kind,
    describe_attack,
    get_suite,
    list_suites,
    register_suite,
)

__all__ = [
    "COVERAGES",
    "CoverageCurve",
    "EvaluationWarning",
    "ModelFnModule",
    "Suite",
    "SuiteEntry",
    "accuracy_at_coverage",
    "attack_kind",
    "coverage_curve",
    "describe_attack",
    "evaluate",
    "format_table",
    "get_suite",
    "image_seed",
    "image_seeds",
    "list_suites",
    "register_suite",
]
