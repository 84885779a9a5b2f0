"""Convert recognized modules into llrnet models, and prove the result complete.

The mapping is derived from the module (:mod:`llrnet.hub.recognition.analyze`), never from
variable names: each recognized layer's variables go to the PyTorch parameter
or buffer in the same structural position, with layouts converted (conv HWIO ->
OIHW, dense (in, out) -> (out, in)). Completeness is then proved:

* every checkpoint variable is consumed exactly once, except optimizer slots and
  counters, which are listed as ignored;
* every parameter and buffer of the model is filled, either from a variable or
  by a listed rule (``num_batches_tracked`` = 0; a WRN's input normalization,
  which the module leaves to the caller);
* shapes are equal after conversion.

Anything else raises :class:`~llrnet.errors.WeightsError` with the exact lists.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from llrnet.errors import UsageError, WeightsError
from llrnet.hub.formats.module import HubModule
from llrnet.hub.recognition.analyze import Analysis, analyze
from llrnet.hub.recognition.graph import Layer
from llrnet.models import (
    BirdOrBicycleClassifier,
    ImageNetClassifier,
    WideResNet,
    create_model,
    list_models,
    model_arguments,
)

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
    checks: list[str] = field(default_factory=list)


class _Mapper:
    def __init__(self) -> None:
        self.assignments: list[Assignment] = []

    def add(self, key: str, source: str, variable: str, transform: Transform = same) -> None:
        self.assignments.append(Assignment(key, source, variable, transform))

    def conv(self, prefix: str, layer: Layer, source: str = "module") -> None:
        self.add(f"{prefix}.weight", source, layer.params["w"], hwio_to_oihw)
        if "b" in layer.params:
            self.add(f"{prefix}.bias", source, layer.params["b"])

    def bn(self, prefix: str, layer: Layer) -> None:
        roles = {"scale": "weight", "offset": "bias", "mean": "running_mean",
                 "variance": "running_var"}
        for role, name in roles.items():
            if role in layer.params:
                self.add(f"{prefix}.{name}", "module", layer.params[role])

    def dense(self, prefix: str, layer: Layer, transform: Transform, source: str) -> None:
        self.add(f"{prefix}.weight", source, layer.params["w"], transform)
        if "b" in layer.params:
            self.add(f"{prefix}.bias", source, layer.params["b"])


def _map_resnet(mapper: _Mapper, analysis: Analysis, prefix: str) -> None:
    trunk = analysis.trunk
    assert trunk is not None  # analyze() sets it for this family
    mapper.conv(f"{prefix}stem_conv", trunk.stem)
    index = 0
    for stage, count in enumerate(analysis.facts["units"]):
        for unit_index in range(count):
            unit = trunk.units[index]
            index += 1
            base = f"{prefix}stages.{stage}.{unit_index}"
            for i, (bn, conv) in enumerate(zip(unit.bns, unit.convs), start=1):
                mapper.bn(f"{base}.bn{i}", bn)
                mapper.conv(f"{base}.conv{i}", conv)
            if unit.shortcut is not None:
                mapper.conv(f"{base}.shortcut", unit.shortcut)
    mapper.bn(f"{prefix}final_bn", trunk.final_bn)


def _map_wrn(mapper: _Mapper, analysis: Analysis) -> None:
    trunk = analysis.trunk
    assert trunk is not None
    mapper.conv("stem_conv", trunk.stem)
    per_group = (analysis.facts["depth"] - 4) // 6
    for i, unit in enumerate(trunk.units):
        base = f"groups.{i // per_group}.{i % per_group}"
        for j, (bn, conv) in enumerate(zip(unit.bns, unit.convs), start=1):
            mapper.bn(f"{base}.bn{j}", bn)
            mapper.conv(f"{base}.conv{j}", conv)
        if unit.shortcut is not None:
            mapper.conv(f"{base}.shortcut", unit.shortcut)
    mapper.bn("final_bn", trunk.final_bn)


def _kwargs(architecture: str, analysis: Analysis) -> dict[str, Any]:
    accepted = model_arguments(architecture)
    facts = dict(analysis.facts)
    if facts.get("standard_depth"):
        facts["depth"] = facts["standard_depth"]
    names = ("units", "widths", "stem_width", "padding", "bn_eps", "stride_in", "stem_bias",
             "out_bias", "bn_scale", "num_classes", "in_channels", "depth", "width",
             "activation")
    kwargs = {}
    for name in names:
        if name in accepted and name in facts:
            value = facts[name]
            kwargs[name] = list(value) if isinstance(value, tuple) else value
    if analysis.family == "resnet_v2" and "depth" in accepted and not facts.get("standard_depth"):
        raise UsageError(f"{architecture} takes a standard depth, but the module's units "
                           f"{facts['units']} are not ResNet-50/101/152")
    return kwargs


def _structure_of(model: nn.Module) -> dict[str, Any]:
    """Units/widths (ResNetV2) or depth/width (WRN) of a built model."""
    trunk = getattr(model, "trunk", None)
    if trunk is not None and hasattr(trunk, "stages"):
        return {"units": tuple(len(stage) for stage in trunk.stages),
                "widths": tuple(stage[0].conv1.out_channels for stage in trunk.stages),
                "stem_width": trunk.stem_conv.out_channels}
    if isinstance(model, WideResNet):
        first: Any = model.groups[0]
        return {"depth": 6 * len(first) + 4, "width": first[0].conv1.out_channels // 16}
    return {}


def _check_family(model: nn.Module, architecture: str, analysis: Analysis,
                  module: HubModule) -> None:
    has_head = analysis.trunk is not None and analysis.trunk.head is not None
    if analysis.family == "wide_resnet":
        expected: type[nn.Module] = WideResNet
        what = "a Wide-ResNet"
    elif has_head:
        expected, what = ImageNetClassifier, "a ResNet v2 classifier (with a dense head)"
    else:
        expected, what = BirdOrBicycleClassifier, "a ResNet v2 latents module (no head)"
    if not isinstance(model, expected):
        raise UsageError(f"{module.path} is {what}; {architecture} is a "
                         f"{type(model).__name__}, not a {expected.__name__}")
    if isinstance(model, WideResNet) and model.act.__name__ != analysis.facts["activation"]:
        raise UsageError(f"{module.path} uses {analysis.facts['activation']}; "
                         f"{architecture} uses {model.act.__name__}")


def _check_structure(model: nn.Module, architecture: str, analysis: Analysis) -> None:
    have = _structure_of(model)
    want = {k: analysis.facts[k] for k in have if k in analysis.facts}
    if have != want:
        raise UsageError(f"the module is a {analysis.family} with {want}, but {architecture} "
                         f"has {have}; choose the matching architecture")


def convert(module: HubModule, *, architecture: str, linear: HubModule | None = None
            ) -> Conversion:
    """Build ``architecture`` configured from ``module`` (and ``linear``) and fill it.

    Raises:
        UsageError: unknown architecture, or a module that does not fit it.
        WeightsError: the completeness proof fails (the message lists what).
    """
    if architecture not in list_models():
        raise UsageError(f"unknown architecture {architecture!r}; choose from "
                         f"{', '.join(list_models())}")
    analysis = analyze(module)
    if analysis.family == "linear":
        raise UsageError(f"{module.path} is a linear head module; pass the latents module "
                         "as PATH and this one with --linear")
    if analysis.graph.input_scaling:
        raise UsageError(
            f"{module.path} scales its input inside the graph ({analysis.facts['input_scaling']})"
            "; llrnet's architectures apply their own preprocessing, so this module is not "
            "supported as is")
    kwargs = _kwargs(architecture, analysis)
    # Built on the meta device: no memory, no random init (seconds for ResNet-152);
    # the converted tensors are assigned in _fill.
    with torch.device("meta"):
        model = create_model(architecture, **kwargs)
    _check_family(model, architecture, analysis, module)
    _check_structure(model, architecture, analysis)
    mapper = _Mapper()
    sources = {"module": module}
    head_analysis = None
    if analysis.family == "wide_resnet":
        _map_wrn(mapper, analysis)
        if analysis.trunk is None or analysis.trunk.head is None:
            raise UsageError(f"{module.path}: Wide-ResNet without a classification head")
        mapper.dense("fc", analysis.trunk.head, io_to_oi, "module")
    elif isinstance(model, BirdOrBicycleClassifier):
        if linear is None:
            raise UsageError(f"{architecture} needs the linear head module too: --linear PATH")
        head_analysis = analyze(linear)
        if head_analysis.family != "linear":
            raise UsageError(f"{linear.path} is not a linear head module")
        _map_resnet(mapper, analysis, "trunk.")
        mapper.dense("linear", head_analysis.graph.layers[0], io_to_oi11, "linear")
        sources["linear"] = linear
    elif isinstance(model, ImageNetClassifier):
        if analysis.trunk is None or analysis.trunk.head is None:
            raise UsageError(f"{module.path} has no classification head; for latents modules "
                             "use a bird-or-bicycle architecture with --linear")
        _map_resnet(mapper, analysis, "trunk.")
        mapper.dense("fc", analysis.trunk.head, io_to_oi, "module")
    else:
        raise UsageError(f"{architecture} ({type(model).__name__}) is not a target of the "
                         f"TF-Hub import ({analysis.family} module)")
    conversion = _fill(model, architecture, kwargs, analysis, mapper, sources)
    if head_analysis is not None:
        conversion.facts["linear"] = head_analysis.facts
    return conversion


def _constructor_values(architecture: str, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Buffers as the architecture's constructor sets them (not from the module)."""
    return dict(create_model(architecture, **kwargs).state_dict())


