"""A weights file's record is untrusted: it is hashed, version-checked and fitted to the tensors
on the meta device before anything is allocated."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from llrnet.core.errors import WeightsError
from llrnet.models import create_model, load_weights, read_metadata, save_weights
from llrnet.models.weights import FORMAT_VERSION, METADATA_KEY, architecture_sha256


def saved(tmp_path: Path) -> Path:
    """A digits WRN (depth 10, width 2, softplus) saved by save_weights."""
    path = tmp_path / "w.safetensors"
    torch.manual_seed(0)
    save_weights(create_model("digits_wrn", depth=10, width=2, activation="softplus"), path)
    return path


def edit(path: Path, change: Any, *, rehash: bool = False) -> dict[str, Any]:
    """Rewrite ``path``'s record with ``change(record)`` (tensors kept); with ``rehash``
    the arch_sha256 is recomputed, as a careful forger would. Returns the record."""
    with safe_open(str(path), framework="pt") as handle:
        record = json.loads(handle.metadata()[METADATA_KEY])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    change(record)
    if rehash:
        record["arch_sha256"] = architecture_sha256(record["architecture"], record["kwargs"])
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(record)})
    return record


def test_the_record_hashes_the_architecture(tmp_path: Path) -> None:
    record = read_metadata(saved(tmp_path))
    assert record["format_version"] == FORMAT_VERSION == 2
    assert record["arch_sha256"] == architecture_sha256("digits_wrn", record["kwargs"])
    assert record["kwargs"]["activation"] == "softplus"


def test_an_edited_activation_is_refused(tmp_path: Path) -> None:
    # The case: relu around softplus tensors builds a different network silently.
    path = saved(tmp_path)
    edit(path, lambda r: r["kwargs"].update(activation="relu"))
    with pytest.raises(WeightsError, match=r"architecture record .* does not match its "
                                           r"arch_sha256 .*modified"):
        load_weights(path)


def test_a_format_2_file_without_its_arch_hash_is_refused(tmp_path: Path) -> None:
    path = saved(tmp_path)
    edit(path, lambda r: r.pop("arch_sha256"))
    with pytest.raises(WeightsError, match="does not match its arch_sha256 None"):
        load_weights(path)


def test_a_format_from_the_future_is_refused(tmp_path: Path) -> None:
    path = saved(tmp_path)
    edit(path, lambda r: r.update(format_version=3))
    with pytest.raises(WeightsError, match=r"weights format 3, newer than .* reads \(up to 2\)"):
        load_weights(path)
    with pytest.raises(WeightsError, match="weights format 3"):
        read_metadata(path)
    for bad in ("2", 0, True, 2.5):
        edit(path, lambda r, v=bad: r.update(format_version=v))  # type: ignore[misc]
        with pytest.raises(WeightsError, match="invalid format_version"):
            load_weights(path)


def test_a_format_1_file_still_loads_with_a_warning(tmp_path: Path) -> None:
    path = saved(tmp_path)
    original = load_weights(path)

    def as_format_1(record: dict[str, Any]) -> None:
        record.pop("arch_sha256")
        record["format_version"] = 1

    edit(path, as_format_1)
    with pytest.warns(UserWarning, match="format 1 weights file.*unverified"):
        old = load_weights(path)
    for name, tensor in original.state_dict().items():
        assert torch.equal(tensor, old.state_dict()[name])


def test_a_huge_depth_fails_fast_without_building(tmp_path: Path) -> None:
    # The case: a small file whose record says depth 6000004 (a valid WRN depth:
    # a million blocks per group) was built, then crashed in std::bad_alloc.
    path = saved(tmp_path)
    assert path.stat().st_size < 2_000_000
    edit(path, lambda r: r["kwargs"].update(depth=6000004), rehash=True)
    with pytest.raises(WeightsError, match="more tensors than the file's 49"):
        load_weights(path)

    def unhashed(record: dict[str, Any]) -> None:  # format 1: only the tensors can stop it
        record.pop("arch_sha256")
        record["format_version"] = 1

    edit(path, unhashed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(WeightsError, match="more tensors than the file's 49"):
            load_weights(path)


def test_a_huge_width_is_refused_by_shape_before_allocating(tmp_path: Path) -> None:
    path = saved(tmp_path)
    edit(path, lambda r: r["kwargs"].update(width=1_000_000), rehash=True)
    with pytest.raises(WeightsError) as caught:
        load_weights(path)
    message = str(caught.value)
    assert "does not match the model; wrong shape: " in message
    assert "fc.weight (2, 128) != (2, 64000000)" in message
    assert "more)" in message and "\n" not in message  # the first few, then a count


def test_a_wrong_dtype_is_named_from_the_header(tmp_path: Path) -> None:
    path = saved(tmp_path)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    tensors["fc.bias"] = tensors["fc.bias"].double()
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(WeightsError, match=r"wrong dtype: fc.bias torch.float64 != "
                                           r"torch.float32"):
        load_weights(path)
