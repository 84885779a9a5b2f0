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


def _with_running_statistics(model: nn.Module) -> nn.Module:
    """``model`` in eval mode with seeded, far-from-identity batch-norm statistics."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) * 3 + 0.2)
                if module.weight is not None:
                    module.weight.copy_(torch.randn(n, generator=generator))
                if module.bias is not None:
                    module.bias.copy_(torch.randn(n, generator=generator))
    return model.eval()


@pytest.mark.parametrize(("name", "kwargs", "size", "folds"), [
    ("digits_wrn", {"width": 1}, 28, 3),  # one (conv1, bn2) per block, 3 blocks
    ("resnet_v2_tiny_imagenet", {"num_classes": 3}, 32, None),
    ("resnet_v2_tiny_imagenet", {"num_classes": 3, "bn_scale": False}, 32, None),
])
def test_fold_batch_norms_keeps_the_logits(name: str, kwargs: dict[str, object], size: int,
                                           folds: int | None) -> None:
    from llrnet.models.precision import fold_batch_norms
    from llrnet.models.resnet_v2 import BottleneckV2

    torch.manual_seed(0)
    model = _with_running_statistics(create_model(name, **kwargs))
    channels = 1 if name == "digits_wrn" else 3
    x = torch.rand(6, channels, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)
    norms_before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    count = fold_batch_norms(model)
    if folds is None:  # two per bottleneck unit
        folds = 2 * sum(isinstance(m, BottleneckV2) for m in model.modules())
    assert count == folds > 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == norms_before - folds
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)
    assert fold_batch_norms(model) == 0  # nothing left to fold


def test_fold_batch_norms_needs_eval_mode() -> None:
    from llrnet.models.precision import decision_form, fold_batch_norms

    model = create_model("digits_wrn", width=1).train()
    with pytest.raises(UsageError, match="eval-mode"):
        fold_batch_norms(model)
    with decision_form(model) as changed:  # a training model is left as it is
        assert not changed
        assert isinstance(model.groups[0][0].bn2, nn.BatchNorm2d)


def test_decision_form_gives_the_model_s_decisions_and_restores_it_exactly() -> None:
    from llrnet.models import layers
    from llrnet.models.precision import decision_form

    torch.manual_seed(0)
    model = _with_running_statistics(create_model("digits_wrn", width=1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    block = model.groups[0][0]
    conv1, bn2 = block.conv1, block.bn2
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(x)
        with decision_form(model) as changed:
            assert changed
            assert isinstance(block.bn2, nn.Identity) and block.conv1.bias is not None
            assert block.conv1.weight.is_contiguous(memory_format=torch.channels_last)
            assert model.act is layers.softplus_inference
            got = model(x.contiguous(memory_format=torch.channels_last))
            got_plain_layout = model(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_plain_layout, want, rtol=1e-4, atol=1e-5)
    margin = (want[:, 0] - want[:, 1]).abs()
    clear = margin > 1e-4  # decisions away from float rounding of the boundary
    assert bool(clear.any())
    assert torch.equal(got.argmax(1)[clear], want.argmax(1)[clear])
    # Restored: the same objects, values and layout.
    assert block.conv1 is conv1 and block.bn2 is bn2 and conv1.bias is None
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert all(torch.equal(v, before[k]) and v.is_contiguous()
               for k, v in model.state_dict().items())
    assert model.act is layers.softplus


def test_decision_form_restores_the_model_when_the_block_raises() -> None:
    from llrnet.models import layers
    from llrnet.models.precision import decision_form

    model = _with_running_statistics(create_model("digits_wrn", width=1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="inside"), decision_form(model):
        raise RuntimeError("inside")
    assert model.act is layers.softplus
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_decision_form_leaves_other_dtypes_and_devices_alone() -> None:
    from llrnet.models.precision import decision_form_applies

    model = create_model("digits_wrn", width=1).eval()
    assert decision_form_applies(model)
    assert not decision_form_applies(model.double())
    assert not decision_form_applies(nn.Sequential(nn.Flatten()))  # no parameters


def test_fold_declarations_are_not_inherited() -> None:
    """A subclass may compute something else from the same modules: it declares its own."""
    from llrnet.models.precision import fold_batch_norms
    from llrnet.models.wide_resnet import BasicBlockV2

    class Other(BasicBlockV2):
        pass

    block = Other(16, 16, 1, activation="softplus", padding="same", bn_eps=1e-5,
                  bn_momentum=0.1).eval()
    assert fold_batch_norms(block) == 0
    assert isinstance(block.bn2, nn.BatchNorm2d)
