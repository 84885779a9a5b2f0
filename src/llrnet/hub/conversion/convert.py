"""Convert recognized modules into llrnet models, and prove the result complete.
More: docs/hub.md, "llrnet.hub.conversion.convert"."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from llrnet.core.errors import UsageError, WeightsError
from llrnet.hub.formats.module import HubModule
from llrnet.hub.recognition.analyze import Analysis, analyze
from llrnet.hub.recognition.structure import OPTIONS, slot
from llrnet.models import BirdOrBicycleClassifier, WideResNet, list_models, model_arguments
from llrnet.models.classifier import ImageNetClassifier
from llrnet.models.layout import Importable, Layout, Target
from llrnet.models.registry import build_model

Transform = Callable[[np.ndarray], np.ndarray]

IGNORED_PATTERNS = (
    re.compile(r"(^|/)(global_step|count|counter|step)$"),
    re.compile(r"(^|/)(beta1_power|beta2_power)$"),
    re.compile(r"/(Momentum|Adam|Adam_1|RMSProp|RMSProp_1|Adagrad|Ftrl|Ftrl_1|"
               r"ExponentialMovingAverage)(/|$)"),
)
"""Optimizer slots and counters: not part of the network, listed as ignored."""


def hwio_to_oihw(w: np.ndarray) -> np.ndarray:
    """TF conv kernel [H, W, in, out] -> PyTorch [out, in, H, W]."""
    return np.ascontiguousarray(np.transpose(w, (3, 2, 0, 1)))


def io_to_oi(w: np.ndarray) -> np.ndarray:
    """TF dense kernel [in, out] (or a 1x1 conv kernel) -> PyTorch Linear [out, in]."""
    return np.ascontiguousarray(w.reshape(w.shape[-2], w.shape[-1]).T)


def io_to_oi11(w: np.ndarray) -> np.ndarray:
    """TF dense kernel [in, out] or 1x1 conv kernel -> PyTorch 1x1 conv [out, in, 1, 1]."""
    return io_to_oi(w)[:, :, None, None]


def same(w: np.ndarray) -> np.ndarray:
    return w


def transform_for(target: Target, role: str) -> Transform:
    """How the variable in ``role`` of ``target.slot`` becomes the target's tensor."""
    if role != "w" or target.form == "batch_norm":
        return same
    if target.form == "linear":
        return io_to_oi
    return hwio_to_oihw if target.slot.kind == "conv" else io_to_oi11


@dataclass(frozen=True)
class ModuleKind:
    """What a recognized module is, the llrnet class it converts into, the
    registered family builder that takes every structural option, and whether
    its head is a separate linear module (``--linear``)."""

    what: str
    target: type[nn.Module]
    family: str
    separate_head: bool = False


def module_kind(analysis: Analysis) -> ModuleKind:
    """The kind of a recognized (non-linear) module.

    A variant of a family (another WRN layout, say) subclasses or extends the
    family's class and brings its own ``import_layout``; only a new family of
    modules adds a kind here.
    """
    if analysis.family == "wide_resnet":
        return ModuleKind("a Wide-ResNet", WideResNet, "wide_resnet")
    if analysis.trunk is not None and analysis.trunk.head is not None:
        return ModuleKind("a ResNet v2 classifier (with a dense head)", ImageNetClassifier,
                          "resnet_v2_classifier")
    return ModuleKind("a ResNet v2 latents module (no head)", BirdOrBicycleClassifier,
                      "resnet_v2_bird_or_bicycle", separate_head=True)


FAMILIES = frozenset({"wide_resnet", "resnet_v2_classifier", "resnet_v2_bird_or_bicycle"})
"""The family builders (every structural option an argument), never chosen by name."""

