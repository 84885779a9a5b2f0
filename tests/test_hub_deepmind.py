"""Modules built the way DeepMind's LLR code builds its networks import exactly, with no --arch.

The fixtures (``dm_*.tar.gz``) are written by ``scripts/make_hub_fixtures.py``
through tensorflow_hub's TF1 module API, with DeepMind's batch norm (an
``accumulation_counter`` per batch norm, batch statistics computed in the graph)
and DeepMind's Wide-ResNet (``16 * width`` stem, a projection in every layer's
first block); the goldens are TensorFlow's outputs.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hub_helpers import FIXTURES, copy_module, feed_stem, golden, rewrite_graphs
from llrnet.core.errors import InputError, WeightsError
from llrnet.hub import import_hub, open_module
from llrnet.hub.conversion.convert import choose_architecture, convert
from llrnet.hub.formats.archive import extract_archive
from llrnet.hub.formats.bundle_writer import write_checkpoint
from llrnet.hub.formats.module import HubModule
from llrnet.models import load_weights, read_metadata
from llrnet.models.adapters import latents_module

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dm")
    return {name: extract_archive(FIXTURES / f"dm_{name}.tar.gz", root / name)
            for name in ("latents", "linear", "cifar10")}


def _module(folders: dict[str, Path], name: str) -> HubModule:
    return open_module(folders[name])


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def test_deepmind_wide_resnet_matches_tensorflow_without_arch(folders: dict[str, Path]) -> None:
    data = golden("dm_cifar10")
    conversion = convert(_module(folders, "cifar10"))
    assert conversion.architecture == "wide_resnet"  # no registered WRN-10-1 is DeepMind's
    assert conversion.kwargs == {"depth": 10, "width": 1, "activation": "softplus",
                                 "variant": "deepmind", "num_classes": 10, "in_channels": 3,
                                 "padding": "same", "bn_eps": 1e-5}
    model = conversion.model
    assert model.groups[0][0].shortcut is not None  # also where 16 channels stay 16
    with torch.no_grad():
        logits = model(_nchw(data["images"]))
    np.testing.assert_allclose(logits.numpy(), data["logits"], atol=TOLERANCE, rtol=0)
    assert np.abs(data["logits"]).max() > 1  # not a trivially small output


def test_deepmind_batch_norm_counters_are_bookkeeping(folders: dict[str, Path]) -> None:
    conversion = convert(_module(folders, "cifar10"))
    counters = conversion.bookkeeping["module"]
    # 2 per block (3 blocks) + the final one; each found by its increment in "train"
    assert len(counters) == 7 and all(n.endswith("accumulation_counter") for n in counters)
    reason = counters["wide_res_net/BatchNorm/accumulation_counter"]
    assert "incremented by 1 in the {'train'} graph" in reason
    assert "wide_res_net/BatchNorm/accumulated_mean" in reason
    assert sorted(conversion.ignored["module"]) == sorted(counters)
    assert any(c.startswith("bookkeeping: 7 counters") for c in conversion.checks)
    used = {a.variable for a in conversion.assignments}
    assert len(used) == 47 - 7 and not used & set(counters)


def test_deepmind_resnet_pair_matches_tensorflow(folders: dict[str, Path]) -> None:
    data = golden("dm_latents")
    conversion = convert(_module(folders, "latents"), linear=_module(folders, "linear"))
    # a tiny module whose every option equals a registered model's defaults gets its name
    assert conversion.architecture == "llr_pretrain_adv_tiny"
    assert conversion.facts["image_input"] == "inputs"
    assert conversion.facts["other_inputs"] == {"decay_rate": "float32"}
    assert len(conversion.bookkeeping["module"]) == 13  # 3 per unit (4 units) + final
    model = conversion.model
    with torch.no_grad():
        latents = latents_module(model)({"inputs": data["preprocessed"], "decay_rate": 0.1})
        bird = model.bird_logit(_nchw(data["images"]))
    np.testing.assert_allclose(latents.numpy(), data["latents"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(bird.numpy(), data["bird_logit"], atol=TOLERANCE, rtol=0)


def test_import_without_arch_records_family_and_load_weights_rebuilds(
        folders: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "wrn.safetensors"
    record = import_hub(folders["cifar10"], out=out)
    metadata = read_metadata(out)
    assert metadata["architecture"] == "wide_resnet" and metadata["kwargs"]["variant"] == "deepmind"
    assert metadata["import"]["bookkeeping"]["module"] == record["import"]["bookkeeping"]["module"]
    data = golden("dm_cifar10")
    with torch.no_grad():
        logits = load_weights(out)(_nchw(data["images"]))
    np.testing.assert_allclose(logits.numpy(), data["logits"], atol=TOLERANCE, rtol=0)


def test_cli_import_archive_without_arch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from llrnet.cli import main

    monkeypatch.setenv("LLRNET_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "llr.safetensors"
    assert main(["import-hub", str(FIXTURES / "dm_latents.tar.gz"), "--linear",
                 str(FIXTURES / "dm_linear.tar.gz"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "llr_pretrain_adv_tiny" in printed and "matching the module exactly" in printed
    assert "bookkeeping: 13 counters" in printed


def test_an_unknown_scalar_is_still_an_error(folders: dict[str, Path], tmp_path: Path) -> None:
    module = tmp_path / "cifar10"
    import shutil

    shutil.copytree(folders["cifar10"], module)
    reader = open_module(module).reader
    tensors = {n: np.array(reader.read(n)) for n in reader.names()}
    tensors["wide_res_net/BatchNorm/extra_scalar"] = np.float32(3.0)
    write_checkpoint(module / "variables" / "variables", tensors)
    with pytest.raises(WeightsError, match=r"variables not consumed: "
                                           r"wide_res_net/BatchNorm/extra_scalar$"):
        convert(open_module(module))


def test_an_extra_input_that_changes_the_output_is_refused(tmp_path: Path) -> None:
    module = copy_module("imagenet", tmp_path)  # inputs x and decay_rate
    rewrite_graphs(module, lambda graph: feed_stem(graph, "live", "Mul", "decay_rate"))
    with pytest.raises(InputError, match=r"depends on the inputs \['decay_rate'\] besides "
                                         "the image"):
        convert(open_module(module))


@pytest.mark.parametrize(("variant", "depth", "expected"), [
    ("deepmind", 40, "wrn_40_8_softplus"), ("deepmind", 28, "wrn_28_8_softplus"),
    ("zagoruyko", 28, "wrn_28_8_softplus_zagoruyko"), ("zagoruyko", 40, "wide_resnet")])
def test_full_size_wrn_modules_get_their_registered_names(variant: str, depth: int,
                                                          expected: str) -> None:
    facts = {"family": "wide_resnet", "padding": "same", "bn_eps": 1e-5,
             "activation": "softplus", "depth": depth, "width": 8, "in_channels": 3,
             "variant": variant, "num_classes": 10}
    name, why = choose_architecture(SimpleNamespace(family="wide_resnet", facts=facts))
    assert name == expected
    assert why.startswith("registered name") == (expected != "wide_resnet")
