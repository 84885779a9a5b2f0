"""Architecture facts read from a module's layer graph (:mod:`llrnet.hub.recognition.graph`).
More: docs/hub.md, "llrnet.hub.recognition.structure"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llrnet.core.errors import InputError
from llrnet.hub.recognition.graph import Layer, LayerGraph
from llrnet.models import layout

Shapes = dict[str, tuple[int, ...]]

OPTIONS = ("units", "widths", "stem_width", "padding", "bn_eps", "stride_in", "stem_bias",
           "out_bias", "bn_scale", "num_classes", "in_channels", "depth", "width", "activation",
           "variant")
"""The facts that are constructor options of llrnet's architectures."""


@dataclass
class Unit:
    """One residual unit: its batch norms and convolutions in forward order."""

    bns: list[Layer]
    convs: list[Layer]
    shortcut: Layer | None  # projection convolution
    subsample: int  # stride of a 1x1 max-pool shortcut (1: identity or projection)
    add: Layer


@dataclass
class Trunk:
    """The recognized network, stem to head."""

    stem: Layer
    pool: Layer | None
    units: list[Unit]
    final_bn: Layer
    activation: str
    mean: Layer | None
    head: Layer | None
    layers: list[Layer] = field(default_factory=list)

    def network(self) -> layout.Network:
        """The trunk by structural position, with each layer's variables by role."""
        units = tuple(layout.Unit(tuple(map(slot, u.bns)), tuple(map(slot, u.convs)),
                                  None if u.shortcut is None else slot(u.shortcut))
                      for u in self.units)
        return layout.Network(slot(self.stem), units, slot(self.final_bn),
                              None if self.head is None else slot(self.head))


def slot(layer: Layer, source: str = "module") -> layout.Slot:
    """``layer`` as a :class:`~llrnet.models.layout.Slot` of the input ``source``."""
    return layout.Slot(layer.kind, dict(layer.params), source)


def _layer(graph: LayerGraph, index: int, what: str) -> Layer:
    if index < 0:
        raise InputError(f"the graph's {what} is the input itself; not a recognized network")
    return graph.layers[index]


def parse_trunk(graph: LayerGraph) -> Trunk:
    """Recognize a pre-activation residual network in ``graph``."""
    if graph.unsupported:
        raise InputError("unsupported ops on the forward path: " + ", ".join(graph.unsupported))
    index, after = graph.output_layer()
    if after is not None:
        raise InputError(f"the output is an activation ({after}) of a layer, not logits/latents")
    last = _layer(graph, index, "output")
    head = None
    if last.kind == "dense" or (last.kind == "conv" and graph.layers[last.sources[0]].kind
                                == "mean"):
        head = last
        last = _layer(graph, last.sources[0], "head input")
    mean = None
    if last.kind == "mean":
        mean = last
        if mean.attrs.get("axes") != [1, 2]:
            raise InputError(f"{mean.node}: mean over axes {mean.attrs.get('axes')}, not [1, 2]")
        last = _layer(graph, mean.sources[0], "pool input")
    if last.kind != "bn":
        raise InputError(f"expected the final batch norm before the pool, found {last.kind} "
                         f"({last.node})")
    final_bn = last
    activation = (mean.activation if mean is not None else None) or "none"
    units: list[Unit] = []
    current = _layer(graph, final_bn.sources[0], "final batch norm input")
    while current.kind == "add":
        unit, unit_input = _parse_unit(graph, current)
        units.insert(0, unit)
        current = _layer(graph, unit_input, "unit input")
    pool = None
    if current.kind == "pool":
        pool = current
        current = _layer(graph, pool.sources[0], "stem pool input")
    if current.kind != "conv" or current.sources != [-1]:
        raise InputError(f"expected the stem convolution on the input, found {current.kind} "
                         f"({current.node})")
    if not units:
        raise InputError("no residual units found between the stem and the final batch norm")
    return Trunk(current, pool, units, final_bn, activation, mean, head, graph.layers)


def _parse_unit(graph: LayerGraph, add: Layer) -> tuple[Unit, int]:
    for main, other in (add.sources, add.sources[::-1]):
        for found in _hypotheses(graph, main, other):
            if found is not None:
                bns, convs, shortcut, subsample, unit_input = found
                return Unit(bns, convs, shortcut, subsample, add), unit_input
    raise InputError(f"{add.node}: residual sum not recognized as a pre-activation unit")


Found = tuple[list[Layer], list[Layer], "Layer | None", int, int]


def _hypotheses(graph: LayerGraph, main: int, other: int) -> list[Found | None]:
    """The shortcut ``other`` as projection, 1x1 max-pool subsample, or identity."""
    other_layer = graph.layers[other] if other >= 0 else None
    found: list[Found | None] = []
    if other_layer is not None and other_layer.kind == "conv" and other_layer.sources[0] >= 0:
        anchor = other_layer.sources[0]
        found.append(_walk(graph, main, anchor=anchor, unit_input=graph.layers[anchor].sources[0],
                           shortcut=other_layer))
    if other_layer is not None and other_layer.kind == "pool" \
            and other_layer.attrs.get("ksize") == [1, 1, 1, 1]:
        found.append(_walk(graph, main, anchor=None, unit_input=other_layer.sources[0],
                           subsample=int(other_layer.attrs["strides"][1])))
    found.append(_walk(graph, main, anchor=None, unit_input=other))
    return found