UNSEEN_OPTIONS = ("padding", "bn_eps", "stride_in")
"""Options that change the computed function but no tensor's name or shape: a
registered name matches a module only if it takes them as arguments."""


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def choose_architecture(analysis: Analysis) -> tuple[str, str]:
    """The registered name for a recognized module, and why it was chosen.

    A name matches exactly when its builder, with its defaults, is the module:
    the options it takes from the module equal its defaults, it takes every
    option that no tensor shape shows (:data:`UNSEEN_OPTIONS`), its structure
    (activation, depth, variant, ...) equals the module's, and its state dict has
    the family model's names and shapes. Otherwise the family builder is used;
    its arguments say everything, so ``load_weights`` rebuilds the model.
    """
    kind = module_kind(analysis)
    with torch.device("meta"):
        reference = _state_shapes(build_model(kind.family, **_kwargs(kind.family, analysis)))
    family_options = set(model_arguments(kind.family))
    matches: list[str] = []
    for name in list_models():
        if name in FAMILIES:
            continue
        accepted = model_arguments(name)
        if any(o in family_options and o not in accepted for o in UNSEEN_OPTIONS):
            continue
        try:
            kwargs = _kwargs(name, analysis)
        except UsageError:
            continue
        if any(_plain(accepted[k]) != _plain(v) for k, v in kwargs.items()):
            continue
        with torch.device("meta"):
            model = build_model(name)
        if not isinstance(model, kind.target) or not isinstance(model, Importable):
            continue
        have = model.import_structure()
        if any(have[k] != analysis.facts.get(k) for k in have) or \
                _state_shapes(model) != reference:
            continue
        matches.append(name)
    if matches:
        others = f" (also: {', '.join(matches[1:])})" if len(matches) > 1 else ""
        return matches[0], f"registered name matching the module exactly{others}"
    return kind.family, (f"family builder {kind.family} (no registered name matches the "
                         "module exactly); the weights record every argument")


@dataclass
class Assignment:
    """One filled tensor: ``key`` of the model from ``variable`` of ``source``."""

    key: str
    source: str  # "module" or "linear"
    variable: str
    transform: Transform


@dataclass
class Conversion:
    """The converted model and the evidence that it is complete."""

    model: nn.Module
    architecture: str
    kwargs: dict[str, Any]
    facts: dict[str, Any]
    assignments: list[Assignment]
    derived: dict[str, str]  # key -> rule
    ignored: dict[str, list[str]]  # source -> variables
    bookkeeping: dict[str, dict[str, str]] = field(default_factory=dict)
    """source -> {counter variable: how it was recognized}; also in ``ignored``."""
    checks: list[str] = field(default_factory=list)


def _kwargs(architecture: str, analysis: Analysis) -> dict[str, Any]:
    accepted = model_arguments(architecture)
    facts = dict(analysis.facts)
    if facts.get("standard_depth"):
        facts["depth"] = facts["standard_depth"]
    kwargs = {}
    for name in OPTIONS:
        if name in accepted and name in facts:
            value = facts[name]
            kwargs[name] = list(value) if isinstance(value, tuple) else value
    if analysis.family == "resnet_v2" and "depth" in accepted and not facts.get("standard_depth"):
        raise UsageError(f"{architecture} takes a standard depth, but the module's units "
                           f"{facts['units']} are not ResNet-50/101/152")
    return kwargs


def _check_kind(model: nn.Module, architecture: str, kind: ModuleKind, analysis: Analysis,
                module: HubModule) -> Importable:
    if not isinstance(model, kind.target):
        raise UsageError(f"{module.path} is {kind.what}; {architecture} is a "
                         f"{type(model).__name__}, not a {kind.target.__name__}")
    if not isinstance(model, Importable):
        raise UsageError(f"{architecture} ({type(model).__name__}) is not a target of the "
                         f"TF-Hub import ({analysis.family} module)")
    return model


def _check_structure(model: Importable, architecture: str, analysis: Analysis,
                     module: HubModule) -> None:
    have = model.import_structure()
    # A different activation is a different function, not a different size: said first.
    activation = have.pop("activation", None)
    if activation is not None and activation != analysis.facts["activation"]:
        raise UsageError(f"{module.path} uses {analysis.facts['activation']}; "
                         f"{architecture} uses {activation}")
    want = {k: analysis.facts[k] for k in have if k in analysis.facts}
    if have != want:
        raise UsageError(f"the module is a {analysis.family} with {want}, but {architecture} "
                         f"has {have}; choose the matching architecture")


