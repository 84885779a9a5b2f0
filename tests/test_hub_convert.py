"""Converted fixtures reproduce TensorFlow's golden outputs; the import proves itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hub_helpers import FIXTURES, golden
from llrnet.cli import main
from llrnet.hub import import_hub, inspect_hub, open_module
from llrnet.hub.conversion.convert import convert
from llrnet.models import load_weights, read_metadata
from llrnet.models.adapters import latents_module, linear_module

TOLERANCE = 1e-5


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def llr() -> torch.nn.Module:
    conversion = convert(open_module(FIXTURES / "latents"), architecture="llr_pretrain_adv_tiny",
                         linear=open_module(FIXTURES / "linear"))
    return conversion.model


def test_llr_latents_and_linear_match_tensorflow(llr: torch.nn.Module) -> None:
    data = golden("latents")
    with torch.no_grad():
        latents = latents_module(llr)({"inputs": data["preprocessed"], "decay_rate": 0.1})
        logits = linear_module(llr)({"inputs": data["latents"]})
    assert tuple(latents.shape) == data["latents"].shape == (3, 1, 1, 128)
    assert tuple(logits.shape) == data["logits"].shape == (3, 1, 1, 2)
    np.testing.assert_allclose(latents.numpy(), data["latents"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(logits.numpy(), data["logits"], atol=TOLERANCE, rtol=0)


def test_llr_full_pipeline_matches_tensorflow(llr: torch.nn.Module) -> None:
    # crop 0.875 + TF1 bilinear resize + 2x - 1 + latents + linear, all in one model
    data = golden("latents")
    with torch.no_grad():
        bird = llr.bird_logit(_nchw(data["images"]))
    np.testing.assert_allclose(bird.numpy(), data["bird_logit"], atol=TOLERANCE, rtol=0)
    assert np.abs(data["bird_logit"]).max() > 0.1  # not a trivially small output


def test_imagenet_classifier_matches_tensorflow() -> None:
    data = golden("imagenet")
    model = convert(open_module(FIXTURES / "imagenet"),
                    architecture="resnet_v2_tiny_imagenet").model
    with torch.no_grad():
        logits = model(_nchw(data["images"]))
    assert logits.shape == (3, 10)
    np.testing.assert_allclose(logits.numpy(), data["logits"], atol=TOLERANCE, rtol=0)


def test_wide_resnet_matches_tensorflow() -> None:
    data = golden("cifar10")
    model = convert(open_module(FIXTURES / "cifar10"), architecture="wrn_10_1_softplus").model
    with torch.no_grad():
        logits = model(_nchw(data["images"]))
    np.testing.assert_allclose(logits.numpy(), data["logits"], atol=TOLERANCE, rtol=0)


def test_options_are_read_from_the_graph() -> None:
    latents = convert(open_module(FIXTURES / "latents"), architecture="llr_pretrain_adv_tiny",
                      linear=open_module(FIXTURES / "linear"))
    assert latents.kwargs == {"units": [2, 1, 1, 1], "widths": [4, 8, 16, 32], "stem_width": 8,
                              "padding": "same", "bn_eps": 1e-5, "stride_in": "last",
                              "stem_bias": True, "out_bias": True, "bn_scale": False}
    imagenet = convert(open_module(FIXTURES / "imagenet"),
                       architecture="resnet_v2_tiny_imagenet")
    assert imagenet.kwargs["stride_in"] == "first" and imagenet.kwargs["bn_scale"] is True
    assert imagenet.kwargs["num_classes"] == 10 and imagenet.kwargs["out_bias"] is False
    wrn = convert(open_module(FIXTURES / "cifar10"), architecture="wrn_10_1_softplus")
    assert wrn.kwargs["bn_eps"] == pytest.approx(1e-3)
    assert wrn.facts["activation"] == "softplus" and wrn.facts["depth"] == 10


def test_completeness_proof_counts() -> None:
    conversion = convert(open_module(FIXTURES / "cifar10"), architecture="wrn_10_1_softplus")
    state = conversion.model.state_dict()
    filled = {a.key for a in conversion.assignments} | set(conversion.derived)
    assert filled == set(state)
    assert len({a.variable for a in conversion.assignments}) == len(conversion.assignments) == 39
    assert set(conversion.derived) == {k for k in state if k.endswith("num_batches_tracked")} | {
        "normalize.mean", "normalize.std"}


def test_import_hub_writes_loadable_weights_with_metadata(tmp_path: Path) -> None:
    out = tmp_path / "llr.safetensors"
    record = import_hub(FIXTURES / "latents", linear=FIXTURES / "linear",
                        architecture="llr_pretrain_adv_tiny", out=out)
    assert read_metadata(out)["sha256"] == record["sha256"]
    source = record["source"]
    assert len(source["module"]["sha256"]) == 64 and source["linear"]["path"].endswith("linear")
    assert any(c.startswith("structure: 80 of 80 variables consumed") for c in record["checks"])
    model = load_weights(out)
    data = golden("latents")
    with torch.no_grad():
        bird = model.bird_logit(_nchw(data["images"]))
    np.testing.assert_allclose(bird.numpy(), data["bird_logit"], atol=TOLERANCE, rtol=0)


def test_inspect_reports_signatures_variables_ops_and_facts() -> None:
    report = inspect_hub(FIXTURES / "latents")
    tags = sorted(tuple(m["tags"]) for m in report["meta_graphs"])
    assert tags == [(), ("train",)]
    signature = report["meta_graphs"][0]["signatures"]["default"]
    assert signature["inputs"]["inputs"]["shape"] == [None, None, None, 3]
    assert signature["inputs"]["decay_rate"]["dtype"] == "float32"
    # the use_global_pool tf.cond merges [N,1,1,C] and [N,H,W,C] into unknown dims
    assert signature["outputs"]["default"]["shape"] == [None, None, None, 128]
    assert len(report["variables"]) == 78
    assert report["op_histogram"]["Conv2D"] == 1 + 3 * 5 + 4  # stem, units, projections
    facts = report["architecture"]
    assert facts["family"] == "resnet_v2" and facts["depth"] == 17
    assert facts["padding"] == "same" and facts["stride_in"] == "last"
    assert facts["global_pool_op"] is True


def test_cli_inspect_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect-hub", str(FIXTURES / "cifar10"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["architecture"]["family"] == "wide_resnet"
    assert main(["inspect-hub", str(FIXTURES / "imagenet")]) == 0
    text = capsys.readouterr().out
    assert "signature 'default'" in text and "stride_in" in text and "Conv2D" in text
    out = tmp_path / "wrn.safetensors"
    code = main(["import-hub", str(FIXTURES / "cifar10"), "--arch", "wrn_10_1_softplus",
                 "--out", str(out), "--verify"])
    assert code == 0 and out.is_file()
    printed = capsys.readouterr().out
    assert "tensorflow: skipped" in printed or "tensorflow: passed" in printed
    code = main(["import-hub", str(FIXTURES / "cifar10"), "--arch", "resnet152_v2_imagenet",
                 "--out", str(tmp_path / "bad.safetensors")])
    assert code == 2
    assert "is a Wide-ResNet" in capsys.readouterr().err


def test_layout_conversions_match_tensorflow_semantics() -> None:
    from llrnet.hub.conversion.convert import hwio_to_oihw, io_to_oi, io_to_oi11

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)  # NHWC
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)  # HWIO
    # a VALID TF convolution computed by hand in NHWC, against torch on OIHW
    tf_out = np.einsum("nhwc,hwco->no", x[:, 1:4, 1:4, :], w)
    torch_out = torch.nn.functional.conv2d(_nchw(x), torch.from_numpy(hwio_to_oihw(w)))
    np.testing.assert_allclose(torch_out[:, :, 1, 1].numpy(), tf_out, atol=1e-5)
    dense = rng.standard_normal((6, 2)).astype(np.float32)  # TF (in, out)
    features = rng.standard_normal((4, 6)).astype(np.float32)
    expected = features @ dense
    linear = torch.nn.functional.linear(torch.from_numpy(features),
                                        torch.from_numpy(io_to_oi(dense)))
    np.testing.assert_allclose(linear.numpy(), expected, atol=1e-5)
    # a dense linear module as the 1x1 head of BirdOrBicycleClassifier
    as_conv = torch.nn.functional.conv2d(torch.from_numpy(features)[:, :, None, None],
                                         torch.from_numpy(io_to_oi11(dense)))
    np.testing.assert_allclose(as_conv[:, :, 0, 0].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(io_to_oi11(dense[None, None]), io_to_oi11(dense))
