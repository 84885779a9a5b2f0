"""Devices, weights metadata and dtypes, and image modes: checked up front, named in the error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llrnet.core.devices import parse_device, resolve_device
from llrnet.core.errors import InputError, UsageError, WeightsError
from llrnet.inference import load_image
from llrnet.models import create_model
from llrnet.models.registry import check_model_arguments
from llrnet.models.weights import load_state_strict


def test_devices_are_parsed_and_checked_for_availability() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="'nonsense' is not a device"):
        parse_device("nonsense")
    with pytest.raises(UsageError, match="must be a string"):
        parse_device(3)  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="CUDA is not available on this machine"):
            resolve_device("cuda")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (["width", 2], "must be a mapping"),
        ("width", "must be a mapping"),
        ({"width": "two"}, "argument width"),
        ({"width": -1}, "width: sizes must be >= 1"),
        ({"nonsense": 1}, "takes no argument"),
    ],
)
def test_model_arguments_are_checked_before_building(kwargs: object, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        check_model_arguments("digits_wrn", kwargs)


def test_weights_with_another_dtype_are_refused() -> None:
    model = create_model("digits_wrn")
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.dim() == 4)
    tensors[name] = tensors[name].to(torch.int32)
    with pytest.raises(WeightsError, match=rf"wrong dtype: {name} torch.int32 != torch.float32"):
        load_state_strict(model, tensors)


def test_sixteen_bit_png_is_scaled_by_65535(tmp_path: Path) -> None:
    values = np.full((40, 40), 32768, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # uint16 -> mode I;16
    image = load_image(path, size=32)
    assert image.shape == (3, 32, 32)
    assert torch.allclose(image, torch.full_like(image, 32768 / 65535), atol=1e-6)


def test_float_images_and_directories_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.tiff"
    Image.fromarray(np.zeros((8, 8), dtype=np.float32), mode="F").save(path)
    with pytest.raises(InputError, match="no defined range"):
        load_image(path, size=8)
    with pytest.raises(InputError, match="is a directory"):
        load_image(tmp_path, size=8)