def convert(module: HubModule, *, architecture: str | None = None,
            linear: HubModule | None = None) -> Conversion:
    """Build ``architecture`` configured from ``module`` (and ``linear``) and fill it.

    Without ``architecture`` the family and every constructor argument come from
    the module (:func:`choose_architecture`).

    Raises:
        UsageError: unknown architecture, or a module that does not fit it.
        WeightsError: the completeness proof fails (the message lists what).
    """
    if architecture is not None and architecture not in list_models():
        raise UsageError(f"unknown architecture {architecture!r}; choose from "
                         f"{', '.join(list_models())}")
    analysis = analyze(module)
    if analysis.family == "linear" or analysis.trunk is None:
        raise UsageError(f"{module.path} is a linear head module; pass the latents module "
                         "as PATH and this one with --linear")
    choice = "given (--arch)"
    if architecture is None:
        architecture, choice = choose_architecture(analysis)
    if analysis.graph.input_scaling:
        raise UsageError(
            f"{module.path} scales its input inside the graph ({analysis.facts['input_scaling']})"
            "; llrnet's architectures apply their own preprocessing, so this module is not "
            "supported as is")
    kwargs = _kwargs(architecture, analysis)
    # Built on the meta device: no memory, no random init (seconds for ResNet-152);
    # the converted tensors are assigned in _fill.
    with torch.device("meta"):
        model = build_model(architecture, **kwargs)
    kind = module_kind(analysis)
    importable = _check_kind(model, architecture, kind, analysis, module)
    _check_structure(importable, architecture, analysis, module)
    network = analysis.trunk.network()
    sources = {"module": module}
    head_analysis = None
    if kind.separate_head:
        if linear is None:
            raise UsageError(f"{architecture} needs the linear head module too: --linear PATH")
        head_analysis = analyze(linear)
        if head_analysis.family != "linear":
            raise UsageError(f"{linear.path} is not a linear head module")
        network = replace(network, head=slot(head_analysis.graph.layers[0], "linear"))
        sources["linear"] = linear
    elif network.head is None:
        raise UsageError(f"{module.path} is {kind.what} without a classification head")
    layout = importable.import_layout(network)
    counters = {"module": analysis.counters}
    if head_analysis is not None:
        counters["linear"] = head_analysis.counters
    conversion = _fill(model, architecture, kwargs, analysis, layout, sources, counters)
    if head_analysis is not None:
        conversion.facts["linear"] = head_analysis.facts
    conversion.facts["architecture"] = architecture
    conversion.facts["architecture_choice"] = choice
    conversion.checks.append(f"architecture: {architecture}, {choice}")
    return conversion


def _assignments(layout: Layout) -> tuple[list[Assignment], list[str]]:
    """Every (variable, tensor) pair the layout names; and the roles no tensor takes."""
    assignments: list[Assignment] = []
    problems: list[str] = []
    for target in layout.targets:
        variables = target.slot.variables
        keys = target.keys()
        for role, key in keys.items():
            if role in variables:
                assignments.append(Assignment(key, target.slot.source, variables[role],
                                              transform_for(target, role)))
        problems += [f"no model tensor for {variables[role]} ({role} of {target.module})"
                     for role in variables if role not in keys]
    return assignments, problems


