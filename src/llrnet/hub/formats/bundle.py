"""Read TF checkpoints ("tensor bundle" V2) without TensorFlow.
More: docs/hub.md, "llrnet.hub.formats.bundle"."""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llrnet.core.errors import InputError
from llrnet.hub.formats import ordered_code
from llrnet.hub.formats.crc32c import crc32c, mask
from llrnet.hub.formats.dtypes import BY_ENUM, TFDType, dtype_name
from llrnet.hub.formats.protowire import as_int64, iter_fields, read_varint
from llrnet.hub.formats.table import read_table

Extent = tuple[int, int]
"""(start, length) of one dimension of a slice; length -1 means the full dimension."""


@dataclass(frozen=True)
class BundleEntry:
    """One ``BundleEntryProto``: where a tensor's bytes are and how to check them."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int = 0
    slices: tuple[tuple[Extent, ...], ...] = ()

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    @property
    def partitioned(self) -> bool:
        return bool(self.slices)


@dataclass(frozen=True)
class BundleHeader:
    """``BundleHeaderProto``: number of data files and byte order."""

    num_shards: int = 1
    endianness: int = 0  # 0 little, 1 big
    version: int = 0


@dataclass
class TensorInfo:
    """What ``inspect-hub`` lists per variable."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    partitioned: bool = False
    extra: dict[str, object] = field(default_factory=dict)


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims: list[int] = []
    for number, _, value in iter_fields(buf, what="TensorShapeProto"):
        if number == 2 and isinstance(value, bytes):
            size = 0
            for n2, _, v2 in iter_fields(value, what="TensorShapeProto.Dim"):
                if n2 == 1 and isinstance(v2, int):
                    size = as_int64(v2)
            dims.append(size)
        elif number == 3 and value:
            raise InputError("checkpoint entry has a shape of unknown rank")
    return tuple(dims)


def _parse_slice(buf: bytes) -> tuple[Extent, ...]:
    extents: list[Extent] = []
    for number, _, value in iter_fields(buf, what="TensorSliceProto"):
        if number == 1 and isinstance(value, bytes):
            start, length = 0, -1
            for n2, _, v2 in iter_fields(value, what="TensorSliceProto.Extent"):
                if n2 == 1 and isinstance(v2, int):
                    start = as_int64(v2)
                elif n2 == 2 and isinstance(v2, int):
                    length = as_int64(v2)
            extents.append((start, length))
    return tuple(extents)


MAX_BYTES = 2**63 - 1
"""The most elements or bytes a tensor may claim (a signed 64-bit size, as TF's)."""


def _slice_count(extents: tuple[Extent, ...], shape: tuple[int, ...]) -> int:
    """Elements of one slice of a tensor of ``shape``; -1 for a slice outside it."""
    if len(extents) != len(shape):
        return -1
    count = 1
    for (start, length), dim in zip(extents, shape):
        if length == -1:
            length = dim if start == 0 else -1
        if start < 0 or length < 0 or start + length > dim:
            return -1
        count *= length
    return count


def parse_entry(name: str, buf: bytes | memoryview) -> BundleEntry:
    """Decode a ``BundleEntryProto``."""
    values: dict[str, int] = {}
    shape: tuple[int, ...] = ()
    slices: list[tuple[Extent, ...]] = []
    names = {1: "dtype", 3: "shard_id", 4: "offset", 5: "size", 6: "crc32c"}
    for number, _, value in iter_fields(bytes(buf), what=f"entry of {name!r}"):
        if number in names and isinstance(value, int):
            values[names[number]] = value
        elif number == 2 and isinstance(value, bytes):
            shape = _parse_shape(value)
        elif number == 7 and isinstance(value, bytes):
            slices.append(_parse_slice(value))
    return BundleEntry(name=name, shape=shape, slices=tuple(slices), **values)


