"""What a module is: its image input, its layers, and the architecture facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llrnet.core.errors import InputError
from llrnet.hub.formats.module import HubModule
from llrnet.hub.formats.savedmodel import Signature, select_meta_graph
from llrnet.hub.recognition.counters import find_counters
from llrnet.hub.recognition.graph import LayerGraph, node_name
from llrnet.hub.recognition.structure import Trunk, parse_trunk, resnet_facts, wrn_facts
from llrnet.models.resnet_v2 import STAGE_UNITS


@dataclass
class Analysis:
    """A module's recognized structure.

    ``family`` is ``"resnet_v2"`` (bottleneck units), ``"wide_resnet"`` (basic
    blocks) or ``"linear"`` (a single dense / 1x1 convolution layer, the
    ``llr-pretrain-adv/linear`` module). ``counters`` are the bookkeeping
    variables (:mod:`llrnet.hub.recognition.counters`) with how each was recognized.
    """

    signature: Signature
    image_input: str
    graph: LayerGraph
    family: str
    facts: dict[str, Any]
    trunk: Trunk | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    counters: dict[str, str] = field(default_factory=dict)


FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
"""Checkpoint dtypes a layer's weights may have."""


def image_input_key(signature: Signature) -> str:
    """The signature input holding images/latents: the one float input of rank 4
    (named ``inputs`` or ``x`` in the released modules; the name is not relied on)."""
    keys = [k for k, spec in signature.inputs.items()
            if spec.dtype == "float32" and spec.shape is not None and len(spec.shape) == 4]
    if len(keys) != 1:
        raise InputError(f"signature {signature.key!r} has {len(keys)} rank-4 float inputs "
                         f"({sorted(signature.inputs)}); cannot tell which one is the image")
    return keys[0]


def analyze(module: HubModule, *, signature: str = "default") -> Analysis:
    """Recognize the network in ``module``'s inference graph (tags ``{}``)."""
    meta = select_meta_graph(module.graphs, ())
    if signature not in meta.signatures:
        raise InputError(f"{module.path}: no signature {signature!r}; available: "
                         f"{sorted(meta.signatures)}")
    sig = meta.signatures[signature]
    key = image_input_key(sig)
    outputs = sorted(sig.outputs)
    output = sig.outputs["default"] if "default" in sig.outputs else sig.outputs[outputs[0]]
    graph = LayerGraph(meta.graph, [sig.inputs[key].tensor], output.tensor)
    shapes = {name: module.reader.entries[name].shape for name in module.reader.names()}
    for layer in graph.layers:
        for variable in layer.params.values():
            if variable not in shapes:
                raise InputError(f"{module.path}: graph variable {variable!r} is not in the "
                                 "checkpoint")
            dtype = module.reader.entries[variable].dtype_name
            if dtype not in FLOAT_DTYPES:
                raise InputError(f"{module.path}: graph variable {variable!r} is a {dtype} "
                                 f"tensor {list(shapes[variable])}; a layer's weights are "
                                 "floating point")
    extra = {k: v.dtype for k, v in sig.inputs.items() if k != key}
    live = sorted(k for k in extra if node_name(sig.inputs[k].tensor) in graph.ancestors)
    if live:
        raise InputError(f"{module.path}: the inference output depends on the inputs {live} "
                         "besides the image; only inputs that change nothing at inference "
                         "(such as decay_rate, count) are supported")
    counters = find_counters(module.graphs, shapes)
    base: dict[str, Any] = {"image_input": key, "other_inputs": extra,
                            "output": output.key, "output_shape": output.shape,
                            "global_pool_op": any(n.name.endswith("use_global_pool")
                                                  for n in meta.graph.node),
                            "input_scaling": ", then ".join(graph.input_scaling) or
                            "none in the graph (the caller scales the input)"}
    if len(graph.layers) == 1 and graph.layers[0].kind in ("dense", "conv") \
            and not graph.unsupported:
        weight = shapes[graph.layers[0].params["w"]]
        base.update(family="linear", in_features=weight[-2], out_features=weight[-1],
                    bias="b" in graph.layers[0].params)
        return Analysis(sig, key, graph, "linear", base, None, shapes, counters)
    trunk = parse_trunk(graph)
    convs_per_unit = {len(u.convs) for u in trunk.units}
    if convs_per_unit == {3}:
        facts = resnet_facts(trunk, shapes)
        family = "resnet_v2"
        facts["depth"] = 3 * sum(facts["units"]) + 2
        standard = [d for d, u in STAGE_UNITS.items() if u == facts["units"]]
        facts["standard_depth"] = standard[0] if standard else None
    elif convs_per_unit == {2}:
        facts = wrn_facts(trunk, shapes)
        family = "wide_resnet"
    else:
        raise InputError(f"{module.path}: units with {sorted(convs_per_unit)} convolutions; "
                         "neither ResNet v2 bottlenecks (3) nor WRN blocks (2)")
    if trunk.head is not None:
        facts["num_classes"] = shapes[trunk.head.params["w"]][-1]
        facts["head"] = trunk.head.kind
    facts["num_features"] = shapes[trunk.final_bn.params["variance"]][0]
    base.update(family=family, **facts)
    if counters:
        base["counters"] = len(counters)
    return Analysis(sig, key, graph, family, base, trunk, shapes, counters)
