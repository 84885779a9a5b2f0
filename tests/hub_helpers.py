"""Shared paths and helpers of the TF-Hub tests (fixtures written by TensorFlow)."""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "hub"
CHECKPOINTS = FIXTURES / "checkpoints"


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"golden_{name}.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def copy_module(name: str, target: Path) -> Path:
    """A writable copy of a fixture module (for corruption tests)."""
    destination = target / name
    shutil.copytree(FIXTURES / name, destination)
    return destination


def many_name(i: int) -> str:
    """Names in checkpoints/many (mirrors scripts/make_hub_fixtures.py); value i / 2."""
    return f"model/layer_{i:04d}/" + "a_very_long_sonnet_style_scope_name_" * 4 + "variable"


def module_archive(path: Path, name: str = "linear") -> Path:
    """The fixture module ``name`` packed as a ``.tar.gz`` at ``path``."""
    with tarfile.open(path, "w:gz") as archive:
        for file in sorted((FIXTURES / name).rglob("*")):
            archive.add(file, arcname=file.relative_to(FIXTURES / name).as_posix(),
                        recursive=False)
    return path


def archive_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    """A ``.tar.gz`` at ``path`` holding the one (hostile) ``member``."""
    with tarfile.open(path, "w:gz") as archive:
        member.size = len(data) if member.isfile() else 0
        archive.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def rewrite_graphs(module: Path, edit: Callable[[Any], None]) -> None:
    """Rewrite ``module``'s saved_model.pb, calling ``edit(graph_def)`` on every meta-graph."""
    from tensorboard.compat.proto import meta_graph_pb2

    from llrnet.hub.formats.protowire import field_bytes, field_varint, iter_fields

    path = module / "saved_model.pb"
    out = field_varint(1, 1)
    for number, _, value in iter_fields(path.read_bytes()):
        if number != 2 or not isinstance(value, bytes):
            continue
        meta = meta_graph_pb2.MetaGraphDef.FromString(value)
        edit(meta.graph_def)
        out += field_bytes(2, meta.SerializeToString())
    path.write_bytes(out)


def feed_stem(graph: Any, name: str, op: str, other: str) -> None:
    """``graph``'s stem convolution reads ``op(x, other)`` (a node ``name``) instead of ``x``."""
    graph.node.add(name=name, op=op, input=["x", other]).attr["T"].type = 1
    for node in graph.node:
        if node.op == "Conv2D" and node.input[0] == "x":
            node.input[0] = name


def with_entry(module: Path, name: str, *, dtype: int | None = None,
               shape: tuple[int, ...] | None = None, size: int | None = None,
               slices: tuple[tuple[tuple[int, int], ...], ...] = ()) -> Path:
    """Rewrite ``module``'s checkpoint index so that tensor ``name`` claims ``dtype``
    (a TF enum), ``shape``, stored ``size`` and ``slices`` (each given one; the
    others kept), as a hostile or corrupt module would. Returns ``module``."""
    from llrnet.hub.formats.bundle import parse_entry
    from llrnet.hub.formats.protowire import field_bytes, field_fixed32, field_varint
    from llrnet.hub.formats.table import TableWriter, read_table

    index = module / "variables" / "variables.index"
    table = TableWriter()
    found = False
    for key, value in read_table(index.read_bytes(), source=str(index)):
        if key == name.encode():
            found = True
            entry = parse_entry(name, value)
            dims = entry.shape if shape is None else shape
            value = field_varint(1, entry.dtype if dtype is None else dtype)
            value += field_bytes(2, b"".join(field_bytes(2, field_varint(1, d)) for d in dims))
            value += field_varint(4, entry.offset)
            value += field_varint(5, entry.size if size is None else size)
            value += field_fixed32(6, entry.crc32c)
            for extents in slices:
                value += field_bytes(7, b"".join(
                    field_bytes(1, field_varint(1, start) + field_varint(2, length))
                    for start, length in extents))
        table.add(key, bytes(value))
    if not found:
        raise KeyError(name)
    index.write_bytes(table.finish())
    return module
