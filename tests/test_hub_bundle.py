"""The checkpoint reader against TF-written golden tensors; the writer against TF's bytes."""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
import pytest

from hub_helpers import CHECKPOINTS, FIXTURES, many_name
from llrnet.hub import CheckpointReader, read_checkpoint
from llrnet.hub.formats import crc32c as crc_module
from llrnet.hub.formats.bundle_writer import write_checkpoint
from llrnet.hub.formats.protowire import read_varint
from llrnet.hub.formats.table import iter_block, read_block


def _bitwise_crc32c(data: bytes) -> int:
    """The CRC32C definition, one bit at a time (reflected polynomial 0x82F63B78): the
    oracle that google-crc32c's answers are checked against."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_vectors_and_implementations_agree() -> None:
    # RFC 3720 test vectors
    assert crc_module.crc32c(b"123456789") == 0xE3069283
    assert crc_module.crc32c(bytes(32)) == 0x8A9136AA
    assert crc_module.crc32c(b"\xff" * 32) == 0x62A8AB43
    data = np.random.default_rng(0).integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    assert crc_module.crc32c(memoryview(data)) == crc_module.crc32c(data)
    assert crc_module.crc32c(data[:4099]) == _bitwise_crc32c(data[:4099])
    assert crc_module.crc32c(bytearray(data[:4099])) == _bitwise_crc32c(data[:4099])
    assert crc_module.crc32c(data[7:], crc_module.crc32c(data[:7])) == crc_module.crc32c(data)
    value = crc_module.crc32c(data)
    assert crc_module.unmask(crc_module.mask(value)) == value


def test_crc32c_of_a_view_longer_than_one_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    # memoryviews and mmaps are fed to google-crc32c in copies; the copies' CRCs chain
    monkeypatch.setattr(crc_module, "_CHUNK", 1000)
    data = np.random.default_rng(1).integers(0, 256, 4099, dtype=np.uint8).tobytes()
    assert crc_module.crc32c(memoryview(data)) == _bitwise_crc32c(data)


def test_every_dtype_equals_golden() -> None:
    tensors = read_checkpoint(CHECKPOINTS / "dtypes" / "ckpt")
    with np.load(CHECKPOINTS / "dtypes" / "golden.npz") as golden:
        for name in golden.files:
            expected = golden[name]
            assert tensors[name].dtype == expected.dtype, name
            assert tensors[name].shape == expected.shape, name
            np.testing.assert_array_equal(tensors[name], expected, err_msg=name)
    # scalars keep rank 0; bfloat16 widened exactly to float32
    assert tensors["scalar_f32"].shape == () and tensors["scalar_f32"] == np.float32(3.25)
    assert tensors["bf16"].dtype == np.float32
    assert (tensors["bf16"].view(np.uint32) & 0xFFFF == 0).all()
    strings = json.loads((CHECKPOINTS / "dtypes" / "golden_strings.json").read_text())
    for name, spec in strings.items():
        assert tensors[name].shape == tuple(spec["shape"])
        assert [v.hex() for v in tensors[name].ravel()] == spec["hex"]


def test_partitioned_variable_is_reassembled() -> None:
    reader = CheckpointReader(CHECKPOINTS / "dtypes")
    assert reader.info("partitioned").partitioned
    with np.load(CHECKPOINTS / "dtypes" / "golden.npz") as golden:
        np.testing.assert_array_equal(reader.read("partitioned"), golden["partitioned"])


def _data_blocks(index: bytes) -> int:
    footer = len(index) - 48
    _, pos = read_varint(index, footer)
    _, pos = read_varint(index, pos)
    offset, pos = read_varint(index, pos)
    size, _ = read_varint(index, pos)
    block = read_block(index, offset, size, source="index", verify=True)
    return len(list(iter_block(block, source="index")))


def test_many_variables_span_several_index_blocks() -> None:
    assert _data_blocks((CHECKPOINTS / "many" / "ckpt.index").read_bytes()) >= 2
    tensors = read_checkpoint(CHECKPOINTS / "many" / "ckpt")
    assert len(tensors) == 2000
    for i in range(2000):
        assert tensors[many_name(i)] == np.float32(i * 0.5)


def test_multi_shard_checkpoint() -> None:
    reader = CheckpointReader(CHECKPOINTS / "sharded" / "ckpt")
    assert reader.header.num_shards == 3
    with np.load(CHECKPOINTS / "sharded" / "golden.npz") as golden:
        tensors = reader.read_all()
        assert sorted(tensors) == sorted(golden.files)
        for name in golden.files:
            np.testing.assert_array_equal(tensors[name], golden[name])
    assert {e.shard_id for e in reader.entries.values()} == {0, 1, 2}


def test_arrays_are_memory_mapped_views() -> None:
    reader = CheckpointReader(FIXTURES / "latents")
    name = "resnet_v2/conv2d/w"
    array = reader.read(name)
    assert not array.flags.writeable and not array.flags.owndata
    base = array
    while getattr(base, "base", None) is not None and not isinstance(base, mmap.mmap):
        base = base.base
    assert isinstance(base, (mmap.mmap, memoryview))


def test_path_forms_resolve_to_the_same_checkpoint() -> None:
    module = FIXTURES / "latents"
    by_module = read_checkpoint(module)
    by_folder = read_checkpoint(module / "variables")
    by_prefix = read_checkpoint(module / "variables" / "variables")
    assert sorted(by_module) == sorted(by_folder) == sorted(by_prefix)
    assert len(by_module) == 78


def test_verify_false_skips_crc(tmp_path: Path) -> None:
    prefix = tmp_path / "ck"
    write_checkpoint(prefix, {"a": np.arange(4, dtype=np.float32)})
    data = tmp_path / "ck.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    values = read_checkpoint(prefix, verify=False)["a"]
    assert values[0] != 0.0 and list(values[1:]) == [1.0, 2.0, 3.0]


def test_writer_roundtrip_and_bytes_equal_tensorflow(tmp_path: Path) -> None:
    for name in ("many", "sharded"):
        reader = CheckpointReader(CHECKPOINTS / name / "ckpt")
        write_checkpoint(tmp_path / name, reader.read_all(), num_shards=reader.header.num_shards)
        ours = (tmp_path / f"{name}.index").read_bytes()
        assert ours == (CHECKPOINTS / name / "ckpt.index").read_bytes()
    dtypes = CheckpointReader(CHECKPOINTS / "dtypes").read_all()
    dtypes.pop("partitioned")
    prefix = tmp_path / "dtypes"
    write_checkpoint(prefix, dtypes, num_shards=2, bfloat16=frozenset({"bf16"}))
    again = read_checkpoint(prefix)
    for name, value in dtypes.items():
        assert again[name].dtype == value.dtype
        np.testing.assert_array_equal(again[name], value)
