"""Every error path of llrnet.models, with the message users see."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from llrnet.core.errors import InputError, UsageError, WeightsError
from llrnet.models import (
    as_model_fn,
    create_model,
    list_models,
    load_weights,
    model_arguments,
    read_metadata,
    register_model,
    save_weights,
)
from llrnet.models.adapters import latents_module, linear_module
from llrnet.models.weights import load_state_strict, tensors_sha256


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UsageError, match=r"unknown model 'resnet9000'.*llr_pretrain_adv"):
        create_model("resnet9000")


def test_unknown_kwarg_lists_valid_ones() -> None:
    with pytest.raises(UsageError, match=r"takes no argument\(s\) colour; valid: .*padding"):
        create_model("llr_pretrain_adv_tiny", colour="red")


def test_duplicate_registration_is_an_error() -> None:
    with pytest.raises(UsageError, match="registered twice"):
        register_model("llr_pretrain_adv")(lambda: torch.nn.Identity())


def test_builders_must_be_keyword_only() -> None:
    def positional(depth: int = 3) -> torch.nn.Module:
        return torch.nn.Identity()

    with pytest.raises(UsageError, match="keyword-only"):
        register_model("test_positional_builder")(positional)


def test_registry_errors_name_the_culprit_and_list_the_valid_names() -> None:
    def positional(depth: int = 3) -> torch.nn.Module:
        return torch.nn.Identity()

    with pytest.raises(UsageError, match=r"model 'test_positional' must take keyword-only "
                                         r"arguments; positional: depth"):
        register_model("test_positional")(positional)
    with pytest.raises(UsageError, match=r"'digits_wrn' is registered twice \(first by "
                                         r"llrnet\.models\.zoo\.digits_wrn\); registered "
                                         r"names: .*llr_pretrain_adv, .*wrn_10_1_softplus"):
        register_model("digits_wrn")(lambda: torch.nn.Identity())
    with pytest.raises(UsageError, match=r"unknown model 'wrn'; valid names: digits_wrn, "
                                         r"llr_pretrain_adv, .*wrn_10_1_softplus"):
        model_arguments("wrn")
    assert "test_positional" not in list_models()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stride_in": "middle"}, "stride_in must be 'first' or 'last'"),
        ({"padding": "valid"}, "padding must be 'same' or 'symmetric'"),
        ({"units": (1, 1), "widths": (4, 8, 16)}, "differ in length"),
    ],
)
def test_bad_resnet_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("llr_pretrain_adv_tiny", **kwargs)


def test_bad_wrn_depth() -> None:
    with pytest.raises(ValueError, match="6n \\+ 4"):
        create_model("digits_wrn", depth=12)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="weights file not found"):
        load_weights(tmp_path / "nope.safetensors")


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"<html>error page</html>")
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        read_metadata(path)


def test_safetensors_without_record(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(1)}, str(path))
    with pytest.raises(WeightsError, match="no llrnet metadata record"):
        load_weights(path)


def test_model_not_from_registry_cannot_be_saved(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="create_model"):
        save_weights(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")


def test_unserializable_metadata(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not JSON-serializable"):
        save_weights(create_model("wrn_10_1_softplus"), tmp_path / "w.safetensors",
                     {"bad": object()})
    assert not list(tmp_path.iterdir())


def _write_with_record(path: Path, tensors: dict[str, torch.Tensor], arch: str) -> None:
    import json

    record = {"architecture": arch, "kwargs": {}, "sha256": tensors_sha256(tensors)}
    save_file(tensors, str(path), metadata={"llrnet": json.dumps(record)})


def test_missing_extra_and_misshaped_tensors_are_named(tmp_path: Path) -> None:
    model = create_model("wrn_10_1_softplus")
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    del tensors["fc.bias"]
    tensors["surplus"] = torch.zeros(3)
    tensors["fc.weight"] = torch.zeros(5, 64)
    path = tmp_path / "w.safetensors"
    _write_with_record(path, tensors, "wrn_10_1_softplus")
    with pytest.raises(WeightsError) as error:
        load_weights(path)
    text = str(error.value)
    assert "missing: fc.bias" in text
    assert "unexpected: surplus" in text
    assert "wrong shape: fc.weight (5, 64) != (10, 64)" in text


def test_load_state_strict_names_the_source() -> None:
    with pytest.raises(WeightsError, match="hub module does not match the model; missing"):
        load_state_strict(create_model("wrn_10_1_softplus"), {}, source="hub module")


def test_model_fn_validates_its_input() -> None:
    model_fn = as_model_fn(create_model("llr_pretrain_adv_tiny"), batch_size=2)
    good = np.zeros((1, 32, 32, 3), np.float32)
    model_fn(good)
    with pytest.raises(InputError, match="numpy array"):
        model_fn(torch.zeros(1, 32, 32, 3))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="rank 4"):
        model_fn(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(InputError, match="3 channels last"):
        model_fn(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InputError, match="must be float32, got float64"):
        model_fn(good.astype(np.float64))
    bad = good.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        model_fn(bad)
    with pytest.raises(InputError, match="batch_size must be >= 1"):
        as_model_fn(create_model("llr_pretrain_adv_tiny"), batch_size=0)


def test_hub_adapters_validate_their_input() -> None:
    model = create_model("llr_pretrain_adv_tiny")
    latents = latents_module(model)
    with pytest.raises(InputError, match="needs key 'inputs'"):
        latents({"x": torch.zeros(1, 8, 8, 3)})
    with pytest.raises(InputError, match=r"must be \[N, H, W, 3\]"):
        latents({"inputs": torch.zeros(1, 3, 8, 8)})
    with pytest.raises(InputError, match="float tensor"):
        latents({"inputs": torch.zeros(1, 8, 8, 3, dtype=torch.int64)})
    with pytest.raises(InputError, match="latents"):
        linear_module(model)({"inputs": torch.zeros(1, 128)})