def _constructor_values(architecture: str, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Buffers as the architecture's constructor sets them (not from the module)."""
    return dict(build_model(architecture, **kwargs).state_dict())


def _fill(model: nn.Module, architecture: str, kwargs: dict[str, Any], analysis: Analysis,
          layout: Layout, sources: dict[str, HubModule],
          counters: dict[str, dict[str, str]]) -> Conversion:
    """Fill ``model`` from ``sources`` by ``layout``'s assignments, proving that every
    variable is consumed once (or ignored) and every model tensor filled once.

    Raises:
        WeightsError: any of those fails (every problem listed, in this order).
    """
    expected = model.state_dict()
    assignments, problems = _assignments(layout)
    uses: Counter[tuple[str, str]] = Counter((a.source, a.variable) for a in assignments)
    problems += _twice("variables used more than once", uses, lambda u: f"{u[0]}:{u[1]}")
    ignored, bookkeeping = _unused_variables(sources, uses, counters, problems)
    keys = Counter(a.key for a in assignments)
    problems += _twice("tensors filled more than once", keys)
    tensors = _read_tensors(assignments, sources, expected, problems)
    derived = _derive_rest(tensors, expected, keys, layout, architecture, kwargs, problems)
    if problems:
        raise WeightsError(f"{architecture}: import is incomplete; " + "; ".join(problems))
    # Names and shapes were proved equal above; assign=True adopts the tensors
    # instead of copying them into the (meta) model.
    model.load_state_dict(tensors, strict=True, assign=True)
    model.eval()
    checks = _checks(sources, len(assignments), ignored, bookkeeping, tensors, expected,
                     derived, kwargs)
    return Conversion(model, architecture, kwargs, dict(analysis.facts), assignments,
                      derived, ignored, {k: v for k, v in bookkeeping.items() if v}, checks)


def _twice(what: str, counts: Counter[Any], show: Callable[[Any], str] = str) -> list[str]:
    """``["<what>: a, b"]`` naming (sorted, by ``show``) the items counted more than
    once; [] if there are none."""
    repeated = sorted(show(item) for item, n in counts.items() if n > 1)
    return [f"{what}: {', '.join(repeated)}"] if repeated else []


def _unused_variables(sources: dict[str, HubModule], uses: Counter[tuple[str, str]],
                      counters: dict[str, dict[str, str]], problems: list[str]
                      ) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """``(ignored, bookkeeping)`` per source label: the unused variables that are
    optimizer slots or counters, and the graph counters among them ({name: rule}).
    Any other unused variable is a problem (appended to ``problems``)."""
    ignored: dict[str, list[str]] = {}
    bookkeeping: dict[str, dict[str, str]] = {}
    for label, module in sources.items():
        unused = [n for n in module.reader.names() if (label, n) not in uses]
        bookkeeping[label] = {n: counters[label][n] for n in unused if n in counters[label]}
        ignored[label] = [n for n in unused if n in bookkeeping[label]
                          or any(p.search(n) for p in IGNORED_PATTERNS)]
        left = sorted(set(unused) - set(ignored[label]))
        if left:
            problems.append(f"{label} variables not consumed: {', '.join(left)}")
    return ignored, bookkeeping


def _read_tensors(assignments: list[Assignment], sources: dict[str, HubModule],
                  expected: dict[str, torch.Tensor], problems: list[str]
                  ) -> dict[str, torch.Tensor]:
    """{model key: tensor} read and transformed from the sources, in the model's dtypes;
    a missing key or a wrong shape is a problem (appended to ``problems``)."""
    tensors: dict[str, torch.Tensor] = {}
    for assignment in assignments:
        if assignment.key not in expected:
            problems.append(f"no model tensor {assignment.key} for {assignment.variable}")
            continue
        value = assignment.transform(sources[assignment.source].reader.read(assignment.variable))
        target = expected[assignment.key]
        if tuple(value.shape) != tuple(target.shape):
            problems.append(f"shape of {assignment.key}: {tuple(target.shape)} but "
                            f"{assignment.variable} gives {tuple(value.shape)}")
            continue
        if not value.flags.writeable or not value.flags.c_contiguous:
            value = np.array(value)  # a copy: the reader's arrays are read-only mmap views
        tensors[assignment.key] = torch.from_numpy(value).to(target.dtype)
    return tensors


def _derive_rest(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                 assigned: Counter[str], layout: Layout, architecture: str,
                 kwargs: dict[str, Any], problems: list[str]) -> dict[str, str]:
    """Fill (into ``tensors``) the model tensors no variable gives that a rule does:
    batch counters (0) and ``layout.constructed`` buffers (as the constructor sets
    them); {key: rule}. Tensors neither assigned nor derived are a problem."""
    constructed_rules = layout.constructed or {}
    derived: dict[str, str] = {}
    not_filled: list[str] = []
    constructed: dict[str, torch.Tensor] = {}
    for key, target in expected.items():
        if key in tensors:
            continue
        if key.endswith("num_batches_tracked"):
            tensors[key] = torch.zeros(target.shape, dtype=target.dtype)
            derived[key] = "0 (TF keeps no batch counter; unused with a fixed momentum)"
        elif key in constructed_rules:
            constructed = constructed or _constructor_values(architecture, kwargs)
            tensors[key] = constructed[key].clone()
            derived[key] = constructed_rules[key]
        elif key not in assigned:
            not_filled.append(key)
    if not_filled:
        problems.append(f"model tensors not filled: {', '.join(not_filled)}")
    return derived


def _checks(sources: dict[str, HubModule], consumed: int, ignored: dict[str, list[str]],
            bookkeeping: dict[str, dict[str, str]], tensors: dict[str, torch.Tensor],
            expected: dict[str, torch.Tensor], derived: dict[str, str],
            kwargs: dict[str, Any]) -> list[str]:
    """The conversion's checks, one line each, for the weights file's record."""
    n_vars = sum(len(m.reader.names()) for m in sources.values())
    n_ignored = sum(len(v) for v in ignored.values())
    n_counters = sum(len(v) for v in bookkeeping.values())
    return [
        "crc32c: index blocks and tensors verified" if all(m.reader.verify
                                                          for m in sources.values())
        else "crc32c: skipped (verify=False)",
        f"structure: {consumed} of {n_vars} variables consumed exactly once "
        f"({n_ignored} ignored: optimizer slots/counters)",
        *([f"bookkeeping: {n_counters} counters recognized from the graphs (scalars only "
           "ever incremented by a constant, e.g. a batch norm's update count); not part of "
           "the computed function"] if n_counters else []),
        f"structure: {len(tensors)} of {len(expected)} model tensors filled "
        f"({len(derived)} by rule), shapes equal",
        "options from the graph: " + ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items())),
    ]