def parse_header(buf: bytes | memoryview) -> BundleHeader:
    """Decode a ``BundleHeaderProto``."""
    values: dict[str, int] = {}
    for number, _, value in iter_fields(bytes(buf), what="bundle header"):
        if number == 1 and isinstance(value, int):
            values["num_shards"] = value
        elif number == 2 and isinstance(value, int):
            values["endianness"] = value
        elif number == 3 and isinstance(value, bytes):
            for n2, _, v2 in iter_fields(value, what="VersionDef"):
                if n2 == 1 and isinstance(v2, int):
                    values["version"] = v2
    return BundleHeader(**values)


def resolve_prefix(path: str | os.PathLike[str]) -> Path:
    """The checkpoint prefix for a prefix, a ``variables/`` folder or a module folder."""
    candidate = Path(path)
    if candidate.is_dir():
        for prefix in (candidate / "variables" / "variables", candidate / "variables"):
            if prefix.with_name(prefix.name + ".index").is_file():
                return prefix
        indexes = sorted(candidate.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        raise InputError(
            f"{candidate} holds no checkpoint: expected variables/variables.index, "
            "variables.index or exactly one <prefix>.index"
        )
    if candidate.suffix == ".index" and candidate.is_file():
        return candidate.with_suffix("")
    if candidate.with_name(candidate.name + ".index").is_file():
        return candidate
    raise InputError(f"no checkpoint at {candidate}: {candidate}.index does not exist")


class CheckpointReader:
    """Random access to the tensors of one checkpoint.

    Args:
        path: a checkpoint prefix (``.../variables``), a ``variables/`` folder or
            a module folder.
        verify: check CRC32C of index blocks and of every tensor read.

    The index is read and (if ``verify``) checked at construction; data files
    are memory-mapped on first use.
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = True) -> None:
        self.prefix = resolve_prefix(path)
        self.verify = verify
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        data = self.index_path.read_bytes()
        source = str(self.index_path)
        header: BundleHeader | None = None
        self.entries: dict[str, BundleEntry] = {}
        self._slice_entries: dict[bytes, BundleEntry] = {}
        for key, value in read_table(data, source=source, verify=verify):
            if key == b"":
                header = parse_header(value)
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                name = key.decode("latin-1")
            try:
                entry = parse_entry(name, value)
            except InputError as error:
                raise InputError(f"{source}: {error}") from None
            if key[:1] == b"\x00":  # OrderedCode slice key of a partitioned variable
                self._slice_entries[key] = entry
            else:
                self.entries[name] = entry
        if header is None:
            raise InputError(f"{source}: no bundle header (empty key); not a V2 checkpoint")
        if header.endianness not in (0, 1):
            raise InputError(f"{source}: unknown endianness {header.endianness}")
        self.header = header
        self._maps: dict[int, memoryview] = {}
        for entry in self.entries.values():
            if entry.dtype not in BY_ENUM:
                raise InputError(
                    f"{source}: tensor {entry.name!r} has dtype {entry.dtype_name}, "
                    "which this reader does not support"
                )
        for entry in [*self.entries.values(), *self._slice_entries.values()]:
            self._check_shape(entry, source)

    def _check_shape(self, entry: BundleEntry, source: str) -> None:
        """Refuse a shape no real checkpoint has, naming the tensor and the shape:
        a negative dimension, more bytes than a 64-bit offset reaches, stored bytes
        that do not match the shape, slices that do not tile it, or bytes beyond
        the end of its data file. Nothing is allocated before this passes."""
        tf_type = BY_ENUM.get(entry.dtype)
        what = (f"{source}: tensor {entry.name!r} has the impossible shape "
                f"{entry.dtype_name}{list(entry.shape)}")
        if any(dim < 0 for dim in entry.shape):
            raise InputError(f"{what} (a negative dimension)")
        count = math.prod(entry.shape)
        needed = count * (tf_type.itemsize if tf_type is not None else 0)
        if max(count, needed) > MAX_BYTES:
            raise InputError(f"{what} (more than 2**63 - 1 elements or bytes)")
        if entry.partitioned:
            counts = [_slice_count(extents, entry.shape) for extents in entry.slices]
            if -1 in counts:
                outside = entry.slices[counts.index(-1)]
                raise InputError(f"{what}: its slice {ordered_code.describe(outside)} lies "
                                 "outside it")
            covered = sum(counts)
            if covered != count:
                raise InputError(f"{what}: its slices cover {covered} of {count} elements")
            return
        if tf_type is not None and tf_type.disk is not None and entry.size != needed:
            raise InputError(f"{what}: it needs {needed} bytes but the index records "
                             f"{entry.size}")
        if tf_type is not None and tf_type.disk is None and entry.size < count:
            raise InputError(f"{what}: {count} strings cannot fit in {entry.size} bytes")
        path = self.data_path(entry.shard_id)
        if 0 <= entry.shard_id < self.header.num_shards and path.is_file():
            end, length = entry.offset + entry.size, path.stat().st_size
            if end > length:
                raise InputError(f"{path}: truncated file: tensor {entry.name!r} needs bytes "
                                 f"[{entry.offset}, {end}), file has {length}")

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        """Tensor names, sorted bytewise (the index order)."""
        return list(self.entries)

    def info(self, name: str) -> TensorInfo:
        """dtype, shape and stored bytes of ``name``."""
        entry = self._entry(name)
        size = entry.size
        if entry.partitioned:
            size = sum(e.size for e in self._slices_of(entry))
        return TensorInfo(name, entry.dtype_name, entry.shape, size, entry.partitioned)

    def data_path(self, shard: int) -> Path:
        n = self.header.num_shards
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard:05d}-of-{n:05d}")

    def _entry(self, name: str) -> BundleEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in {self.index_path}") from None

    def _map(self, shard: int, needed_by: str) -> memoryview:
        if shard in self._maps:
            return self._maps[shard]
        if not 0 <= shard < self.header.num_shards:
            raise InputError(
                f"{self.index_path}: tensor {needed_by!r} names shard {shard} of "
                f"{self.header.num_shards}; the index is corrupt"
            )
        path = self.data_path(shard)
        if not path.is_file():
            raise InputError(
                f"missing data file {path} (shard {shard} of {self.header.num_shards}), "
                f"needed by tensor {needed_by!r}"
            )
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                view = memoryview(b"")
            else:
                view = memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
        self._maps[shard] = view
        return view

    def _bytes(self, entry: BundleEntry) -> memoryview:
        data = self._map(entry.shard_id, entry.name)
        end = entry.offset + entry.size
        if end > len(data):
            raise InputError(
                f"{self.data_path(entry.shard_id)}: truncated file: tensor {entry.name!r} "
                f"needs bytes [{entry.offset}, {end}), file has {len(data)}"
            )
        raw = data[entry.offset : end]
        if self.verify and entry.dtype != 7:
            actual = mask(crc32c(raw))
            if actual != entry.crc32c:
                raise InputError(
                    f"{self.data_path(entry.shard_id)}: bad CRC for tensor {entry.name!r} "
                    f"(stored {entry.crc32c:#010x}, computed {actual:#010x}); the file is corrupt"
                )
        return raw

    def _slices_of(self, entry: BundleEntry) -> list[BundleEntry]:
        found = []
        for extents in entry.slices:
            key = ordered_code.slice_key(entry.name, extents)
            if key not in self._slice_entries:
                raise InputError(
                    f"{self.index_path}: partitioned variable {entry.name!r} lacks its slice "
                    f"{ordered_code.describe(extents)}"
                )
            found.append(self._slice_entries[key])
        return found

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a numpy array (see the module doc for dtypes)."""
        entry = self._entry(name)
        if not entry.partitioned:
            return self._decode(entry)
        full: np.ndarray | None = None
        covered = 0
        for extents, part in zip(entry.slices, self._slices_of(entry)):
            values = self._decode(part)
            if full is None:
                full = np.zeros(entry.shape, dtype=values.dtype)
            index = tuple(
                slice(0, dim) if length == -1 else slice(start, start + length)
                for (start, length), dim in zip(extents, entry.shape)
            )
            full[index] = values
            covered += values.size
        if full is None:
            raise InputError(f"{self.index_path}: partitioned variable {name!r} has no slices")
        if covered != full.size:
            raise InputError(f"{self.index_path}: the slices of partitioned variable {name!r} "
                             f"cover {covered} of {full.size} elements")
        return full

    def read_all(self) -> dict[str, np.ndarray]:
        """Every tensor, by name (partitioned variables reassembled)."""
        return {name: self.read(name) for name in self.entries}

    def _decode(self, entry: BundleEntry) -> np.ndarray:
        tf_type: TFDType = BY_ENUM[entry.dtype]
        raw = self._bytes(entry)
        count = int(np.prod(entry.shape, dtype=np.int64))
        if tf_type.disk is None:
            return self._decode_strings(entry, raw, count)
        expected = count * tf_type.itemsize
        if len(raw) != expected:
            raise InputError(
                f"{self.data_path(entry.shard_id)}: tensor {entry.name!r} has {len(raw)} "
                f"bytes, but {tf_type.name}{list(entry.shape)} needs {expected}"
            )
        disk = np.dtype(tf_type.disk)
        if self.header.endianness == 1:
            disk = disk.newbyteorder(">")
        array = np.frombuffer(raw, dtype=disk, count=count).reshape(entry.shape)
        if tf_type.name == "bfloat16":
            return (array.astype(np.uint32) << 16).view(np.float32)
        if self.header.endianness == 1:
            return array.astype(disk.newbyteorder("="))
        return array

    def _decode_strings(self, entry: BundleEntry, raw: memoryview, count: int) -> np.ndarray:
        where = f"{self.data_path(entry.shard_id)}: string tensor {entry.name!r}"
        lengths: list[int] = []
        pos = 0
        crc = 0
        for _ in range(count):
            length, pos = read_varint(raw, pos, what=where)
            if length > len(raw):  # also keeps struct.pack below in range
                raise InputError(f"{where}: a string of {length} bytes does not fit in the "
                                 f"tensor's {len(raw)}; the file is corrupt")
            lengths.append(length)
            fmt = "<I" if length <= 0xFFFFFFFF else "<Q"
            if self.verify:
                crc = crc32c(struct.pack(fmt, length), crc)
        if pos + 4 > len(raw):
            raise InputError(f"{where} is truncated")
        checksum = bytes(raw[pos : pos + 4])
        if self.verify:
            (stored,) = struct.unpack("<I", checksum)
            if stored != mask(crc):
                raise InputError(f"{where}: bad CRC of the string lengths; the file is corrupt")
            crc = crc32c(checksum, crc)
        pos += 4
        out = np.empty(count, dtype=object)
        body_start = pos
        for i, length in enumerate(lengths):
            if pos + length > len(raw):
                raise InputError(f"{where} is truncated")
            out[i] = bytes(raw[pos : pos + length])
            pos += length
        if self.verify:
            crc = crc32c(raw[body_start:pos], crc)
            if mask(crc) != entry.crc32c:
                raise InputError(f"{where}: bad CRC (stored {entry.crc32c:#010x}); "
                                 "the file is corrupt")
        return out.reshape(entry.shape)


def read_checkpoint(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint at ``path`` (prefix, ``variables/`` or module folder).

    Example::

        tensors = read_checkpoint("llr_latents_module/")   # {name: np.ndarray}

    Raises:
        InputError: a corrupt, truncated or incomplete checkpoint (the message
            names the file and the problem).
    """
    return CheckpointReader(path, verify=verify).read_all()
