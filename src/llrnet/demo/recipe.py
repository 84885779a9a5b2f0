"""The demo's recipe: the four digits models as pipelines of presets (:data:`MODELS`), and
the suite they are evaluated with (:func:`demo_suite`); docs/training.md, "The demo"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llrnet.attacks import PGD
from llrnet.eval import Suite, SuiteEntry, get_suite


@dataclass(frozen=True)
class DemoModel:
    """One row of the demo: presets trained in order, and the recipe in one line.

    Each stage after the first starts from the previous stage's final weights
    (``model.init_weights``; the stage's preset decides what is re-initialized).
    """

    stages: tuple[str, ...]
    recipe: str


#: Display name -> model, in table order.
MODELS: dict[str, DemoModel] = {
    "standard": DemoModel(("digits_standard",), "cross-entropy on clean two-class digits"),
    "pgd": DemoModel(("digits_pgd",), "PGD-3 adversarial training at eps 0.1"),
    "llr": DemoModel(("digits_llr",), "LLR (2 inner steps) at eps 0.1"),
    "llr_adv": DemoModel(("digits10_llr", "digits_llr_adv"),
                         "LLR pre-training on ten-class digits (eps 0.1), then from that "
                         "trunk: sigmoid bird head, a quarter of the images at lowered "
                         "contrast, worst-of-8 rotations/translations, then PGD-3 at "
                         "eps 0.15, BCE with a logit margin of 1"),
}

#: Overrides of the quick mode: a handful of steps, no checkpoints in between.
QUICK_OVERRIDES = ("steps=4", "checkpoint_every=4", "log_every=1", "data.eval_images=16",
                   "eval.steps=2")
QUICK_IMAGES = 4
FULL_IMAGES = 108  # the whole test split of the two-class digits: every attack runs on all
PGD_EPS = 0.1  # the baselines' training radius; the same for every row
PGD_STEPS = 20
QUICK_SUITE_OPTIONS = {"spsa_steps": 2, "spsa_samples": 2, "boundary_iterations": 2,
                       "boundary_directions": 2}
#: The digits suite's budgets in the demo: below the suite's defaults (SPSA 40 steps,
#: Boundary 100 iterations) so that the demo, with its convergence check and white-box
#: bounds, takes about 6 minutes on 2 cores (docs/training.md, "What the demo's numbers
#: claim"; docs/benchmarks.md, "Training loop").
SUITE_OPTIONS = {"spsa_steps": 30, "spsa_samples": 16, "boundary_iterations": 80,
                 "boundary_directions": 10}
#: The convergence check: every budgeted attack re-run at CHECK_BUDGET times its budget on
#: up to CHECK_IMAGES of the images it left correct, with the same per-image seeds.
CHECK_BUDGET = 4
CHECK_IMAGES = 16
QUICK_CHECK_IMAGES = 2
#: The demo suite's attacks in the groups that worker processes evaluate side by side,
#: costliest first (the order in which ready groups are taken). Measured per model
#: (docs/benchmarks.md): Boundary ~40% of an evaluation, SPSA ~30%, the grid ~20%.
EVAL_GROUPS: tuple[tuple[str, ...], ...] = (
    ("boundary_with_random_spatial",),
    ("spsa_with_random_spatial",),
    ("spatial_grid",),
    ("clean", "common_corruptions", "pgd_linf"),
)


def demo_suite(eps: float = PGD_EPS, *, quick: bool) -> Any:
    """The evaluation kit's ``digits`` suite (:data:`SUITE_OPTIONS`) plus white-box L-inf
    PGD at ``eps``, with the white-box bounds of its black-box attacks.

    Every attack runs on every image the evaluation is given (all 108 test
    images; Boundary too). PGD: 20 steps of 2.5 eps / 20. Quick mode cuts every
    budget to a token size.
    """
    images = QUICK_IMAGES if quick else FULL_IMAGES
    budgets = QUICK_SUITE_OPTIONS if quick else SUITE_OPTIONS
    digits = get_suite("digits", boundary_images=images, **budgets)
    entries = list(digits.entries)
    steps = 2 if quick else PGD_STEPS
    entries.append(SuiteEntry("pgd_linf", PGD(eps, steps, 2.5 * eps / steps), kind="white_box"))
    return Suite(name="demo_digits", entries=tuple(entries),
                 options={**digits.options, "images": images, "pgd_eps": eps,
                          "pgd_steps": steps},
                 batch_size=digits.batch_size, shuffle=digits.shuffle, white_box_bounds=True)


