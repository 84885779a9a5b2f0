"""Error paths of the TF-Hub reader and importer: corrupt files, bad mappings, bad usage."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hub_helpers import CHECKPOINTS, FIXTURES, copy_module, feed_stem, rewrite_graphs, with_entry
from llrnet.core.errors import InputError, UsageError, WeightsError
from llrnet.hub import CheckpointReader, open_module, read_checkpoint
from llrnet.hub.conversion.convert import convert
from llrnet.hub.formats.bundle import BundleEntry
from llrnet.hub.formats.bundle_writer import write_checkpoint
from llrnet.hub.formats.savedmodel import read_saved_model


def _copy_checkpoint(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    shutil.copytree(CHECKPOINTS / name, folder)
    return folder / "ckpt"


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_bad_magic(tmp_path: Path) -> None:
    prefix = _copy_checkpoint("sharded", tmp_path)
    index = prefix.with_name("ckpt.index")
    _flip(index, len(index.read_bytes()) - 1)
    with pytest.raises(InputError, match=r"ckpt\.index: bad magic number"):
        read_checkpoint(prefix)


def test_bad_block_crc(tmp_path: Path) -> None:
    prefix = _copy_checkpoint("sharded", tmp_path)
    index = prefix.with_name("ckpt.index")
    _flip(index, 12)  # inside the first data block
    with pytest.raises(InputError, match=r"ckpt\.index: bad CRC in block at byte 0"):
        read_checkpoint(prefix)


def test_bad_tensor_crc_names_file_and_tensor(tmp_path: Path) -> None:
    prefix = _copy_checkpoint("sharded", tmp_path)
    data = prefix.with_name("ckpt.data-00001-of-00003")
    _flip(data, 3)
    reader = CheckpointReader(prefix)
    victim = next(e.name for e in reader.entries.values() if e.shard_id == 1 and e.offset == 0)
    with pytest.raises(InputError, match=rf"data-00001-of-00003: bad CRC for tensor '{victim}'"):
        reader.read(victim)


def test_bad_string_crc(tmp_path: Path) -> None:
    prefix = _copy_checkpoint("dtypes", tmp_path)
    reader = CheckpointReader(prefix)
    entry = reader.entries["str_vector"]
    _flip(prefix.with_name("ckpt.data-00000-of-00001"), entry.offset + entry.size - 1)
    with pytest.raises(InputError, match="string tensor 'str_vector': bad CRC"):
        CheckpointReader(prefix).read("str_vector")


def test_truncated_index(tmp_path: Path) -> None:
    prefix = _copy_checkpoint("many", tmp_path)
    index = prefix.with_name("ckpt.index")
    index.write_bytes(index.read_bytes()[:30])
    with pytest.raises(InputError, match=r"ckpt\.index: truncated file"):
        read_checkpoint(prefix)


def test_truncated_data_file(tmp_path: Path) -> None:
    prefix = _copy_checkpoint("dtypes", tmp_path)
    data = prefix.with_name("ckpt.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(InputError, match=r"data-00000-of-00001: truncated file: tensor"):
        read_checkpoint(prefix)


def test_missing_shard(tmp_path: Path) -> None:
    prefix = _copy_checkpoint("sharded", tmp_path)
    prefix.with_name("ckpt.data-00002-of-00003").unlink()
    with pytest.raises(InputError, match=r"missing data file .*ckpt\.data-00002-of-00003 "
                                         r"\(shard 2 of 3\), needed by tensor"):
        read_checkpoint(prefix)


def test_missing_slice_of_partitioned_variable(tmp_path: Path) -> None:
    reader = CheckpointReader(CHECKPOINTS / "dtypes")
    entry = reader.entries["partitioned"]
    reader.entries["partitioned"] = BundleEntry(
        entry.name, entry.dtype, entry.shape, slices=(*entry.slices, ((0, 1), (0, -1))))
    with pytest.raises(InputError, match="partitioned variable 'partitioned' lacks its slice "
                                         "0,1:-"):
        reader.read("partitioned")


def test_partitioned_slices_must_cover_the_variable() -> None:
    reader = CheckpointReader(CHECKPOINTS / "dtypes")
    entry = reader.entries["partitioned"]
    reader.entries["partitioned"] = BundleEntry(entry.name, entry.dtype, entry.shape,
                                                slices=entry.slices[:2])
    with pytest.raises(InputError, match="slices of partitioned variable 'partitioned' cover "
                                         "20 of 24 elements"):
        reader.read("partitioned")


def test_no_checkpoint_and_unknown_tensor(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds no checkpoint"):
        read_checkpoint(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        read_checkpoint(tmp_path / "nothing")
    with pytest.raises(KeyError, match="no tensor 'nope'"):
        CheckpointReader(CHECKPOINTS / "sharded").read("nope")


def test_size_mismatch_is_reported(tmp_path: Path) -> None:
    prefix = tmp_path / "ck"
    write_checkpoint(prefix, {"a": np.zeros(3, np.float32)})
    reader = CheckpointReader(prefix)
    entry = reader.entries["a"]
    reader.entries["a"] = BundleEntry("a", entry.dtype, (4,), offset=0, size=entry.size,
                                      crc32c=entry.crc32c)
    with pytest.raises(InputError, match=r"tensor 'a' has 12 bytes, but float32\[4\] needs 16"):
        reader.read("a")


def test_corrupt_saved_model(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\x12\x05abc")
    with pytest.raises(InputError, match="not a valid SavedModel"):
        read_saved_model(tmp_path)
    with pytest.raises(InputError, match=r"no saved_model\.pb"):
        read_saved_model(tmp_path / "missing")


def _rewrite_variables(module: Path, extra: dict[str, np.ndarray]) -> None:
    prefix = module / "variables" / "variables"
    tensors = {k: np.array(v) for k, v in read_checkpoint(prefix).items()}
    tensors.update(extra)
    for path in (module / "variables").iterdir():
        path.unlink()
    write_checkpoint(prefix, tensors)


def test_unconsumed_variable_is_listed_and_slots_are_ignored(tmp_path: Path) -> None:
    module = copy_module("imagenet", tmp_path)
    _rewrite_variables(module, {
        "resnet_v2/conv2d/w/Momentum": np.zeros((7, 7, 3, 8), np.float32),
        "global_step": np.int64(5),
        "resnet_v2/stray/w": np.zeros(3, np.float32),
    })
    with pytest.raises(WeightsError, match=r"module variables not consumed: resnet_v2/stray/w$"):
        convert(open_module(module), architecture="resnet_v2_tiny_imagenet")
    _rewrite_variables(module, {})
    module2 = copy_module("imagenet", tmp_path / "again")
    _rewrite_variables(module2, {"resnet_v2/conv2d/w/Momentum": np.zeros((7, 7, 3, 8),
                                                                          np.float32),
                                 "global_step": np.int64(5)})
    conversion = convert(open_module(module2), architecture="resnet_v2_tiny_imagenet")
    assert conversion.ignored["module"] == ["global_step", "resnet_v2/conv2d/w/Momentum"]


def test_missing_graph_variable_in_checkpoint(tmp_path: Path) -> None:
    module = copy_module("imagenet", tmp_path)
    prefix = module / "variables" / "variables"
    tensors = {k: np.array(v) for k, v in read_checkpoint(prefix).items()}
    del tensors["resnet_v2/conv2d/w"]
    for path in (module / "variables").iterdir():
        path.unlink()
    write_checkpoint(prefix, tensors)
    with pytest.raises(InputError, match="graph variable 'resnet_v2/conv2d/w' is not in the "
                                         "checkpoint"):
        convert(open_module(module), architecture="resnet_v2_tiny_imagenet")


def test_architecture_mismatches() -> None:
    imagenet = open_module(FIXTURES / "imagenet")
    with pytest.raises(UsageError, match="unknown architecture 'resnet9'; choose from"):
        convert(imagenet, architecture="resnet9")
    with pytest.raises(UsageError, match=r"module is a resnet_v2 with \{'units': \(1, 2, 1, 1\)"
                                         r".*but resnet152_v2_imagenet has \{'units': "
                                         r"\(3, 8, 36, 3\)"):
        convert(imagenet, architecture="resnet152_v2_imagenet")
    with pytest.raises(UsageError, match=r"units \(2, 1, 1, 1\) are not ResNet-50/101/152"):
        convert(open_module(FIXTURES / "latents"), architecture="llr_pretrain_adv",
                linear=open_module(FIXTURES / "linear"))
    with pytest.raises(UsageError, match="is a Wide-ResNet; resnet_v2_tiny_imagenet is a "
                                         "ImageNetClassifier, not a WideResNet"):
        convert(open_module(FIXTURES / "cifar10"), architecture="resnet_v2_tiny_imagenet")
    with pytest.raises(UsageError, match="needs the linear head module too: --linear"):
        convert(open_module(FIXTURES / "latents"), architecture="llr_pretrain_adv_tiny")
    with pytest.raises(UsageError, match="is a linear head module"):
        convert(open_module(FIXTURES / "linear"), architecture="llr_pretrain_adv_tiny")
    with pytest.raises(UsageError, match="uses softplus; wrn_28_10_relu uses relu"):
        convert(open_module(FIXTURES / "cifar10"), architecture="wrn_28_10_relu")


def test_wrong_wrn_size_is_named() -> None:
    with pytest.raises(UsageError, match=r"\{'depth': 10, 'width': 1, 'variant': 'zagoruyko'\}, "
                                         r"but wrn_16_2_softplus has \{'depth': 16, 'width': 2, "
                                         r"'variant': 'zagoruyko'\}"):
        convert(open_module(FIXTURES / "cifar10"), architecture="wrn_16_2_softplus")


def test_shape_mismatch_lists_the_tensors(tmp_path: Path) -> None:
    module = copy_module("cifar10", tmp_path)
    prefix = module / "variables" / "variables"
    tensors = {k: np.array(v) for k, v in read_checkpoint(prefix).items()}
    tensors["wide_resnet/linear/b"] = np.zeros(11, np.float32)  # 11 classes, w says 10
    for path in (module / "variables").iterdir():
        path.unlink()
    write_checkpoint(prefix, tensors)
    with pytest.raises(WeightsError, match=r"import is incomplete; shape of fc.bias: \(10,\) "
                                           r"but wide_resnet/linear/b gives \(11,\)"):
        convert(open_module(module), architecture="wrn_10_1_softplus")


def test_expected_sha256_mismatch_for_folder() -> None:
    with pytest.raises(InputError, match="does not match the expected"):
        open_module(FIXTURES / "linear", expected_sha256="0" * 64)


def test_open_module_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(struct.pack("<I", 1))
    with pytest.raises(InputError, match=r"neither a module folder nor a \.tar\.gz"):
        open_module(path)
    with pytest.raises(InputError, match="no module at"):
        open_module(tmp_path / "absent")


def test_cond_on_a_real_input_is_reported() -> None:
    from llrnet.hub.formats.savedmodel import select_meta_graph
    from llrnet.hub.recognition.graph import LayerGraph
    from llrnet.hub.recognition.structure import parse_trunk

    meta = select_meta_graph(read_saved_model(FIXTURES / "imagenet"), ())
    for node in meta.graph.node:
        if node.name.endswith("use_global_pool"):
            node.op = "Placeholder"  # no longer fixed: the branch depends on the caller
            del node.input[:]
    signature = meta.signatures["default"]
    graph = LayerGraph(meta.graph, [signature.inputs["x"].tensor],
                       signature.outputs["default"].tensor)
    with pytest.raises(InputError, match=r"unsupported ops on the forward path: .*\(Switch on "
                                         r"a predicate that is not fixed\)"):
        parse_trunk(graph)


def _scale_input_in_graph(module: Path) -> None:
    """Rewrite saved_model.pb so the graph computes 2x - 1 of ``x`` before the stem."""

    def edit(graph: Any) -> None:
        for name, number_value in (("two", 2.0), ("one", 1.0)):
            const = graph.node.add(name=name, op="Const")
            const.attr["dtype"].type = 1
            const.attr["value"].tensor.dtype = 1
            const.attr["value"].tensor.float_val.append(number_value)
        feed_stem(graph, "scaled", "Mul", "two")
        graph.node.add(name="shifted", op="Sub", input=["scaled", "one"]).attr["T"].type = 1
        for node in graph.node:
            if node.op == "Conv2D" and node.input[0] == "scaled":
                node.input[0] = "shifted"

    rewrite_graphs(module, edit)


def test_input_scaling_in_the_graph_is_reported(tmp_path: Path) -> None:
    from llrnet.hub import inspect_hub

    module = copy_module("imagenet", tmp_path)
    _scale_input_in_graph(module)
    assert inspect_hub(module)["architecture"]["input_scaling"] == "x * 2.0, then x - 1.0"
    with pytest.raises(UsageError, match=r"scales its input inside the graph \(x \* 2\.0, then "
                                         r"x - 1\.0\)"):
        convert(open_module(module), architecture="resnet_v2_tiny_imagenet")


STEM = "wide_resnet/conv2d/w"  # float32[3, 3, 3, 16], 1728 bytes in the cifar10 fixture


@pytest.mark.parametrize(("change", "message"), [
    ({"shape": (3, -3, 3, 16)}, r"float32\[3, -3, 3, 16\] \(a negative dimension\)"),
    ({"shape": (2**62, 2**62, 3, 16)},
     r"float32\[4611686018427387904, 4611686018427387904, 3, 16\] \(more than 2\*\*63 - 1 "
     r"elements or bytes\)"),
    ({"shape": (2**32, 2**32), "size": 0}, r"float32\[4294967296, 4294967296\] \(more than"),
    ({"shape": (2**30, 2**30), "size": 0},
     r"float32\[1073741824, 1073741824\]: it needs 4611686018427387904 bytes but the index "
     r"records 0"),
    ({"shape": (3, 3, 3, 2**40), "slices": (((0, -1), (0, -1), (0, -1), (0, 16)),)},
     r"float32\[3, 3, 3, 1099511627776\]: its slices cover 432 of 29686813949952 elements"),
    ({"shape": (3, 3, 3, 16), "slices": (((0, -1), (0, -1), (0, -1), (8, 16)),)},
     r"float32\[3, 3, 3, 16\]: its slice -:-:-:8,16 lies outside it"),
    ({"shape": (2**20, 16), "size": 2**26},
     r"truncated file: tensor 'wide_resnet/conv2d/w' needs bytes \[\d+, \d+\), file has"),
])
def test_impossible_shapes_are_refused_naming_the_tensor_and_shape(
        tmp_path: Path, change: dict[str, Any], message: str) -> None:
    from llrnet.cli import main

    module = with_entry(copy_module("cifar10", tmp_path), STEM, **change)
    with pytest.raises(InputError, match=rf"tensor '{STEM}' has the impossible shape "
                                         rf"{message}|{message}"):
        CheckpointReader(module)
    for command in (["inspect-hub", str(module)],  # listed as fine before: now refused
                    ["import-hub", str(module), "--arch", "wrn_10_1_softplus", "--out",
                     str(tmp_path / "w.safetensors")]):
        assert main(command) == 2
    assert not (tmp_path / "w.safetensors").exists()


def test_a_string_weight_is_refused_and_its_lengths_are_bounded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llrnet.cli import main

    module = with_entry(copy_module("cifar10", tmp_path), STEM, dtype=7)
    assert main(["import-hub", str(module), "--arch", "wrn_10_1_softplus", "--out",
                 str(tmp_path / "w.safetensors")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"graph variable '{STEM}' is a string tensor [3, 3, 3, 16]; a layer's weights are "
        "floating point")
    # Read as strings, float bytes give lengths beyond the tensor: refused, not packed.
    with pytest.raises(InputError, match=rf"string tensor '{STEM}': a string of \d+ bytes "
                                         r"does not fit in the tensor's 1728"):
        CheckpointReader(module, verify=False).read(STEM)
