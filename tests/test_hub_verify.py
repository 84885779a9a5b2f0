"""--verify: skipped (and says why) without TensorFlow; compared when TF is reachable."""

from __future__ import annotations

import pytest

from hub_helpers import FIXTURES
from llrnet.hub import convert, open_module
from llrnet.hub import verify as verify_module
from llrnet.hub.verify import find_tf_python, verification_images, verify_conversion


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