def _walk(graph: LayerGraph, main: int, *, anchor: int | None, unit_input: int,
          shortcut: Layer | None = None, subsample: int = 1) -> Found | None:
    """Walk the main branch back (conv <- bn ...) to the unit's first batch norm."""
    convs: list[Layer] = []
    bns: list[Layer] = []
    index = main
    for _ in range(8):
        if index < 0 or graph.layers[index].kind != "conv":
            return None
        conv = graph.layers[index]
        convs.insert(0, conv)
        bn_index = conv.sources[0]
        if bn_index < 0 or graph.layers[bn_index].kind != "bn":
            return None
        bn = graph.layers[bn_index]
        bns.insert(0, bn)
        if bn_index == anchor or (anchor is None and bn.sources[0] == unit_input):
            if len(convs) < 2 or bn.sources[0] != unit_input:
                return None
            return bns, convs, shortcut, subsample, unit_input
        index = bn.sources[0]
    return None


def _single(values: set[Any], what: str) -> Any:
    if len(values) != 1:
        raise InputError(f"layers disagree on {what}: {sorted(map(str, values))}")
    return next(iter(values))


def _padding(trunk: Trunk, shapes: Shapes) -> str:
    kinds = set()
    for layer in trunk.layers:
        if layer.kind not in ("conv", "pool"):
            continue
        if layer.pad is not None:
            kernel = (shapes[layer.params["w"]][0] if layer.kind == "conv"
                      else layer.attrs["ksize"][1])
            (_, _), (top, bottom), (left, right), (_, _) = layer.pad
            if layer.attrs.get("padding") != "VALID" or {top, bottom, left, right} != {kernel // 2}:
                raise InputError(f"{layer.node}: explicit padding {layer.pad} is neither TF "
                                 "SAME nor symmetric k//2")
            kinds.add("symmetric")
        elif layer.attrs.get("padding") == "SAME":
            kinds.add("same")
        else:
            kernel = (shapes[layer.params["w"]][0] if layer.kind == "conv"
                      else layer.attrs["ksize"][1])
            if kernel != 1:
                raise InputError(f"{layer.node}: VALID padding without Pad is not supported")
    if trunk.units and {"same", "symmetric"} <= kinds:
        raise InputError("mixed padding conventions (TF SAME and symmetric) in one network")
    return "symmetric" if kinds == {"symmetric"} else "same"


def _common(trunk: Trunk, shapes: Shapes) -> dict[str, Any]:
    for layer in trunk.layers:
        if layer.kind == "conv":
            fmt = layer.attrs.get("data_format", "NHWC")
            if fmt != "NHWC":
                raise InputError(f"{layer.node}: data format {fmt} (only NHWC is supported)")
            if any(d != 1 for d in layer.attrs.get("dilations", [1, 1, 1, 1])):
                raise InputError(f"{layer.node}: dilated convolutions are not supported")
    bns = [layer for layer in trunk.layers if layer.kind == "bn"]
    eps = _single({float(f"{b.attrs['epsilon']:.6g}") for b in bns}, "batch-norm epsilon")
    scale = _single({"scale" in b.params for b in bns}, "batch-norm scale (gamma)")
    acts = {c.activation for u in trunk.units for c in u.convs} | {trunk.activation}
    return {
        "padding": _padding(trunk, shapes),
        "bn_eps": eps,
        "bn_scale": scale,
        "activation": _single(acts, "activation"),
    }


def _stride(layer: Layer) -> int:
    strides = layer.attrs.get("strides", [1, 1, 1, 1])
    if strides[1] != strides[2]:
        raise InputError(f"{layer.node}: unequal strides {strides}")
    return int(strides[1])


def resnet_facts(trunk: Trunk, shapes: Shapes) -> dict[str, Any]:
    """Constructor options of :class:`~llrnet.models.ResNetV2` read from ``trunk``."""
    facts = _common(trunk, shapes)
    if facts.pop("activation") != "relu":
        raise InputError("ResNet v2 units must use relu")
    stem_w = shapes[trunk.stem.params["w"]]
    if stem_w[:2] != (7, 7) or _stride(trunk.stem) != 2:
        raise InputError(f"stem {trunk.stem.node}: expected a 7x7/2 convolution, got "
                         f"{stem_w[:2]}/{_stride(trunk.stem)}")
    if trunk.pool is None or trunk.pool.attrs.get("ksize") != [1, 3, 3, 1] \
            or _stride(trunk.pool) != 2:
        raise InputError("expected a 3x3/2 max-pool after the stem convolution")
    widths: list[int] = []
    units: list[int] = []
    strides: list[list[int]] = []
    out_bias: set[bool] = set()
    for unit in trunk.units:
        if len(unit.convs) != 3:
            raise InputError(f"{unit.add.node}: {len(unit.convs)} convolutions; a bottleneck has 3")
        width = shapes[unit.convs[0].params["w"]][3]
        if not widths or widths[-1] != width:
            widths.append(width)
            units.append(0)
            strides.append([])
        units[-1] += 1
        conv_strides = [_stride(c) for c in unit.convs]
        if conv_strides[0] != 1 or conv_strides[2] != 1:
            raise InputError(f"{unit.add.node}: stride on a 1x1 convolution {conv_strides}; "
                             "ResNetV2 strides the 3x3")
        stride = conv_strides[1]
        if unit.shortcut is not None and _stride(unit.shortcut) != stride:
            raise InputError(f"{unit.shortcut.node}: shortcut stride differs from the unit's")
        if unit.shortcut is None and unit.subsample != stride:
            raise InputError(f"{unit.add.node}: identity shortcut does not match stride {stride}")
        strides[-1].append(stride)
        for conv in unit.convs[:2]:
            if "b" in conv.params:
                raise InputError(f"{conv.node}: bias on a convolution followed by batch norm")
        out_bias.add("b" in unit.convs[2].params)
        if unit.shortcut is not None:
            out_bias.add("b" in unit.shortcut.params)
    facts.update(units=tuple(units), widths=tuple(widths), stem_width=stem_w[3],
                 stem_bias="b" in trunk.stem.params,
                 out_bias=_single(out_bias, "biases of the un-normalized convolutions"),
                 stride_in=_stride_in(strides), in_channels=stem_w[2])
    return facts


def _stride_in(strides: list[list[int]]) -> str:
    n = len(strides)
    first = [[2 if (i == 0 and s > 0) else 1 for i in range(len(g))] for s, g in enumerate(strides)]
    last = [[2 if (i == len(g) - 1 and s < n - 1) else 1 for i in range(len(g))]
            for s, g in enumerate(strides)]
    if strides == first:
        return "first"
    if strides == last:
        return "last"
    raise InputError(f"stride placement {strides} is neither 'first' nor 'last' unit of a stage")


def wrn_facts(trunk: Trunk, shapes: Shapes) -> dict[str, Any]:
    """Constructor options of :class:`~llrnet.models.WideResNet` read from ``trunk``."""
    facts = _common(trunk, shapes)
    stem_w = shapes[trunk.stem.params["w"]]
    if trunk.pool is not None or stem_w[:2] != (3, 3):
        raise InputError("expected a WRN stem: a 3x3 convolution and no pool")
    groups: list[list[Unit]] = []
    for unit in trunk.units:
        if len(unit.convs) != 2:
            raise InputError(f"{unit.add.node}: {len(unit.convs)} convolutions; a WRN block has 2")
        out = shapes[unit.convs[0].params["w"]][3]
        if not groups or shapes[groups[-1][0].convs[0].params["w"]][3] != out:
            groups.append([])
        groups[-1].append(unit)
        if any("b" in c.params for c in unit.convs):
            raise InputError(f"{unit.add.node}: WRN convolutions with biases are not supported")
    sizes = {len(g) for g in groups}
    if len(groups) != 3 or len(sizes) != 1:
        raise InputError(f"expected 3 WRN groups of equal size, got {[len(g) for g in groups]}")
    width = shapes[groups[0][0].convs[0].params["w"]][3] // 16
    strides = [[_stride(u.convs[0]) for u in g] for g in groups]
    expected = [[s if i == 0 else 1 for i in range(len(g))] for s, g in zip((1, 2, 2), groups)]
    if strides != expected:
        raise InputError(f"WRN strides {strides}, expected {expected}")
    if not facts.pop("bn_scale"):
        raise InputError("WRN batch norm without scale is not supported")
    facts.update(depth=6 * len(groups[0]) + 4, width=width, in_channels=stem_w[2],
                 variant=_wrn_variant(groups, stem_w[3], width))
    return facts


def _wrn_variant(groups: list[list[Unit]], stem_width: int, width: int) -> str:
    """``"deepmind"`` (``16 * width`` stem, a projection in every group's first
    block) or ``"zagoruyko"`` (16-channel stem, projections only where the
    channels or the resolution change), from the stem and the shortcuts."""
    projections = [[u.shortcut is not None for u in g] for g in groups]
    deepmind = [[i == 0 for i in range(len(g))] for g in groups]
    zagoruyko = [[i == 0 and (g > 0 or width != 1) for i in range(len(units))]
                 for g, units in enumerate(groups)]
    if stem_width == 16 * width and projections == deepmind:
        return "deepmind"
    if stem_width == 16 and projections == zagoruyko:
        return "zagoruyko"
    raise InputError(f"WRN with a {stem_width}-channel stem and projection shortcuts at "
                     f"{projections} (per group and block) is neither Zagoruyko's variant "
                     "(16-channel stem, projections where channels or resolution change) "
                     "nor DeepMind's (16 * width stem, a projection in every group's first "
                     "block)")
