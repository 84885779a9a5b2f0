"""--verify: skipped (and says why) without TensorFlow; compared when TF is reachable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hub_helpers import FIXTURES
from llrnet.core.errors import RunError
from llrnet.hub import import_hub, open_module
from llrnet.hub.conversion import verify as verify_module
from llrnet.hub.conversion.convert import convert
from llrnet.hub.conversion.verify import find_tf_python, verification_images, verify_conversion


def test_without_tensorflow_verification_is_skipped_with_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLRNET_TF_PYTHON", raising=False)
    monkeypatch.setattr(verify_module.importlib.util, "find_spec", lambda name: None)
    module = open_module(FIXTURES / "cifar10")
    conversion = convert(module, architecture="wrn_10_1_softplus")
    result = verify_conversion(conversion, module)
    assert result.status == "skipped"
    assert "TensorFlow is not installed" in result.reason and result.max_abs_diff is None


def test_configured_interpreter_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLRNET_TF_PYTHON", "/nonexistent/python")
    python, reason = find_tf_python()
    assert python is None and "does not exist" in reason


def test_verification_images_are_in_range() -> None:
    images = verification_images(32)
    assert images.shape == (4, 32, 32, 3) and images.dtype.name == "float32"
    assert images.min() >= 0 and images.max() <= 1
    assert images[2:].std() < images[:2].std()  # smooth images vary less than noise


@pytest.mark.slow
def test_tensorflow_agrees_when_available() -> None:
    python, reason = find_tf_python()
    if python is None:
        pytest.skip(reason)
    module = open_module(FIXTURES / "imagenet")
    conversion = convert(module, architecture="resnet_v2_tiny_imagenet")
    result = verify_conversion(conversion, module, tf_python=python, image_size=32)
    assert result.status == "passed", result.reason
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4


def _fake_tensorflow(monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module,
                     offset: float) -> list[dict[str, np.ndarray]]:
    """Stand in for the TF subprocess: the WRN module's function (normalized NHWC
    input -> logits) computed with the converted model, plus ``offset``."""
    calls: list[dict[str, np.ndarray]] = []

    def run(python: str, module: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(feeds)
        x = torch.from_numpy(feeds["x"]).permute(0, 3, 1, 2)
        with torch.no_grad():
            logits = model(x * model.normalize.std + model.normalize.mean)
        return {"default": logits.numpy() + offset}

    monkeypatch.setattr(verify_module, "find_tf_python", lambda explicit=None: ("tf", ""))
    monkeypatch.setattr(verify_module, "_run_tf", run)
    return calls


def test_comparison_passes_and_feeds_every_signature_input(
        monkeypatch: pytest.MonkeyPatch) -> None:
    module = open_module(FIXTURES / "cifar10")
    conversion = convert(module, architecture="wrn_10_1_softplus")
    calls = _fake_tensorflow(monkeypatch, conversion.model, 0.0)
    result = verify_conversion(conversion, module, image_size=16)
    assert result.status == "passed" and result.max_abs_diff is not None
    assert result.max_abs_diff < 1e-5 and result.images == 4
    assert sorted(calls[0]) == ["count", "decay_rate", "x"]
    assert calls[0]["x"].shape == (4, 16, 16, 3) and calls[0]["count"].dtype == np.int64


def test_difference_above_tolerance_fails_and_writes_nothing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    module = open_module(FIXTURES / "cifar10")
    conversion = convert(module, architecture="wrn_10_1_softplus")
    _fake_tensorflow(monkeypatch, conversion.model, 1e-3)
    result = verify_conversion(conversion, module, image_size=16)
    assert result.status == "failed" and result.max_abs_diff == pytest.approx(1e-3, rel=1e-2)
    model = convert(module, architecture="wrn_10_1_softplus").model
    _fake_tensorflow(monkeypatch, model, 1e-3)
    out = tmp_path / "w.safetensors"
    with pytest.raises(RunError, match="verification against TensorFlow failed: max "):
        import_hub(FIXTURES / "cifar10", architecture="wrn_10_1_softplus", out=out,
                   verify=True, image_size=16)
    assert not out.exists()
