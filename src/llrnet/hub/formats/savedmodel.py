"""Read ``saved_model.pb`` without TensorFlow.
More: docs/hub.md, "llrnet.hub.formats.savedmodel"."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llrnet.core.errors import InputError
from llrnet.hub.formats.dtypes import dtype_name
from llrnet.hub.formats.protowire import iter_fields


@dataclass(frozen=True)
class TensorSpec:
    """One signature input or output: graph tensor name, dtype, shape (None = unknown)."""

    key: str
    tensor: str
    dtype: str
    shape: tuple[int | None, ...] | None

    def as_dict(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "dtype": self.dtype,
                "shape": None if self.shape is None else list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """A signature: its inputs and outputs by key."""

    key: str
    method: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method,
                "inputs": {k: v.as_dict() for k, v in self.inputs.items()},
                "outputs": {k: v.as_dict() for k, v in self.outputs.items()}}


@dataclass
class MetaGraph:
    """One meta-graph: its tag set, graph and signatures."""

    tags: tuple[str, ...]
    graph: Any  # tensorboard.compat.proto.graph_pb2.GraphDef
    signatures: dict[str, Signature] = field(default_factory=dict)

    def op_histogram(self) -> dict[str, int]:
        """Number of nodes per op type, most frequent first."""
        return dict(Counter(node.op for node in self.graph.node).most_common())


def _shape(proto: Any) -> tuple[int | None, ...] | None:
    if proto.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in proto.dim)


def _signature(key: str, proto: Any) -> Signature:
    def specs(mapping: Any) -> dict[str, TensorSpec]:
        return {
            k: TensorSpec(k, v.name, dtype_name(v.dtype), _shape(v.tensor_shape))
            for k, v in sorted(mapping.items())
        }

    return Signature(key, proto.method_name, specs(proto.inputs), specs(proto.outputs))


def read_saved_model(path: str | os.PathLike[str]) -> list[MetaGraph]:
    """The meta-graphs of ``saved_model.pb`` (a file or the module folder holding it)."""
    # deferred: heavy (protobuf and tensorboard's TF protos), only when a graph is read
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import meta_graph_pb2  # deferred: heavy (see above)

    file = Path(path)
    if file.is_dir():
        file = file / "saved_model.pb"
    if not file.is_file():
        raise InputError(f"no saved_model.pb at {file}")
    data = file.read_bytes()
    graphs: list[MetaGraph] = []
    try:
        for number, _, value in iter_fields(data, what=f"SavedModel in {file}"):
            if number != 2 or not isinstance(value, bytes):
                continue
            proto = meta_graph_pb2.MetaGraphDef.FromString(value)
            signatures = {k: _signature(k, v) for k, v in sorted(proto.signature_def.items())}
            graphs.append(MetaGraph(tuple(sorted(proto.meta_info_def.tags)), proto.graph_def,
                                    signatures))
    except (DecodeError, InputError) as error:
        raise InputError(f"{file}: not a valid SavedModel ({error})") from None
    if not graphs:
        raise InputError(f"{file}: SavedModel holds no meta-graph")
    return graphs


def select_meta_graph(graphs: list[MetaGraph], tags: tuple[str, ...] = ()) -> MetaGraph:
    """The meta-graph with exactly ``tags`` (default: the inference graph, no tags)."""
    for graph in graphs:
        if graph.tags == tuple(sorted(tags)):
            return graph
    available = ", ".join("{" + ", ".join(g.tags) + "}" for g in graphs)
    raise InputError(f"no meta-graph with tags {set(tags) or '{}'}; available: {available}")


def attr_value(attr: Any) -> Any:
    """A NodeDef attribute as a plain Python value (lists, str, int, float, bool)."""
    kind = attr.WhichOneof("value")
    if kind == "list":
        lst = attr.list
        for name in ("i", "f", "s", "b", "type"):
            values = list(getattr(lst, name))
            if values:
                return [v.decode() if isinstance(v, bytes) else v for v in values]
        return []
    if kind == "s":
        return attr.s.decode("utf-8", "replace")
    if kind == "type":
        return dtype_name(attr.type)
    if kind == "shape":
        return _shape(attr.shape)
    if kind == "tensor":
        return attr.tensor
    if kind in ("i", "f", "b"):
        return getattr(attr, kind)
    return None


def node_attrs(node: Any, names: tuple[str, ...] = ("strides", "padding", "data_format",
                                                    "epsilon", "ksize", "dilations",
                                                    "keep_dims")) -> dict[str, Any]:
    """The conversion-relevant attributes of ``node`` that are set."""
    return {name: attr_value(node.attr[name]) for name in names if name in node.attr}
