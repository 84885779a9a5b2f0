"""The forward computation of a module's graph, as a list of layers.
More: docs/hub.md, "llrnet.hub.recognition.graph"."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llrnet.core.errors import InputError
from llrnet.hub.formats.dtypes import BY_ENUM
from llrnet.hub.formats.savedmodel import attr_value

VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp"})
READ_OPS = frozenset({"Identity", "ReadVariableOp", "Snapshot", "Enter"})
ACTIVATIONS = {"Relu": "relu", "Softplus": "softplus", "Relu6": "relu6", "Elu": "elu"}
SHAPE_OPS = frozenset({"Identity", "Reshape", "Squeeze", "ExpandDims", "Snapshot",
                       "StopGradient"})
BN_OPS = frozenset({"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"})
INPUT_SCALING_OPS = frozenset({"Mul", "Sub", "Add", "AddV2", "RealDiv"})


def node_name(tensor: str) -> str:
    """``"scope/op:0"`` or ``"^scope/op"`` -> ``"scope/op"``."""
    return tensor.lstrip("^").split(":")[0]


@dataclass
class Layer:
    """One recognized layer. ``source`` is the producing layer's index (-1: an input)."""

    index: int
    kind: str
    node: str
    params: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    sources: list[int] = field(default_factory=list)
    activation: str | None = None  # activation applied to this layer's input, if any
    pad: list[list[int]] | None = None  # explicit Pad before this layer (NHWC pairs)


