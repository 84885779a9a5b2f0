"""safetensors weights with a metadata record: bit-exact round trip, strict loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llrnet.models import create_model, load_weights, read_metadata, save_weights
from llrnet.models.weights import METADATA_KEY, tensors_sha256


def _trained_tiny() -> torch.nn.Module:
    model = create_model("llr_pretrain_adv_tiny", stride_in="last")
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))  # moves running statistics away from defaults
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model


def test_round_trip_is_bit_exact_and_rebuilds_architecture(tmp_path: Path) -> None:
    model = _trained_tiny()
    path = tmp_path / "w.safetensors"
    record = save_weights(model, path, {"recipe": {"task": "pgd"}, "metrics": {"clean": 0.9}})
    loaded = load_weights(path)
    assert type(loaded) is type(model)
    assert loaded.llrnet_kwargs == {"stride_in": "last"}
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert not loaded.training
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), loaded(x))
    meta = read_metadata(path)
    assert meta == loaded.llrnet_metadata == record
    assert meta["architecture"] == "llr_pretrain_adv_tiny"
    assert meta["recipe"] == {"task": "pgd"} and meta["metrics"] == {"clean": 0.9}
    assert meta["sha256"] == tensors_sha256(model.state_dict())
    assert "CropResizeScale" in meta["preprocessing"]


def test_sha256_depends_on_values_names_and_shapes() -> None:
    a = {"x": torch.zeros(2, 3)}
    assert tensors_sha256(a) == tensors_sha256({"x": torch.zeros(2, 3)})
    assert tensors_sha256(a) != tensors_sha256({"x": torch.zeros(3, 2)})
    assert tensors_sha256(a) != tensors_sha256({"y": torch.zeros(2, 3)})
    assert tensors_sha256(a) != tensors_sha256({"x": torch.zeros(2, 3, dtype=torch.float64)})
    b = {"x": torch.zeros(2, 3)}
    b["x"][1, 2] = 1e-30
    assert tensors_sha256(a) != tensors_sha256(b)


def test_save_is_atomic_and_leaves_no_temporaries(tmp_path: Path) -> None:
    model = _trained_tiny()
    save_weights(model, tmp_path / "w.safetensors")
    save_weights(model, tmp_path / "w.safetensors")  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def _rewrite(path: Path, mutate: object) -> None:
    tensors = load_file(str(path))
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    assert callable(mutate)
    mutate(tensors)
    save_file(tensors, str(path), metadata=header["__metadata__"])


def test_tampered_tensor_fails_hash_check(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(_trained_tiny(), path)
    _rewrite(path, lambda t: t["linear.bias"].add_(1.0))
    from llrnet.core.errors import WeightsError

    with pytest.raises(WeightsError, match=r"sha256 .* does not match"):
        load_weights(path)


def test_metadata_is_plain_json_in_safetensors_header(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(_trained_tiny(), path, {"source": "test"})
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_len))
    record = json.loads(header["__metadata__"][METADATA_KEY])
    assert record["source"] == "test"
