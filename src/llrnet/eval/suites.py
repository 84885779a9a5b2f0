"""Named attack suites: which attacks run, in which order, on how many images.
A suite is registered with its facts (:class:`SuiteFacts`: help, default data, class
names), so the CLI and ``data`` ask the suite instead of branching on its name.
More: docs/evaluation.md, "llrnet.eval.suites"."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar, overload

import torch

from llrnet.attacks.base import ATTACK_KINDS, UNDECLARED_KIND, AttackKind
from llrnet.core.errors import UsageError
from llrnet.core.registry import Registry

if TYPE_CHECKING:
    from torch.utils.data import Dataset

EXECUTION_KEYS = frozenset({"batch_size", "max_batch", "directions_per_batch", "workers"})
"""Attack attributes that change speed and memory but never results (documented so by
llrnet.attacks): left out of the resume check, so a run can resume on other hardware."""
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def attack_kind(attack: Any) -> AttackKind:
    """The kind of ``attack``: its ``kind`` attribute (every llrnet attack has one).

    A callable without ``kind`` (not an llrnet :class:`~llrnet.attacks.Attack`)
    counts as :data:`~llrnet.attacks.base.UNDECLARED_KIND`, ``white_box``: the
    safe assumption, as it may need gradients.

    Raises:
        UsageError: ``kind`` is not one of :data:`~llrnet.attacks.base.ATTACK_KINDS`.
    """
    kind = getattr(attack, "kind", UNDECLARED_KIND)
    if kind not in ATTACK_KINDS:
        raise UsageError(f"{type(attack).__name__} has kind {kind!r}; valid kinds: "
                         f"{', '.join(ATTACK_KINDS)}")
    return kind


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


@dataclass(frozen=True, init=False)
class SuiteEntry:
    """One attack of a suite.

    ``name`` is the key in results (letters, digits, ``_.-``); ``max_images``
    limits it to the first images (Boundary: 100). ``kind`` (one of
    :data:`~llrnet.attacks.base.ATTACK_KINDS`; ``white_box`` attacks need gradients)
    is the attack's own (:func:`attack_kind`) unless given; giving it labels a
    callable that declares none.
    """

    name: str
    attack: Any
    max_images: int | None
    kind: AttackKind

    def __init__(self, name: str, attack: Any, max_images: int | None = None,
                 kind: AttackKind | None = None) -> None:
        if not _NAME.match(name):
            raise UsageError(f"attack name {name!r} must use only letters, digits, '_.-'")
        if max_images is not None and max_images < 1:
            raise UsageError(f"max_images of {name} must be >= 1, got {max_images}")
        if kind is not None and kind not in ATTACK_KINDS:
            raise UsageError(f"kind of {name} must be one of {', '.join(ATTACK_KINDS)}")
        # Frozen: the fields are set once, here.
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "attack", attack)
        object.__setattr__(self, "max_images", max_images)
        object.__setattr__(self, "kind", attack_kind(attack) if kind is None else kind)

    @property
    def needs_gradients(self) -> bool:
        """True if the attack differentiates through the model."""
        return self.kind == "white_box"

    @property
    def needs_pool(self) -> bool:
        """True if the attack needs clean reference images (Boundary, and Chains with it)."""
        return bool(getattr(self.attack, "needs_pool", False))

    def describe(self) -> dict[str, Any]:
        """JSON-able configuration of this entry."""
        return {"name": self.name, "kind": self.kind, "max_images": self.max_images,
                "attack": describe_attack(self.attack)}


@dataclass(frozen=True)
class Suite:
    """An ordered list of attacks to run, with the options that built it.

    ``batch_size`` is the default number of images per chunk; ``shuffle`` whether
    images are evaluated in a seeded shuffled order by default (see
    :func:`llrnet.eval.evaluate`). ``optional`` names entries that run only when
    asked for by name (:meth:`select`), e.g. ``linf``'s AutoAttack entries,
    which need an optional extra. ``white_box_bounds``: whether ``evaluate``
    runs each black-box entry's white-box bound by default
    (:func:`llrnet.attacks.white_box_bound`; docs/evaluation.md).
    """

    name: str
    entries: tuple[SuiteEntry, ...]
    options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    shuffle: bool = False
    optional: tuple[str, ...] = ()
    white_box_bounds: bool = False

    def __post_init__(self) -> None:
        names = [entry.name for entry in self.entries]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise UsageError(f"suite {self.name!r} has duplicate attack names: "
                             f"{', '.join(duplicates)}")
        if not self.entries:
            raise UsageError(f"suite {self.name!r} has no attacks")
        unknown = sorted(set(self.optional) - set(names))
        if unknown:
            raise UsageError(f"suite {self.name!r} marks unknown attacks optional: "
                             f"{', '.join(unknown)}")

    @property
    def names(self) -> list[str]:
        """The attack names, in order."""
        return [entry.name for entry in self.entries]

    def select(self, names: Iterable[str] | None) -> Suite:
        """The sub-suite with only ``names`` (kept in suite order).

        None keeps every entry but the :attr:`optional` ones.
        """
        if names is None:
            if not self.optional:
                return self
            return replace(self, entries=tuple(e for e in self.entries
                                               if e.name not in self.optional), optional=())
        wanted = list(dict.fromkeys(names))
        unknown = [name for name in wanted if name not in self.names]
        if unknown:
            raise UsageError(f"unknown attack(s) {', '.join(unknown)} for suite {self.name!r}; "
                             f"choose from {', '.join(self.names)}")
        return replace(self, entries=tuple(e for e in self.entries if e.name in wanted),
                       optional=tuple(name for name in self.optional if name in wanted))

    @classmethod
    def custom(cls, attacks: Sequence[Any], name: str = "custom", batch_size: int = 16
               ) -> Suite:
        """A suite from attacks (each an ``Attack`` or a :class:`SuiteEntry`), in order.

        Names come from each attack's ``name``, kinds from the attacks.
        """
        entries = tuple(
            a if isinstance(a, SuiteEntry)
            else SuiteEntry(name=str(getattr(a, "name", type(a).__name__)), attack=a)
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


def fingerprint_attack(attack: Any) -> dict[str, Any]:
    """:func:`describe_attack` without :data:`EXECUTION_KEYS`: what must match to resume."""
    return _without(describe_attack(attack), EXECUTION_KEYS)


def _without(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


SuiteBuilder = Callable[..., Suite]

SUITES: Registry[SuiteBuilder] = Registry("suite", keyword_only=True)
"""Every registered suite builder, by name (keyword-only options)."""

DEFAULT_DATA = "digits_or_folder"
"""The held-out set of a suite that names none: the bundled digits, or the test split
found in ``--data``."""


@dataclass(frozen=True)
class SuiteFacts:
    """What a registered suite says about itself, known without building it.

    ``help``: one line for listings (``llrnet eval --help``). ``data``: the
    held-out set it scores by default, a name in
    :data:`llrnet.data.held_out.HELD_OUT_SETS` (the set reads ``--data`` when
    given). ``class_names``: its classes' names in label order, for reports
    (None: the labels as numbers).
    """

    help: str
    data: str = DEFAULT_DATA
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.help.strip() or "\n" in self.help:
            raise UsageError(f"a suite's help is one non-empty line, got {self.help!r}")
        if self.class_names is not None and len(self.class_names) < 2:
            raise UsageError(f"a suite's class_names name >= 2 classes, got {self.class_names}")


SUITE_FACTS: dict[str, SuiteFacts] = {}
"""The facts of each suite registered through :func:`register_suite`, by name."""

B = TypeVar("B", bound=SuiteBuilder)


@overload
def register_suite(name: B, /) -> B: ...


@overload
def register_suite(name: str | None = None, /, *, help: str | None = None,
                   data: str = DEFAULT_DATA, class_names: tuple[str, ...] | None = None
                   ) -> Callable[[B], B]: ...


def register_suite(name: Any = None, /, *, help: str | None = None, data: str = DEFAULT_DATA,
                   class_names: tuple[str, ...] | None = None) -> Any:
    """Decorator registering a suite builder with its :class:`SuiteFacts`.

    ``@register_suite`` (name from the function) or ``@register_suite("name",
    help=..., data=..., class_names=...)``. ``help`` defaults to the first line
    of the builder's docstring, ``data`` to :data:`DEFAULT_DATA`.

    Raises:
        UsageError: the name is taken, the builder takes positional arguments,
            or a fact is malformed; nothing is registered then.
    """
    def decorate(builder: B) -> B:
        key = name if isinstance(name, str) else builder.__name__
        facts = SuiteFacts(help if help is not None else _summary(builder, key), data,
                           None if class_names is None else tuple(class_names))
        SUITES.add(builder, name=key)
        SUITE_FACTS[key] = facts
        return builder

    if name is None or isinstance(name, str):
        return decorate
    return decorate(name)


def _summary(builder: Any, name: str) -> str:
    lines = (getattr(builder, "__doc__", None) or "").strip().splitlines()
    return lines[0].replace("``", "") if lines and lines[0].strip() else name


def suite_facts(name: str) -> SuiteFacts:
    """The facts of the registered suite ``name``.

    A builder registered on :data:`SUITES` directly has the default facts, its
    help the first line of its docstring.

    Raises:
        UsageError: the name is unknown (the valid names are listed).
    """
    builder = SUITES.get(name)
    return SUITE_FACTS.get(name) or SuiteFacts(_summary(builder, name))


def suite_dataset(name: str, folder: str | os.PathLike[str] | None = None) -> Dataset[Any]:
    """The images the suite ``name`` scores: its held-out set (:attr:`SuiteFacts.data`),
    read from ``folder`` if given.

    Raises:
        UsageError: the suite, or the held-out set it names, is unknown.
        InputError: the set's data is missing, or it takes no folder and got one.
    """
    # deferred: llrnet.data imports torchvision, which `import llrnet.eval` does not need
    from llrnet.data.held_out import load_held_out

    return load_held_out(suite_facts(name).data, folder)

list_suites = SUITES.names
"""Names of the registered suites, sorted."""


def get_suite(name: str, **options: Any) -> Suite:
    """Build the suite ``name`` with ``options`` (see each builder's docstring).

    Raises:
        UsageError: the name is unknown (the valid names are listed) or an option
            is not one the builder takes.
    """
    suite: Suite = SUITES.build(name, **options)
    return suite
