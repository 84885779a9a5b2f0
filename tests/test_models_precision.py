"""The bf16 fast copy (``llrnet.models.fast_copy``) and the precision resolution."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from llrnet.core.errors import UsageError
from llrnet.models import create_model, fast_copy
from llrnet.models.precision import (
    cpu_bf16_units,
    has_bf16_hardware,
    resolve_precision,
    strict_fp32,
)


def _conv_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).eval()


def test_fast_copy_computes_in_bf16_behind_an_fp32_interface() -> None:
    model = _conv_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = fast_copy(model, "bf16")
    x = torch.rand(4, 3, 12, 12)
    out = fast(x)
    assert out.dtype == torch.float32 and out.shape == (4, 2)
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    assert fast.inner[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = model(x)
    # bf16 keeps 8 significant bits: the logits agree to bf16 rounding, not exactly.
    torch.testing.assert_close(out.detach(), reference, atol=0.05, rtol=0.02)
    # The original is untouched: fp32, NCHW-contiguous, same values.
    for key, value in model.state_dict().items():
        assert value.dtype == before[key].dtype
        assert torch.equal(value, before[key])
    assert model[0].weight.is_contiguous()


def test_fast_copy_passes_gradients_and_keeps_the_mode() -> None:
    model = _conv_model().train()
    fast = fast_copy(model, "bf16")
    assert fast.training
    fast.eval()
    x = torch.rand(2, 3, 12, 12, requires_grad=True)
    fast(x).sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    assert float(x.grad.abs().sum()) > 0


def test_fast_copy_fp32_channels_last_is_the_same_function() -> None:
    model = _conv_model()
    x = torch.rand(3, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(fast_copy(model, "fp32")(x), model(x), atol=1e-5, rtol=1e-5)


def test_fast_copy_of_a_registered_resnet_matches_fp32_to_bf16_rounding() -> None:
    torch.manual_seed(0)
    model = create_model("resnet_v2_tiny_imagenet").eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference, out = model(x), fast_copy(model, "bf16")(x)
    assert out.dtype == torch.float32
    scale = float(reference.abs().max())
    assert float((out - reference).abs().max()) <= 0.05 * scale


@pytest.mark.parametrize("bad", ["auto", "fp16", ""])
def test_fast_copy_refuses_other_precisions(bad: str) -> None:
    with pytest.raises(UsageError, match="fp32 or bf16"):
        fast_copy(_conv_model(), bad)


def _cpu_probes(monkeypatch: pytest.MonkeyPatch, *, amx: bool | None,
                avx512_bf16: bool | None) -> None:
    """Torch's CPU probes as given; None removes one (an older torch without it)."""
    for name, value in (("_is_amx_tile_supported", amx),
                        ("_is_avx512_bf16_supported", avx512_bf16)):
        if value is None:
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(torch.cpu, name, lambda value=value: value, raising=False)


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected", "said"), [
    (True, True, "bf16", "AMX-BF16 and AVX512-BF16 present"),
    (True, False, "bf16", "AMX-BF16 present"),
    (False, True, "bf16", "AVX512-BF16 present"),
    (False, False, "fp32", "neither AMX-BF16 nor AVX512-BF16"),
    (None, None, "fp32", "neither AMX-BF16 nor AVX512-BF16"),
])
def test_auto_on_a_cpu_follows_its_bf16_units(monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture,
                                              amx: bool | None, avx512_bf16: bool | None,
                                              expected: str, said: str) -> None:
    _cpu_probes(monkeypatch, amx=amx, avx512_bf16=avx512_bf16)
    assert has_bf16_hardware(torch.device("cpu")) is (expected == "bf16")
    with caplog.at_level(logging.INFO, logger="llrnet.models.precision"):
        assert resolve_precision("auto", "cpu") == expected
    assert f"precision auto: {expected} on cpu ({said})" in caplog.text
    # Explicit choices never look at the hardware.
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_a_failing_cpu_probe_counts_as_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> bool:
        raise RuntimeError("cpuinfo unavailable")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", broken, raising=False)
    assert cpu_bf16_units() == ()
    assert resolve_precision("auto", "cpu") == "fp32"


def test_unknown_precision_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="fp32, bf16, auto"):
        resolve_precision("half")


@pytest.mark.parametrize(("capability", "expected"), [((8, 0), True), ((9, 0), True),
                                                      ((7, 5), False)])
def test_cuda_probe_follows_compute_capability(monkeypatch: pytest.MonkeyPatch,
                                               capability: tuple[int, int],
                                               expected: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert has_bf16_hardware(torch.device("cuda:0")) is expected
    assert resolve_precision("auto", "cuda:0") == ("bf16" if expected else "fp32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not has_bf16_hardware(torch.device("cuda"))


def test_mps_has_no_bf16_path() -> None:
    assert not has_bf16_hardware(torch.device("mps"))


def test_strict_fp32_turns_tf32_off_and_restores_it() -> None:
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
        with strict_fp32():
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul
