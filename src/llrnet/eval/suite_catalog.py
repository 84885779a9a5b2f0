"""The suite catalog: the built-in suites ``bird_or_bicycle``, ``digits``, ``linf`` and
``two_class_mnist``. More: docs/evaluation.md, "llrnet.eval.suite_catalog"."""

from __future__ import annotations

from typing import Any

from llrnet.attacks import (
    PGD,
    SPSA,
    Boundary,
    Chain,
    CommonCorruptions,
    Identity,
    MultiTargetedPGD,
    RandomSpatial,
    SpatialGrid,
)
from llrnet.attacks.autoattack import AutoAttack
from llrnet.attacks.spatial_limits import BIRD_OR_BICYCLE, DIGITS
from llrnet.attacks.validity import CheckedRandomSpatial, CheckedSpatialGrid
from llrnet.core.errors import UsageError
from llrnet.eval.suites import Suite, SuiteEntry, register_suite


@register_suite(help="clean accuracy and L-inf PGD at eps (8/255; the LLR paper's evaluation); "
                "AutoAttack on request")
def linf(
    *,
    eps: float = 8 / 255,
    steps: int = 20,
    step_size: float | None = None,
    restarts: int = 1,
    loss: str = "ce",
    multi_targeted: bool = False,
    num_targets: int | None = None,
    batch_size: int = 32,
) -> Suite:
    """Clean accuracy and L-inf PGD at ``eps`` (the LLR paper's evaluation).

    ``step_size`` defaults to ``2.5 * eps / steps`` (Madry et al.). With
    ``multi_targeted=True`` the attack is :class:`MultiTargetedPGD` (margin loss
    towards each other class, worst kept; ``num_targets`` limits the classes).

    Optional entries (run only when named, e.g. ``attacks=["autoattack"]``):
    ``autoattack`` (the authors' standard AutoAttack at ``eps``) and
    ``autoattack_rand`` (its version for randomized models); both need the
    extra ``llrnet[autoattack]`` (:class:`~llrnet.attacks.autoattack.AutoAttack`).
    """
    if eps <= 0:
        raise UsageError(f"eps must be > 0, got {eps}")
    size = 2.5 * eps / steps if step_size is None else step_size
    attack: PGD
    if multi_targeted:
        attack = MultiTargetedPGD(eps, steps, size, num_targets=num_targets, restarts=restarts)
        name = "multi_targeted_pgd"
    else:
        attack = PGD(eps, steps, size, loss=loss, restarts=restarts)
        name = "pgd"
    return Suite(
        name="linf",
        entries=(
            SuiteEntry("clean", Identity()),
            SuiteEntry(name, attack),
            SuiteEntry("autoattack", AutoAttack(eps, version="standard")),
            SuiteEntry("autoattack_rand", AutoAttack(eps, version="rand")),
        ),
        options={"eps": eps, "steps": steps, "step_size": size, "restarts": restarts,
                 "loss": loss, "multi_targeted": multi_targeted, "num_targets": num_targets},
        batch_size=batch_size,
        optional=("autoattack", "autoattack_rand"),
        white_box_bounds=True,
    )


CHALLENGE_ATTACKS = ("clean", "spatial_grid", "common_corruptions", "spsa_with_random_spatial",
                     "boundary_with_random_spatial")
"""The warm-up attacks in the challenge's order (the names of results.json)."""


def _warm_up(
    name: str,
    *,
    grid: Any,
    random_spatial: Any,
    spsa: Any,
    boundary: Any,
    boundary_images: int,
    corruptions: Any,
    options: dict[str, Any],
    batch_size: int,
    shuffle: bool,
    white_box_bounds: bool = False,
) -> Suite:
    return Suite(
        name=name,
        entries=(
            SuiteEntry("clean", Identity()),
            SuiteEntry("spatial_grid", grid),
            SuiteEntry("common_corruptions", corruptions),
            SuiteEntry("spsa_with_random_spatial", Chain(random_spatial, spsa)),
            SuiteEntry("boundary_with_random_spatial", Chain(random_spatial, boundary),
                       max_images=boundary_images),
        ),
        options=options,
        batch_size=batch_size,
        shuffle=shuffle,
        white_box_bounds=white_box_bounds,
    )


BIRD_OR_BICYCLE_CLASSES = ("bicycle", "bird")
"""The bird-or-bicycle classes in label order (those of :class:`llrnet.data.BirdOrBicycle`)."""


@register_suite(help="the challenge's warm-up attacks with its parameters, on 224x224 RGB "
                "bird-or-bicycle images", data="bird_or_bicycle",
                class_names=BIRD_OR_BICYCLE_CLASSES)