class LayerGraph:
    """Layers of the activation path from ``inputs`` to ``output`` (node names)."""

    def __init__(self, graph_def: Any, inputs: list[str], output: str) -> None:
        self.nodes: dict[str, Any] = {n.name: n for n in graph_def.node}
        self.inputs = [node_name(i) for i in inputs]
        self.output = node_name(output)
        for name in [*self.inputs, self.output]:
            if name not in self.nodes:
                raise InputError(f"graph has no node {name!r}")
        self._consumers: dict[str, list[str]] = {}
        for node in graph_def.node:
            for tensor in self.data_inputs(node):
                self._consumers.setdefault(tensor, []).append(node.name)
        self.ancestors: set[str] = set()
        """Every node the output depends on (through data inputs)."""
        self.order = self._activation_path()
        self.layers: list[Layer] = []
        self._value: dict[str, tuple[int, str | None, list[list[int]] | None]] = {
            name: (-1, None, None) for name in self.inputs
        }
        self.unsupported: list[str] = []
        self.input_scaling: list[str] = []
        """Elementwise ops with constants applied to the raw input, in order."""
        self._build()

    # -- graph helpers -------------------------------------------------------

    def data_inputs(self, node: Any) -> list[str]:
        return [node_name(t) for t in node.input if not t.startswith("^")]

    def _activation_path(self) -> list[str]:
        ancestors: set[str] = set()
        stack = [self.output]
        while stack:
            name = stack.pop()
            if name in ancestors:
                continue
            ancestors.add(name)
            stack.extend(self.data_inputs(self.nodes[name]))
        descendants: set[str] = set()
        stack = list(self.inputs)
        while stack:
            name = stack.pop()
            if name in descendants:
                continue
            descendants.add(name)
            stack.extend(self._consumers.get(name, []))
        self.ancestors = ancestors
        keep = ancestors & descendants
        # Kahn's algorithm, ties broken by the graph's (creation) order.
        position = {name: i for i, name in enumerate(self.nodes)}
        pending = {n: sum(1 for i in self.data_inputs(self.nodes[n]) if i in keep) for n in keep}
        ready = sorted((n for n, c in pending.items() if c == 0), key=position.__getitem__)
        order: list[str] = []
        while ready:
            name = ready.pop(0)
            order.append(name)
            for consumer in self._consumers.get(name, []):
                if consumer in pending:
                    pending[consumer] -= 1
                    if pending[consumer] == 0:
                        ready.append(consumer)
            ready.sort(key=position.__getitem__)
        return order

    def variable_of(self, tensor: str) -> str | None:
        """The variable read by ``tensor`` (through Identity/ReadVariableOp), if any."""
        name = node_name(tensor)
        for _ in range(16):
            node = self.nodes.get(name)
            if node is None:
                return None
            if node.op in VARIABLE_OPS:
                shared = node.attr["shared_name"].s.decode() if "shared_name" in node.attr else ""
                return shared or node.name
            if node.op not in READ_OPS:
                return None
            inputs = self.data_inputs(node)
            if len(inputs) != 1:
                return None
            name = inputs[0]
        return None

    def const_value(self, tensor: str) -> np.ndarray | None:
        """The value of a ``Const`` node (through Identity), else None."""
        name = node_name(tensor)
        node = self.nodes.get(name)
        while node is not None and node.op == "Identity":
            node = self.nodes.get(self.data_inputs(node)[0])
        if node is None or node.op != "Const":
            return None
        return tensor_proto_value(node.attr["value"].tensor)

    def _on_path(self, tensor: str) -> bool:
        return node_name(tensor) in self._value

    # -- layer recognition ---------------------------------------------------

    def _source(self, tensor: str) -> tuple[int, str | None, list[list[int]] | None]:
        name = node_name(tensor)
        if name not in self._value:
            raise InputError(f"activation {name!r} is used before it is computed")
        return self._value[name]

    def _add_layer(self, kind: str, node: Any, tensor: str, **kw: Any) -> Layer:
        source, activation, pad = self._source(tensor)
        layer = Layer(len(self.layers), kind, node.name, sources=[source],
                      activation=activation, pad=pad, **kw)
        self.layers.append(layer)
        self._value[node.name] = (layer.index, None, None)
        return layer

    def _constant_predicate(self, tensor: str) -> bool | None:
        """The value of a ``tf.cond`` predicate fixed in the graph (Const, or the
        default of a PlaceholderWithDefault, through Identity), else None."""
        node = self.nodes.get(node_name(tensor))
        for _ in range(8):
            if node is None:
                return None
            if node.op == "Const":
                return bool(np.ravel(tensor_proto_value(node.attr["value"].tensor))[0])
            if node.op not in ("Identity", "PlaceholderWithDefault"):
                return None
            node = self.nodes.get(self.data_inputs(node)[0])
        return None

    def _is_dead(self, tensor: str) -> bool:
        """True if ``tensor`` is the untaken output of a folded Switch, or dead itself."""
        name = node_name(tensor)
        if name in self._dead:
            return True
        taken = self._taken.get(name)
        if taken is None:
            return False
        port = int(tensor.split(":")[1]) if ":" in tensor else 0
        return port != taken

    def _build(self) -> None:
        """Walk the nodes in order: each becomes a layer, a pass-through to its source, a
        dead branch, or a line in ``unsupported``."""
        skip: set[str] = set()
        self._dead: set[str] = set()
        self._taken: dict[str, int] = {}
        for name in self.order:
            if name in self._value or name in skip:
                continue
            node = self.nodes[name]
            raw = [t for t in node.input if not t.startswith("^")]
            live = [t for t in raw if not self._is_dead(t)]
            inputs = [node_name(t) for t in live]
            on_path = [t for t in inputs if self._on_path(t)]
            if node.op == "Merge":
                self._merge(name, on_path)
            elif len(live) != len(raw):
                self._dead.add(name)
            elif not (self._pass_through(node, inputs) or self._layer_op(node, inputs)
                      or self._arithmetic(node, inputs, on_path, skip)):
                self.unsupported.append(f"{name} ({node.op})")
                if on_path:
                    self._value[name] = self._source(on_path[0])

    def _merge(self, name: str, on_path: list[str]) -> None:
        """tf.cond with a fixed predicate: exactly one branch is alive."""
        if len(on_path) != 1:
            self.unsupported.append(f"{name} (Merge of {len(on_path)} live branches)")
        if on_path:  # keep walking so that every problem gets reported
            self._value[name] = self._source(on_path[0])

    def _pass_through(self, node: Any, inputs: list[str]) -> bool:
        """Switch, shape ops, activations and pads: the node's value is its input's,
        with the activation or padding noted. False if ``node`` is none of these."""
        name, op = node.name, node.op
        if op == "Switch":
            predicate = self._constant_predicate(inputs[1])
            if predicate is None:
                self.unsupported.append(f"{name} (Switch on a predicate that is not fixed)")
            else:
                self._taken[name] = 1 if predicate else 0
            self._value[name] = self._source(inputs[0])
        elif op in SHAPE_OPS:
            self._value[name] = self._source(inputs[0])
        elif op in ACTIVATIONS:
            source, _, pad = self._source(inputs[0])
            self._value[name] = (source, ACTIVATIONS[op], pad)
        elif op in ("Pad", "PadV2", "MirrorPad"):
            paddings = self.const_value(inputs[1])
            source, activation, _ = self._source(inputs[0])
            pads = None if paddings is None else paddings.astype(int).tolist()
            self._value[name] = (source, activation, pads)
            if op != "Pad" or pads is None:
                self.unsupported.append(f"{name} ({op})")
        else:
            return False
        return True

    def _layer_op(self, node: Any, inputs: list[str]) -> bool:
        """Conv2D, MatMul, batch norm, max pool and mean: a layer. False if ``node`` is
        none of these."""
        name, op = node.name, node.op
        if op == "Conv2D":
            self._add_layer("conv", node, inputs[0], params={"w": self._var(inputs[1], node)},
                            attrs=_attrs(node))
        elif op == "MatMul":
            if node.attr["transpose_a"].b or node.attr["transpose_b"].b:
                self.unsupported.append(f"{name} (MatMul with transpose)")
            self._add_layer("dense", node, inputs[0], params={"w": self._var(inputs[1], node)})
        elif op in BN_OPS:
            roles = ("scale", "offset", "mean", "variance")
            params = {r: self._var(t, node) for r, t in zip(roles, inputs[1:5])}
            if node.attr["is_training"].b:
                self.unsupported.append(f"{name} ({op} in training mode)")
            self._add_layer("bn", node, inputs[0], params=params,
                            attrs={"epsilon": float(node.attr["epsilon"].f)})
        elif op == "MaxPool":
            self._add_layer("pool", node, inputs[0], attrs=_attrs(node))
        elif op == "Mean":
            axes = self.const_value(inputs[1])
            self._add_layer("mean", node, inputs[0], attrs={
                "axes": None if axes is None else sorted(int(a) for a in np.ravel(axes)),
                "keep_dims": bool(node.attr["keep_dims"].b)})
        else:
            return False
        return True

    def _arithmetic(self, node: Any, inputs: list[str], on_path: list[str], skip: set[str]
                    ) -> bool:
        """Input scaling, biases, residual adds and unfused batch norms (whose constant
        nodes go into ``skip``). False if ``node`` is none of these."""
        op = node.op
        if op in INPUT_SCALING_OPS and len(on_path) == 1 \
                and self._source(on_path[0])[0] == -1 and self._scaling(node, inputs, on_path):
            pass
        elif op in ("BiasAdd", "Add", "AddV2") and len(on_path) == 1:
            self._bias(node, inputs, on_path[0])
        elif op in ("Add", "AddV2") and len(on_path) == 2:
            sources = [self._source(t)[0] for t in inputs]
            layer = Layer(len(self.layers), "add", node.name, sources=sources)
            self.layers.append(layer)
            self._value[node.name] = (layer.index, None, None)
        elif op == "Mul" and len(on_path) == 1:
            self._unfused_bn(node, inputs, on_path[0], skip)
        else:
            return False
        return True

    def _scaling(self, node: Any, inputs: list[str], on_path: list[str]) -> bool:
        """Record ``x op constant`` applied to the raw input (preprocessing in the graph)."""
        other = next((t for t in inputs if t != on_path[0]), None)
        value = None if other is None else self.const_value(other)
        if value is None:
            return False
        operand = np.round(np.ravel(value).astype(np.float64), 6).tolist()
        shown = operand[0] if len(operand) == 1 else operand
        first = inputs[0] == on_path[0]
        symbol = {"Mul": "*", "Sub": "-", "Add": "+", "AddV2": "+", "RealDiv": "/"}[node.op]
        self.input_scaling.append(f"x {symbol} {shown}" if first else f"{shown} {symbol} x")
        self._value[node.name] = self._source(on_path[0])
        return True

    def _var(self, tensor: str, node: Any) -> str:
        variable = self.variable_of(tensor)
        if variable is None:
            raise InputError(f"{node.name} ({node.op}): input {tensor!r} is not a variable read")
        return variable

    def _bias(self, node: Any, inputs: list[str], activation: str) -> None:
        other = next(t for t in inputs if t != activation)
        variable = self.variable_of(other)
        source, act, pad = self._source(activation)
        if variable is None or source < 0 or act is not None:
            self.unsupported.append(f"{node.name} ({node.op} of a non-variable)")
            self._value[node.name] = (source, act, pad)
            return
        producer = self.layers[source]
        if "b" in producer.params:
            self.unsupported.append(f"{node.name} (second bias on {producer.node})")
        producer.params["b"] = variable
        self._value[node.name] = (source, None, None)

    def _unfused_bn(self, mul: Any, inputs: list[str], activation: str, skip: set[str]) -> None:
        """``x * inv + shift`` with ``inv = rsqrt(var + eps) [* scale]``, ``shift =
        offset - mean * inv`` (or ``-(mean * inv)``): ``tf.nn.batch_normalization``."""
        where = f"{mul.name} (Mul)"
        inv = next(t for t in inputs if t != activation)
        adds = [c for c in self._consumers.get(mul.name, [])
                if self.nodes[c].op in ("Add", "AddV2")]
        if len(adds) != 1:
            self.unsupported.append(where)
            self._value[mul.name] = self._source(activation)
            return
        add = self.nodes[adds[0]]
        shift = next(t for t in self.data_inputs(add) if node_name(t) != mul.name)
        params: dict[str, str] = {}
        inv_node = self.nodes[node_name(inv)]
        rsqrt = inv_node
        if inv_node.op == "Mul":
            a, b = self.data_inputs(inv_node)
            if self.nodes[a].op != "Rsqrt":
                a, b = b, a
            rsqrt = self.nodes[a]
            params["scale"] = self._var(b, inv_node)
        if rsqrt.op != "Rsqrt":
            raise InputError(f"{where}: unrecognized batch-norm pattern (no Rsqrt)")
        eps_add = self.nodes[self.data_inputs(rsqrt)[0]]
        x, y = self.data_inputs(eps_add)
        if self.variable_of(x) is None:
            x, y = y, x
        params["variance"] = self._var(x, eps_add)
        epsilon = self.const_value(y)
        if epsilon is None:
            raise InputError(f"{eps_add.name}: batch-norm epsilon is not a constant")
        shift_node = self.nodes[node_name(shift)]
        if shift_node.op == "Sub":
            offset, mean_inv = self.data_inputs(shift_node)
            params["offset"] = self._var(offset, shift_node)
        elif shift_node.op == "Neg":
            mean_inv = self.data_inputs(shift_node)[0]
        else:
            raise InputError(f"{shift_node.name}: unrecognized batch-norm shift ({shift_node.op})")
        m1, m2 = self.data_inputs(self.nodes[node_name(mean_inv)])
        mean = m1 if self.variable_of(m1) is not None else m2
        params["mean"] = self._var(mean, self.nodes[node_name(mean_inv)])
        source, act, pad = self._source(activation)
        layer = Layer(len(self.layers), "bn", add.name, params=params,
                      attrs={"epsilon": float(np.ravel(epsilon)[0])}, sources=[source],
                      activation=act, pad=pad)
        self.layers.append(layer)
        self._value[mul.name] = (layer.index, None, None)
        self._value[add.name] = (layer.index, None, None)
        skip.add(add.name)

    def output_layer(self) -> tuple[int, str | None]:
        """(index of the layer producing the output, activation applied after it)."""
        source, activation, _ = self._value[self.output]
        return source, activation


def _attrs(node: Any) -> dict[str, Any]:
    out = {}
    for name in ("strides", "padding", "data_format", "ksize", "dilations"):
        if name in node.attr:
            out[name] = attr_value(node.attr[name])
    return out


def tensor_proto_value(proto: Any) -> np.ndarray:
    """A ``TensorProto`` as numpy (the dtypes constants in graphs use)."""
    dtype = BY_ENUM.get(proto.dtype)
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if dtype is None or dtype.disk is None:
        raise InputError(f"constant of unsupported dtype {proto.dtype}")
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype.disk).reshape(shape)
    field_name = {"float32": "float_val", "float64": "double_val", "int64": "int64_val",
                  "bool": "bool_val"}.get(dtype.name, "int_val")
    values = np.asarray(list(getattr(proto, field_name)), dtype=dtype.disk)
    count = int(np.prod(shape)) if shape else 1
    if values.size == count:
        return values.reshape(shape)
    if values.size == 1:
        return np.full(shape, values[0], dtype=dtype.disk)
    return np.zeros(shape, dtype=dtype.disk)
