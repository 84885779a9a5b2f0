"""Write TF checkpoints (tensor bundle V2) in pure Python.
More: docs/hub.md, "llrnet.hub.formats.bundle_writer"."""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from llrnet.core.errors import UsageError
from llrnet.hub.formats.crc32c import crc32c, mask
from llrnet.hub.formats.dtypes import BY_NAME, TFDType, numpy_to_tf
from llrnet.hub.formats.protowire import field_bytes, field_fixed32, field_varint, write_varint
from llrnet.hub.formats.table import TableWriter


def _shape_proto(shape: tuple[int, ...]) -> bytes:
    return b"".join(field_bytes(2, field_varint(1, d) if d else b"") for d in shape)


def _entry(dtype: TFDType, shape: tuple[int, ...], shard: int, offset: int, size: int,
           crc: int) -> bytes:
    out = field_varint(1, dtype.enum)
    out += field_bytes(2, _shape_proto(shape))
    if shard:
        out += field_varint(3, shard)
    if offset:
        out += field_varint(4, offset)
    if size:
        out += field_varint(5, size)
    return out + field_fixed32(6, crc)


def _string_bytes(values: np.ndarray) -> tuple[bytes, int]:
    """Varint lengths, masked CRC of the lengths, the bytes; and the entry's CRC.

    The entry's CRC covers each length as uint32 (TF's backwards-compatible
    choice), the 4 checksum bytes, then the string bytes.
    """
    items = [v if isinstance(v, bytes) else str(v).encode() for v in values.ravel()]
    lengths = b"".join(write_varint(len(v)) for v in items)
    crc = 0
    for v in items:
        crc = crc32c(struct.pack("<I" if len(v) <= 0xFFFFFFFF else "<Q", len(v)), crc)
    checksum = struct.pack("<I", mask(crc))
    body = b"".join(items)
    crc = crc32c(body, crc32c(checksum, crc))
    return lengths + checksum + body, crc


def _tensor_bytes(value: np.ndarray, dtype: TFDType) -> tuple[bytes, int]:
    if dtype.name == "string":
        return _string_bytes(value)
    if dtype.name == "bfloat16":
        bits = np.ascontiguousarray(value, dtype=np.float32).view(np.uint32)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
        data = rounded.astype("<u2").tobytes()
    elif dtype.disk is None:
        raise UsageError(f"dtype {dtype.name} has no fixed layout")
    else:
        data = np.ascontiguousarray(value, dtype=np.dtype(dtype.disk)).tobytes()
    return data, crc32c(data)


def write_checkpoint(prefix: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], *,
                     num_shards: int = 1, bfloat16: frozenset[str] = frozenset(),
                     block_size: int = 262144) -> list[Path]:
    """Write ``tensors`` as ``<prefix>.index`` + ``<prefix>.data-*``; returns the files.

    Tensors are spread round-robin over ``num_shards`` data files; names in
    ``bfloat16`` are stored as bfloat16 (rounded to nearest even); object or
    bytes arrays are stored as strings.
    """
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    header = field_varint(1, num_shards) + field_bytes(3, field_varint(1, 1))
    table = TableWriter(block_size=block_size)
    table.add(b"", header)
    files = [prefix.with_name(f"{prefix.name}.data-{i:05d}-of-{num_shards:05d}")
             for i in range(num_shards)]
    offsets = [0] * num_shards
    with ExitStack() as stack:
        handles = [stack.enter_context(open(path, "wb")) for path in files]
        for i, name in enumerate(sorted(tensors, key=lambda n: n.encode())):
            value = np.asarray(tensors[name])
            dtype = BY_NAME["bfloat16"] if name in bfloat16 else numpy_to_tf(value)
            data, raw_crc = _tensor_bytes(value, dtype)
            shard = i % num_shards
            crc = mask(raw_crc)
            handles[shard].write(data)
            table.add(name.encode(), _entry(dtype, tuple(value.shape), shard, offsets[shard],
                                            len(data), crc))
            offsets[shard] += len(data)
    index = prefix.with_name(prefix.name + ".index")
    index.write_bytes(table.finish())
    return [index, *files]
