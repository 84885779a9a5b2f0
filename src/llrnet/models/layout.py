"""Structural positions: how an importer describes a network, and how a model maps it. The
layout is plain data, so each architecture owns its import mapping and ``models`` never
imports the hub.
More: docs/models.md, "llrnet.models.layout"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

Form = Literal["conv", "linear", "batch_norm"]
"""The PyTorch module a slot fills: ``nn.Conv2d`` (kernel ``[out, in, kh, kw]``),
``nn.Linear`` (weight ``[out, in]``) or a batch norm."""

TENSOR_NAMES: dict[str, dict[str, str]] = {
    "conv": {"w": "weight", "b": "bias"},
    "linear": {"w": "weight", "b": "bias"},
    "batch_norm": {"scale": "weight", "offset": "bias", "mean": "running_mean",
                   "variance": "running_var"},
}
"""PyTorch's tensor name for each role, per form (``nn.Conv2d``, ``nn.Linear``,
``nn.BatchNorm2d``)."""


@dataclass(frozen=True)
class Slot:
    """One recognized layer: its kind (``"conv"``, ``"dense"`` or ``"bn"``), the
    source's variable name per role, and which of the importer's inputs holds them
    (``"module"``; the bird-or-bicycle head comes from a second, ``"linear"``, module)."""

    kind: str
    variables: Mapping[str, str]
    source: str = "module"


@dataclass(frozen=True)
class Unit:
    """One pre-activation residual unit: its i-th batch norm feeds its i-th convolution."""

    bns: tuple[Slot, ...]
    convs: tuple[Slot, ...]
    shortcut: Slot | None = None  # a projection convolution; None: identity or subsample


@dataclass(frozen=True)
class Network:
    """A recognized residual network, stem to head, in forward order."""

    stem: Slot
    units: tuple[Unit, ...]
    final_bn: Slot
    head: Slot | None = None


@dataclass(frozen=True)
class Target:
    """The module that ``slot`` fills: its state-dict prefix ``module`` and its ``form``.

    ``names`` maps roles to the module's tensor names; by default
    :data:`TENSOR_NAMES` of the form. A module with a tensor of its own (a batch
    norm that keeps a counter, say) passes its own ``names``.
    """

    slot: Slot
    module: str
    form: Form
    names: Mapping[str, str] | None = None

    def keys(self) -> dict[str, str]:
        """The state-dict key of every role the module has, in its names' order."""
        names = TENSOR_NAMES[self.form] if self.names is None else self.names
        return {role: f"{self.module}.{name}" for role, name in names.items()}


@dataclass(frozen=True)
class Layout:
    """Where a network's slots go in a model.

    ``targets`` in forward order; ``constructed`` names the tensors that keep the
    constructor's value, each with the reason (for example an input
    normalization that the source leaves to its caller).
    """

    targets: tuple[Target, ...]
    constructed: Mapping[str, str] | None = None

    def with_targets(self, *targets: Target) -> Layout:
        """This layout with ``targets`` appended (a wrapper adding its head)."""
        return Layout((*self.targets, *targets), self.constructed)


@runtime_checkable
class Importable(Protocol):
    """A model that can be filled from a recognized :class:`Network`."""

    def import_structure(self) -> dict[str, Any]:
        """The structural facts a source must share with this model."""
        ...

    def import_layout(self, network: Network, prefix: str = "") -> Layout:
        """Where each slot of ``network`` goes, under the state-dict ``prefix``."""
        ...


def conv(slot: Slot, module: str) -> Target:
    """``slot`` fills the ``nn.Conv2d`` at ``module``."""
    return Target(slot, module, "conv")


def linear(slot: Slot, module: str) -> Target:
    """``slot`` fills the ``nn.Linear`` at ``module``."""
    return Target(slot, module, "linear")


def batch_norm(slot: Slot, module: str) -> Target:
    """``slot`` fills the batch norm at ``module``."""
    return Target(slot, module, "batch_norm")


def residual_unit(unit: Unit, module: str) -> list[Target]:
    """A unit into a block whose i-th batch norm and convolution are ``bn{i}`` and
    ``conv{i}`` (from 1) and whose projection is ``shortcut``."""
    targets: list[Target] = []
    for i, (bn, convolution) in enumerate(zip(unit.bns, unit.convs), start=1):
        targets += [batch_norm(bn, f"{module}.bn{i}"), conv(convolution, f"{module}.conv{i}")]
    if unit.shortcut is not None:
        targets.append(conv(unit.shortcut, f"{module}.shortcut"))
    return targets


def importable(model: object) -> Importable:
    """``model`` as an :class:`Importable` (a wrapper asking its trunk).

    Raises:
        TypeError: ``model`` has no ``import_structure``/``import_layout``.
    """
    if not isinstance(model, Importable):
        raise TypeError(f"{type(model).__name__} has no import layout")
    return model
