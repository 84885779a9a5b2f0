"""LevelDB-style immutable tables (``variables.index``): read every entry, write one.
More: docs/hub.md, "llrnet.hub.formats.table"."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from llrnet.core.errors import InputError, UsageError
from llrnet.hub.formats.crc32c import crc32c, mask
from llrnet.hub.formats.protowire import read_varint, write_varint

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
TRAILER_SIZE = 5
NO_COMPRESSION = 0


def _handle(buf: bytes | memoryview, pos: int, source: str) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos, what=f"block handle in {source}")
    size, pos = read_varint(buf, pos, what=f"block handle in {source}")
    return offset, size, pos


def read_block(data: bytes | memoryview, offset: int, size: int, *, source: str,
               verify: bool) -> memoryview:
    """The contents of the block at ``offset`` (``size`` bytes), CRC-checked."""
    end = offset + size + TRAILER_SIZE
    if end > len(data):
        raise InputError(
            f"{source}: truncated file: block at byte {offset} needs {end} bytes, "
            f"file has {len(data)}"
        )
    view = memoryview(data)
    contents = view[offset : offset + size]
    kind = data[offset + size]
    if verify:
        (stored,) = struct.unpack_from("<I", data, offset + size + 1)
        actual = mask(crc32c(view[offset : offset + size + 1]))
        if actual != stored:
            raise InputError(
                f"{source}: bad CRC in block at byte {offset} (stored {stored:#010x}, "
                f"computed {actual:#010x}); the file is corrupt"
            )
    if kind != NO_COMPRESSION:
        raise InputError(
            f"{source}: block at byte {offset} uses compression type {kind} "
            "(only uncompressed tables, which TF writes, are supported)"
        )
    return contents


def iter_block(block: memoryview, *, source: str) -> Iterator[tuple[bytes, memoryview]]:
    """Yield (key, value) of every entry of a block, keys rebuilt from prefixes."""
    if len(block) < 4:
        raise InputError(f"{source}: malformed block of {len(block)} bytes")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise InputError(f"{source}: malformed block: {restarts} restart points do not fit")
    pos = 0
    key = b""
    what = f"block entry in {source}"
    while pos < limit:
        shared, pos = read_varint(block, pos, what=what)
        unshared, pos = read_varint(block, pos, what=what)
        length, pos = read_varint(block, pos, what=what)
        if shared > len(key) or pos + unshared + length > limit:
            raise InputError(f"{source}: malformed block entry at byte {pos}")
        key = key[:shared] + bytes(block[pos : pos + unshared])
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def read_table(data: bytes | memoryview, *, source: str, verify: bool = True
               ) -> Iterator[tuple[bytes, memoryview]]:
    """Yield every (key, value) of the table in ``data``, over all data blocks."""
    if len(data) < FOOTER_SIZE:
        raise InputError(f"{source}: truncated file ({len(data)} bytes, footer needs 48)")
    footer = len(data) - FOOTER_SIZE
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != MAGIC:
        raise InputError(
            f"{source}: bad magic number {magic:#018x} (expected {MAGIC:#018x}); "
            "not a TF checkpoint index, or truncated"
        )
    _, _, pos = _handle(data, footer, source)
    index_offset, index_size, _ = _handle(data, pos, source)
    index = read_block(data, index_offset, index_size, source=source, verify=verify)
    previous: bytes | None = None
    for _, handle in iter_block(index, source=source):
        offset, size, _ = _handle(handle, 0, source)
        block = read_block(data, offset, size, source=source, verify=verify)
        for key, value in iter_block(block, source=source):
            if previous is not None and key <= previous:
                raise InputError(f"{source}: keys out of order at {key!r}; the file is corrupt")
            previous = key
            yield key, value


def shortest_separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB's ``FindShortestSeparator``: a short key in [start, limit)."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common >= min(len(start), len(limit)):
        return start
    byte = start[common]
    if byte < 0xFF and byte + 1 < limit[common]:
        return start[:common] + bytes([byte + 1])
    return start


def short_successor(key: bytes) -> bytes:
    """LevelDB's ``FindShortSuccessor``: a short key >= ``key``."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


class _BlockBuilder:
    """LevelDB block builder: prefix-compressed entries plus restart points."""

    def __init__(self, restart_interval: int) -> None:
        self.restart_interval = restart_interval
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last = b""
        self.entries = 0

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.restart_interval:
            limit = min(len(self.last), len(key))
            while shared < limit and self.last[shared] == key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        self.buffer += write_varint(shared) + write_varint(len(key) - shared)
        self.buffer += write_varint(len(value)) + key[shared:] + value
        self.last = key
        self.counter += 1
        self.entries += 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        tail = b"".join(struct.pack("<I", r) for r in self.restarts)
        return bytes(self.buffer) + tail + struct.pack("<I", len(self.restarts))


class TableWriter:
    """Builds a table in memory, as LevelDB's ``TableBuilder`` does (byte for byte
    for TF's uncompressed bundles): add keys in increasing order, then :meth:`finish`.

    ``block_size`` bounds a data block (TF uses 256 KiB; small values force
    several data blocks, which readers must handle); ``restart_interval`` is
    LevelDB's prefix-compression restart period (16, as TF).
    """

    def __init__(self, *, block_size: int = 262144, restart_interval: int = 16) -> None:
        self.block_size = block_size
        self.restart_interval = restart_interval
        self._out = bytearray()
        self._index = _BlockBuilder(1)
        self._block = _BlockBuilder(restart_interval)
        self._pending: bytes | None = None  # handle of the last flushed block
        self._last: bytes | None = None

    def add(self, key: bytes, value: bytes) -> None:
        if self._last is not None and key <= self._last:
            raise UsageError(f"keys must increase: {key!r} after {self._last!r}")
        if self._pending is not None and self._last is not None:
            self._index.add(shortest_separator(self._last, key), self._pending)
            self._pending = None
        self._last = key
        self._block.add(key, value)
        if self._block.size_estimate() >= self.block_size:
            self._flush()

    def _write_block(self, contents: bytes) -> bytes:
        offset = len(self._out)
        self._out += contents
        self._out.append(NO_COMPRESSION)
        self._out += struct.pack("<I", mask(crc32c(contents + bytes([NO_COMPRESSION]))))
        return write_varint(offset) + write_varint(len(contents))

    def _flush(self) -> None:
        if not self._block.entries:
            return
        self._pending = self._write_block(self._block.finish())
        self._block = _BlockBuilder(self.restart_interval)

    def finish(self) -> bytes:
        """The complete table bytes."""
        self._flush()
        meta = self._write_block(_BlockBuilder(1).finish())
        if self._pending is not None and self._last is not None:
            self._index.add(short_successor(self._last), self._pending)
        index = self._write_block(self._index.finish())
        footer = meta + index
        footer += b"\0" * (40 - len(footer)) + struct.pack("<Q", MAGIC)
        return bytes(self._out + footer)
