"""Named attack suites: which attacks run, in which order, on how many images.

``get_suite(name, **options)`` builds a registered suite; ``list_suites()``
names them. A custom suite is ``Suite.custom([attack, ...])``. The suites:

* ``bird_or_bicycle``: the challenge's warm-up, exactly the spec's parameters
  (clean, spatial_grid, common_corruptions, spsa_with_random_spatial,
  boundary_with_random_spatial on the first 100 images).
* ``digits``: the same five kinds scaled to 28x28 grayscale digits (spec 4.6),
  with budgets that finish in minutes on a CPU for 100-200 images.
* ``linf``: clean + PGD at ``eps`` (multi-targeted with ``multi_targeted=True``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from llrnet.errors import UsageError

Kind = Literal["clean", "spatial", "corruption", "black_box", "white_box"]
KINDS: tuple[str, ...] = ("clean", "spatial", "corruption", "black_box", "white_box")

# The kind of each attack class of llrnet.attacks: decides whether an attack needs
# gradients (white_box) and feeds the sanity checks. Other classes may set ``kind``.
_CLASS_KINDS: dict[str, Kind] = {
    "Identity": "clean",
    "SpatialGrid": "spatial",
    "RandomSpatial": "spatial",
    "CommonCorruptions": "corruption",
    "SPSA": "black_box",
    "Boundary": "black_box",
    "PGD": "white_box",
    "MultiTargetedPGD": "white_box",
}
EXECUTION_KEYS = frozenset({"batch_size", "max_batch", "directions_per_batch", "workers"})
"""Attack attributes that change speed and memory but never results (documented so by
llrnet.attacks): left out of the resume check, so a run can resume on other hardware."""
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def attack_kind(attack: Any) -> Kind:
    """The kind of ``attack``: its ``kind`` attribute, else by class (Chain: last stage).

    Unknown classes count as ``white_box`` (the safe assumption: they may need
    gradients).
    """
    kind = getattr(attack, "kind", None)
    if kind in KINDS:
        return kind  # type: ignore[no-any-return,unused-ignore]
    stages = getattr(attack, "attacks", None) or getattr(attack, "stages", None)
    if type(attack).__name__ == "Chain" and stages:
        return attack_kind(list(stages)[-1])
    return _CLASS_KINDS.get(type(attack).__name__, "white_box")


def _describe(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)  # exact, and JSON-stable
    if isinstance(value, tuple | list):
        return [_describe(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v, depth + 1) for k, v in sorted(value.items())}
    if isinstance(value, torch.Tensor):
        return {"tensor": list(value.shape), "dtype": str(value.dtype)}
    if callable(value) and depth < 4 and hasattr(value, "__dict__"):
        return describe_attack(value, depth + 1)
    return type(value).__name__


def describe_attack(attack: Any, depth: int = 0) -> dict[str, Any]:
    """A JSON-able description of ``attack``'s class and public configuration.

    Used in the resolved configuration and to detect a resume with different
    attack parameters. Private attributes and run-time statistics (``last_stats``,
    ``stage_stats``) are left out.
    """
    record: dict[str, Any] = {"class": type(attack).__name__}
    for key, value in sorted(vars(attack).items()):
        if key.startswith("_") or key.endswith("_stats"):
            continue  # private, or run-time statistics (last_stats, stage_stats)
        record[key] = _describe(value, depth)
    return record


@dataclass(frozen=True)
class SuiteEntry:
    """One attack of a suite.

    ``name`` is the key in results (letters, digits, ``_.-``); ``max_images``
    limits it to the first images (Boundary: 100); ``kind`` is one of
    :data:`KINDS` (``white_box`` attacks need gradients).
    """

    name: str
    attack: Any
    max_images: int | None = None
    kind: Kind = "white_box"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise UsageError(f"attack name {self.name!r} must use only letters, digits, '_.-'")
        if self.max_images is not None and self.max_images < 1:
            raise UsageError(f"max_images of {self.name} must be >= 1, got {self.max_images}")
        if self.kind not in KINDS:
            raise UsageError(f"kind of {self.name} must be one of {', '.join(KINDS)}")

    @property
    def needs_gradients(self) -> bool:
        """True if the attack differentiates through the model."""
        return self.kind == "white_box"

    @property
    def needs_pool(self) -> bool:
        """True if the attack needs clean reference images (Boundary)."""
        return _needs_pool(self.attack)

    def describe(self) -> dict[str, Any]:
        """JSON-able configuration of this entry."""
        return {"name": self.name, "kind": self.kind, "max_images": self.max_images,
                "attack": describe_attack(self.attack)}


def _needs_pool(attack: Any) -> bool:
    if getattr(attack, "needs_pool", False):
        return True
    stages = getattr(attack, "attacks", None) or getattr(attack, "stages", None) or ()
    return any(_needs_pool(stage) for stage in stages)


@dataclass(frozen=True)
class Suite:
    """An ordered list of attacks to run, with the options that built it.

    ``batch_size`` is the default number of images per chunk; ``shuffle`` whether
    images are evaluated in a seeded shuffled order by default (see
    :func:`llrnet.eval.evaluate`).
    """

    name: str
    entries: tuple[SuiteEntry, ...]
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    shuffle: bool = False

    def __post_init__(self) -> None:
        names = [entry.name for entry in self.entries]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise UsageError(f"suite {self.name!r} has duplicate attack names: "
                             f"{', '.join(duplicates)}")
        if not self.entries:
            raise UsageError(f"suite {self.name!r} has no attacks")

    @property
    def names(self) -> list[str]:
        """The attack names, in order."""
        return [entry.name for entry in self.entries]

    def select(self, names: Iterable[str] | None) -> Suite:
        """The sub-suite with only ``names`` (kept in suite order); None keeps all."""
        if names is None:
            return self
        wanted = list(dict.fromkeys(names))
        unknown = [name for name in wanted if name not in self.names]
        if unknown:
            raise UsageError(f"unknown attack(s) {', '.join(unknown)} for suite {self.name!r}; "
                             f"choose from {', '.join(self.names)}")
        return replace(self, entries=tuple(e for e in self.entries if e.name in wanted))

    @classmethod
    def custom(cls, attacks: Sequence[Any], name: str = "custom", batch_size: int = 16
               ) -> Suite:
        """A suite from attacks (each an ``Attack`` or a :class:`SuiteEntry`), in order.

        Names come from each attack's ``name``; kinds from :func:`attack_kind`.
        """
        entries = tuple(
            a if isinstance(a, SuiteEntry)
            else SuiteEntry(name=str(getattr(a, "name", type(a).__name__)), attack=a,
                            kind=attack_kind(a))
            for a in attacks
        )
        return cls(name=name, entries=entries, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        """JSON-able configuration of the suite."""
        return {"name": self.name, "options": _describe(self.options),
                "attacks": [entry.describe() for entry in self.entries]}

    def fingerprint(self) -> dict[str, Any]:
        """:meth:`describe` without :data:`EXECUTION_KEYS`: what must match to resume."""
        return _without(self.describe(), EXECUTION_KEYS)


def _without(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


SuiteBuilder = Callable[..., Suite]
_SUITES: dict[str, SuiteBuilder] = {}


def register_suite(name: str) -> Callable[[SuiteBuilder], SuiteBuilder]:
    """Register a suite builder (keyword-only options) under ``name``."""

    def decorate(builder: SuiteBuilder) -> SuiteBuilder:
        if name in _SUITES:
            raise UsageError(f"suite {name!r} is already registered")
        _SUITES[name] = builder
        return builder

    return decorate


def list_suites() -> list[str]:
    """Names of the registered suites, sorted."""
    return sorted(_SUITES)


def get_suite(name: str, **options: Any) -> Suite:
    """Build the suite ``name`` with ``options`` (see each builder's docstring)."""
    if name not in _SUITES:
        raise UsageError(f"unknown suite {name!r}; choose from {', '.join(list_suites())}")
    builder = _SUITES[name]
    accepted = [p for p in inspect.signature(builder).parameters if not p.startswith("_")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)} for suite {name!r}; "
                         f"it takes {', '.join(accepted) or 'none'}")
    return builder(**options)
