"""The registered suites: ``bird_or_bicycle``, ``digits`` and ``linf``.

Attack classes are imported when a suite is built, so importing
:mod:`llrnet.eval` stays cheap.
"""

from __future__ import annotations

from llrnet.errors import UsageError
from llrnet.eval.suites import Suite, SuiteEntry, register_suite


@register_suite("linf")
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
    """
    from llrnet.attacks import PGD, Identity, MultiTargetedPGD

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
            SuiteEntry("clean", Identity(), kind="clean"),
            SuiteEntry(name, attack, kind="white_box"),
        ),
        options={"eps": eps, "steps": steps, "step_size": size, "restarts": restarts,
                 "loss": loss, "multi_targeted": multi_targeted, "num_targets": num_targets},
        batch_size=batch_size,
    )
