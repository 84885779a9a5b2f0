"""AutoAttack (Croce & Hein 2020) through the authors' package ``pyautoattack``, called per
chunk and never reimplemented, so its numbers stay comparable with the literature's.
More: docs/attacks.md, "llrnet.attacks.autoattack"."""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from llrnet.attacks.balls import Ball, resolve_ball
from llrnet.attacks.base import Attack, Pool
from llrnet.attacks.parts import ImageRng
from llrnet.core.errors import UsageError
from llrnet.core.seeding import derive

INSTALL = "pip install 'llrnet[autoattack]'"
"""The command that installs the authors' package."""

VERSIONS = ("standard", "rand")
_NORMS = {"linf": "Linf", "l2": "L2"}
_LOGGER = "auto-attack"

FLAG_KINDS = {
    "randomized": "randomized defense",
    "probabilities": "output is a probability distribution",
    "zero_gradients": "zero gradient",
    "dynamic": "dynamic defense",
    "square": "Square Attack has decreased",
    "classes": "target classes",
}
"""Kind of an AutoAttack check -> a phrase its message contains (``pyautoattack.checks``)."""


def load_pyautoattack() -> Any:
    """The ``pyautoattack`` module, or a UsageError naming :data:`INSTALL`."""
    try:
        return importlib.import_module("pyautoattack")  # deferred: optional extra
    except ImportError:
        raise UsageError(f"AutoAttack needs the authors' package pyautoattack; install it "
                         f"with: {INSTALL}") from None


def flag_kind(message: str) -> str:
    """The kind (a key of :data:`FLAG_KINDS`) of an AutoAttack check message, else "other"."""
    lowered = message.lower()
    for kind, phrase in FLAG_KINDS.items():
        if phrase.lower() in lowered:
            return kind
    return "other"


def attacks_for(version: str, num_classes: int) -> tuple[list[str], int]:
    """The authors' ``attacks_to_run`` and ``n_target_classes`` for K = ``num_classes``.

    Standard: APGD-CE, APGD-T, FAB-T, Square with ``min(9, K - 1)`` targets,
    APGD-T left out for K < 4 (its targeted DLR loss reads the 3rd and 4th
    largest logits). Rand: APGD-CE and APGD-DLR (EOT), APGD-DLR left out for
    K < 3.
    """
    if num_classes < 2:
        raise UsageError(f"AutoAttack needs a model with >= 2 logits, got {num_classes}")
    targets = min(9, num_classes - 1)
    if version == "standard":
        names = ["apgd-ce", "apgd-t", "fab-t", "square"]
        if num_classes < 4:
            names.remove("apgd-t")
        return names, targets
    names = ["apgd-ce", "apgd-dlr"]
    if num_classes < 3:
        names.remove("apgd-dlr")
    return names, targets


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _captured_checks() -> Iterator[list[str]]:
    """Collect the authors' check messages (logger and ``warnings``) instead of showing them."""
    logger = logging.getLogger(_LOGGER)
    handler = _Capture()
    propagate, level = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield handler.messages
        for w in caught:  # pyautoattack warns with the bare Warning class; others pass on
            if w.category is Warning:
                handler.messages.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    finally:
        logger.removeHandler(handler)
        logger.propagate, logger.level = propagate, level


class AutoAttack(Attack):
    """The authors' AutoAttack in an L-inf (or L2) ball, version ``standard`` or ``rand``.

    Args:
        eps: radius (a float, with ``norm``), or a :class:`~llrnet.attacks.balls.Ball`.
            For [0, 1] images: 8/255 on CIFAR-10, 0.1-0.3 on digits.
        version: ``"standard"`` (APGD-CE, APGD-T, FAB-T, Square: deterministic
            models) or ``"rand"`` (APGD-CE and APGD-DLR with expectation over
            20 draws: randomized models).
        norm: ``"linf"`` or ``"l2"`` when ``eps`` is a number.

    ``flags`` maps each kind of the authors' checks seen so far (a key of
    :data:`FLAG_KINDS`, or ``"other"``) to its first message.
    """

    kind = "white_box"

    def __init__(self, eps: float | Ball, *, version: str = "standard",
                 norm: str | None = None) -> None:
        super().__init__()
        if version not in VERSIONS:
            raise UsageError(f"AutoAttack version must be one of {list(VERSIONS)}, "
                             f"got {version!r}")
        ball = resolve_ball(eps, norm)
        if ball.norm not in _NORMS:
            raise UsageError(f"AutoAttack supports the norms {sorted(_NORMS)}, "
                             f"got {ball.norm!r}")
        self.ball: Ball = ball
        self.version = version
        self.name = "autoattack" if version == "standard" else f"autoattack_{version}"
        self._flags: dict[str, str] = {}

    @property
    def flags(self) -> dict[str, str]:
        """Kind -> first message of the authors' checks raised during this attack's calls."""
        return dict(self._flags)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, rng: ImageRng, pool: Pool | None
             ) -> Tensor:
        package = load_pyautoattack()
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
        names, targets = attacks_for(self.version, num_classes)
        seed = derive(len(rng.seeds), *rng.seeds, "autoattack")
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with _captured_checks() as messages, torch.random.fork_rng(devices=devices):
            adversary = package.AutoAttack(model, device=x.device, eps=float(self.ball.eps),
                                           norm=_NORMS[self.ball.norm], seed=seed,
                                           version=self.version)
            adversary.verbose = False
            adversary.attacks_to_run = names
            adversary.apgd_targeted.n_target_classes = targets
            adversary.fab.n_target_classes = targets
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
        for message in messages:
            self._flags.setdefault(flag_kind(message), message)
        return torch.as_tensor(x_adv).to(x.device, x.dtype)
