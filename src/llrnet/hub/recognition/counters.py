"""Bookkeeping variables: counters that a module's graphs only ever increment.
More: docs/hub.md, "llrnet.hub.recognition.counters"."""

from __future__ import annotations

from typing import Any

import numpy as np

from llrnet.hub.formats.savedmodel import MetaGraph
from llrnet.hub.recognition.graph import READ_OPS, VARIABLE_OPS, node_name, tensor_proto_value

INCREMENT_OPS = frozenset({"AssignAdd", "AssignAddVariableOp"})
UPDATE_OPS = frozenset({"AssignSub", "AssignSubVariableOp", "AssignAdd", "AssignAddVariableOp",
                        "Assign", "AssignVariableOp"})


def _variable(nodes: dict[str, Any], tensor: str) -> str | None:
    """The variable behind ``tensor`` (through reads), by its checkpoint name."""
    name = node_name(tensor)
    for _ in range(16):
        node = nodes.get(name)
        if node is None:
            return None
        if node.op in VARIABLE_OPS:
            shared = node.attr["shared_name"].s.decode() if "shared_name" in node.attr else ""
            return shared or node.name
        if node.op not in READ_OPS or not node.input:
            return None
        name = node_name(node.input[0])
    return None


def _constant(nodes: dict[str, Any], tensor: str) -> float | None:
    node = nodes.get(node_name(tensor))
    while node is not None and node.op in ("Identity", "Cast"):
        node = nodes.get(node_name(node.input[0]))
    if node is None or node.op != "Const":
        return None
    value = np.ravel(tensor_proto_value(node.attr["value"].tensor))
    return float(value[0]) if value.size == 1 else None


def find_counters(graphs: list[MetaGraph], shapes: dict[str, tuple[int, ...]]
                  ) -> dict[str, str]:
    """``{variable: how it was recognized}`` for every scalar incremented by a constant.

    The reason names the graph and step, and the variables updated in the same
    group (a batch norm's moving averages), when there is one.
    """
    found: dict[str, str] = {}
    for meta in graphs:
        nodes = {n.name: n for n in meta.graph.node}
        groups: dict[str, list[str]] = {}  # update op -> the other updates of its group
        for node in meta.graph.node:
            if node.op != "NoOp":
                continue
            members = [node_name(t) for t in node.input if t.startswith("^")]
            updates = [m for m in members if m in nodes and nodes[m].op in UPDATE_OPS]
            for member in updates:
                groups.setdefault(member, []).extend(u for u in updates if u != member)
        tags = "{" + ", ".join(repr(t) for t in meta.tags) + "}"
        for node in meta.graph.node:
            if node.op not in INCREMENT_OPS or len(node.input) < 2:
                continue
            variable = _variable(nodes, node.input[0])
            step = _constant(nodes, node.input[1])
            if variable is None or step is None or shapes.get(variable) != ():
                continue
            siblings = sorted(v for v in (_variable(nodes, nodes[u].input[0])
                                          for u in groups.get(node.name, [])) if v)
            reason = f"scalar incremented by {step:g} in the {tags} graph"
            if siblings:
                reason += " together with updates of " + ", ".join(siblings)
            found.setdefault(variable, reason)
    return found