def _fill(model: nn.Module, architecture: str, kwargs: dict[str, Any], analysis: Analysis,
          mapper: _Mapper, sources: dict[str, HubModule]) -> Conversion:
    expected = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    uses: Counter[tuple[str, str]] = Counter((a.source, a.variable) for a in mapper.assignments)
    twice = sorted(f"{s}:{v}" for (s, v), n in uses.items() if n > 1)
    if twice:
        problems.append(f"variables used more than once: {', '.join(twice)}")
    ignored: dict[str, list[str]] = {}
    for label, module in sources.items():
        unused = [n for n in module.reader.names() if (label, n) not in uses]
        ignored[label] = [n for n in unused if any(p.search(n) for p in IGNORED_PATTERNS)]
        left = sorted(set(unused) - set(ignored[label]))
        if left:
            problems.append(f"{label} variables not consumed: {', '.join(left)}")
    keys = Counter(a.key for a in mapper.assignments)
    doubled = sorted(k for k, n in keys.items() if n > 1)
    if doubled:
        problems.append(f"tensors filled more than once: {', '.join(doubled)}")
    for assignment in mapper.assignments:
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
    derived: dict[str, str] = {}
    not_filled: list[str] = []
    constructed: dict[str, torch.Tensor] = {}
    for key, target in expected.items():
        if key in tensors:
            continue
        if key.endswith("num_batches_tracked"):
            tensors[key] = torch.zeros(target.shape, dtype=target.dtype)
            derived[key] = "0 (TF keeps no batch counter; unused with a fixed momentum)"
        elif key in ("normalize.mean", "normalize.std") and analysis.family == "wide_resnet":
            constructed = constructed or _constructor_values(architecture, kwargs)
            tensors[key] = constructed[key].clone()
            derived[key] = ("the architecture's input normalization (the module expects "
                            "normalized inputs)")
        elif key not in keys:
            not_filled.append(key)
    if not_filled:
        problems.append(f"model tensors not filled: {', '.join(not_filled)}")
    if problems:
        raise WeightsError(f"{architecture}: import is incomplete; " + "; ".join(problems))
    # Names and shapes were proved equal above; assign=True adopts the tensors
    # instead of copying them into the (meta) model.
    model.load_state_dict(tensors, strict=True, assign=True)
    model.eval()
    n_vars = sum(len(m.reader.names()) for m in sources.values())
    n_ignored = sum(len(v) for v in ignored.values())
    checks = [
        "crc32c: index blocks and tensors verified" if all(m.reader.verify
                                                          for m in sources.values())
        else "crc32c: skipped (verify=False)",
        f"structure: {len(mapper.assignments)} of {n_vars} variables consumed exactly once "
        f"({n_ignored} ignored: optimizer slots/counters)",
        f"structure: {len(tensors)} of {len(expected)} model tensors filled "
        f"({len(derived)} by rule), shapes equal",
        "options from the graph: " + ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items())),
    ]
    return Conversion(model, architecture, kwargs, dict(analysis.facts), mapper.assignments,
                      derived, ignored, checks)