def bird_or_bicycle(
    *,
    grid: str = "challenge",
    boundary_images: int = 100,
    batch_size: int = 16,
) -> Suite:
    """The challenge's warm-up suite with its parameters (docs/challenge.md section 4).

    For 224x224 RGB images in [0, 1] and a two-class model (0 bicycle, 1 bird).
    ``grid`` is ``"challenge"`` (what the reference code ran, comparable with
    the leaderboard) or ``"intended"``. ``batch_size`` only changes speed and
    memory, never the results. Images are evaluated in the seeded shuffled
    order (the reference shuffled; the dataset is sorted by class), and
    Boundary runs on the first ``boundary_images`` of that order.
    """
    return _warm_up(
        "bird_or_bicycle",
        corruptions=CommonCorruptions(),
        grid=SpatialGrid(grid, limits=BIRD_OR_BICYCLE.limits,
                         granularity=BIRD_OR_BICYCLE.granularity,
                         border_fraction=BIRD_OR_BICYCLE.border_fraction),
        random_spatial=RandomSpatial(limits=BIRD_OR_BICYCLE.random_limits,
                                     border=BIRD_OR_BICYCLE.random_border),
        spsa=SPSA(eps=16 / 255, steps=200),
        boundary=Boundary(threshold=10.0),
        boundary_images=boundary_images,
        options={"grid": grid, "boundary_images": boundary_images},
        batch_size=batch_size,
        shuffle=True,
    )


@register_suite(help="the five warm-up kinds scaled to 28x28 grayscale digits, budgets that "
                "finish in minutes on a CPU", data="digits")
def digits(
    *,
    spsa_steps: int = 40,
    spsa_samples: int = 16,
    boundary_iterations: int = 100,
    boundary_directions: int = 10,
    boundary_images: int = 50,
    batch_size: int = 32,
) -> Suite:
    """The quick suite: the five warm-up kinds scaled to 28x28 grayscale digits.

    Geometry of the reference's two-class MNIST warm-up (docs/challenge.md
    section 4.6): a grid of dx, dy in {-10, -5, 0, 5, 10} px and 11 rotations
    over [-10, 10] degrees (275 transforms), the same 15% border convention;
    random spatial stage with the
    same limits and a 2-pixel border (20/224 of the side); SPSA at eps 0.3 and
    Boundary at L2 <= 4. Budgets are cut so ~100-200 images finish in minutes
    on a CPU: SPSA ``spsa_steps`` steps (reference 2,000) with ``spsa_samples``
    probes (reference 64); Boundary ``boundary_iterations`` iterations of
    ``boundary_directions`` candidates (reference 5,000 x 25) on the first
    ``boundary_images`` images.
    """
    return _warm_up(
        "digits",
        # In-process: 28x28 corruptions take milliseconds, while each worker
        # process would first spend seconds importing the corruption libraries.
        corruptions=CommonCorruptions(workers=0),
        grid=SpatialGrid(DIGITS.grid, limits=DIGITS.limits, granularity=DIGITS.granularity,
                         border_fraction=DIGITS.border_fraction),
        random_spatial=RandomSpatial(limits=DIGITS.random_limits, border=DIGITS.random_border),
        spsa=SPSA(eps=0.3, steps=spsa_steps, samples=spsa_samples),
        boundary=Boundary(threshold=4.0, iterations=boundary_iterations,
                          max_directions=boundary_directions),
        boundary_images=boundary_images,
        options={"spsa_steps": spsa_steps, "spsa_samples": spsa_samples,
                 "boundary_iterations": boundary_iterations,
                 "boundary_directions": boundary_directions,
                 "boundary_images": boundary_images},
        batch_size=batch_size,
        shuffle=True,
        white_box_bounds=True,
    )


MNIST_ATTACKS = ("clean", "spatial_grid", "spsa_with_random_spatial",
                 "boundary_with_random_spatial")
"""The two-class MNIST warm-up's attacks in the kit's order (it had no corruptions)."""


@register_suite(help="the kit's two-class MNIST warm-up (6 vs 7) with its parameters",
                data="two_class_mnist")
def two_class_mnist(*, images: int = 128, batch_size: int = 32) -> Suite:
    """The kit's two-class MNIST warm-up (``evaluate_two_class_mnist_model``), its parameters.

    For MNIST test images of 6 (class 0) and 7 (class 1) in file order
    (``llrnet.data.two_class_mnist``), every attack on the first ``images``
    (128). Geometry: the TF path with a 4-pixel black border and the kit's
    ink ``valid_check`` (:mod:`llrnet.attacks.validity`); limits 10 px, 10 px,
    10 degrees. ``spatial_grid``: dx, dy in 5 values and 11 rotations (275),
    chosen by the kit's rule. ``spsa_with_random_spatial``: one valid random
    transform, then SPSA at eps 0.3 for 2,000 steps of 64 probes.
    ``boundary_with_random_spatial``: one valid random transform, then
    Boundary until L2 <= 4 (5,000 iterations of 25 candidates). No shuffle.
    """
    if images < 1:
        raise UsageError(f"images must be >= 1, got {images}")
    limits = (10.0, 10.0, 10.0)
    return Suite(
        name="two_class_mnist",
        entries=(
            SuiteEntry("clean", Identity(), max_images=images),
            SuiteEntry("spatial_grid", CheckedSpatialGrid(limits=limits, granularity=(5, 5, 11),
                                                          border=4, valid_check="ink"),
                       max_images=images),
            SuiteEntry("spsa_with_random_spatial",
                       Chain(CheckedRandomSpatial(limits=limits, border=4),
                             SPSA(eps=0.3, steps=2000, samples=64)), max_images=images),
            SuiteEntry("boundary_with_random_spatial",
                       Chain(CheckedRandomSpatial(limits=limits, border=4),
                             Boundary(threshold=4.0)), max_images=images),
        ),
        options={"images": images},
        batch_size=batch_size,
        shuffle=False,
    )
