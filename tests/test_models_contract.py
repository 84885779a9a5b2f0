"""The contract every registered model keeps: [0, 1] NCHW in, finite logits out,
gradients (and second-order gradients, which LLR needs) reach the input."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from llrnet.models import BirdOrBicycleClassifier, WideResNet, create_model, list_models
from llrnet.models.classifier import ImageNetClassifier


def _input_for(model: nn.Module) -> torch.Tensor:
    if isinstance(model, WideResNet):
        channels = model.stem_conv.in_channels
        size = 28 if channels == 1 else 32
        return torch.rand(2, channels, size, size)
    return torch.rand(2, 3, 64, 64)


def _classes(model: nn.Module) -> int:
    if isinstance(model, BirdOrBicycleClassifier):
        return 2
    if isinstance(model, ImageNetClassifier | WideResNet):
        return model.fc.out_features
    if isinstance(model, nn.Sequential):  # resnet50_kit: a BN input, then torchvision's ResNet
        return model[-1].fc.out_features
    raise AssertionError(f"unexpected model type {type(model)}")


@pytest.mark.parametrize("name", list_models())
def test_registered_model_contract(name: str) -> None:
    model = create_model(name).train()
    x = _input_for(model).requires_grad_(True)
    logits = model(x)
    assert logits.shape == (2, _classes(model))
    assert torch.isfinite(logits).all()
    # First- and second-order gradients reach the input (double back-propagation).
    (grad,) = torch.autograd.grad(logits.logsumexp(1).sum(), x, create_graph=True)
    assert grad.abs().sum() > 0
    grad.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    parameters = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in parameters), "some parameter got no gradient"


@pytest.mark.parametrize("name", list_models())
def test_eval_mode_is_deterministic_and_batch_independent(name: str) -> None:
    model = create_model(name).eval()
    x = _input_for(model)
    with torch.no_grad():
        together = model(x)
        alone = model(x[:1])
    torch.testing.assert_close(together[:1], alone, rtol=1e-4, atol=1e-5)


def _bn_parameters(model: nn.Module) -> int:
    return sum(
        p.numel()
        for m in model.modules()
        if isinstance(m, nn.BatchNorm2d)
        for p in m.parameters()
    )


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet152_v2_matches_torchvision_apart_from_batch_norm_placement() -> None:
    """Same convolutions and classifier as torchvision's ResNet-152 (v1); only the
    batch norms move (v2: before each convolution, plus the final one)."""
    ours = create_model("resnet152_v2_imagenet")
    reference = torchvision.models.resnet152()
    assert _count(ours) - _bn_parameters(ours) == _count(reference) - _bn_parameters(reference)
    ours_convs = [m.weight.shape for m in ours.modules() if isinstance(m, nn.Conv2d)]
    ref_convs = [m.weight.shape for m in reference.modules() if isinstance(m, nn.Conv2d)]
    assert sorted(ours_convs) == sorted(ref_convs)
    assert _count(ours) == 60_185_128


def test_llr_pretrain_adv_is_resnet152_trunk_plus_linear_head() -> None:
    model = create_model("llr_pretrain_adv")
    imagenet = create_model("resnet152_v2_imagenet")
    trunk = _count(imagenet) - (2048 * 1000 + 1000)
    assert _count(model) == trunk + 2048 * 2 + 2
    assert isinstance(model, BirdOrBicycleClassifier)
    assert model.linear.weight.shape == (2, 2048, 1, 1)


def _wrn_parameters(depth: int, width: int, classes: int, channels: int = 3,
                    variant: str = "zagoruyko") -> int:
    """Analytic parameter count of a pre-activation WRN (3x3 convs, 1x1 shortcuts):
    Zagoruyko's (16-channel stem, projections where needed) or DeepMind's
    (``16 * width`` stem, a projection in every group's first block)."""
    n = (depth - 4) // 6
    c_in = 16 * width if variant == "deepmind" else 16
    total = channels * c_in * 9  # stem
    for group in range(3):
        c_out = 16 * width * 2**group
        for block in range(n):
            source = c_in if block == 0 else c_out
            total += 2 * source + source * c_out * 9 + 2 * c_out + c_out * c_out * 9
            if block == 0 and (source != c_out or variant == "deepmind"):
                total += source * c_out
        c_in = c_out
    return total + 2 * c_in + c_in * classes + classes


@pytest.mark.parametrize(
    ("name", "depth", "width", "variant"),
    [("wrn_28_8_softplus", 28, 8, "deepmind"), ("wrn_28_8_softplus_zagoruyko", 28, 8, "zagoruyko"),
     ("wrn_40_8_softplus", 40, 8, "deepmind"), ("wrn_28_10_relu", 28, 10, "zagoruyko")],
)
def test_wide_resnet_parameter_counts(name: str, depth: int, width: int, variant: str) -> None:
    model = create_model(name)
    assert model.variant == variant
    assert _count(model) == _wrn_parameters(depth, width, 10, variant=variant)


def test_wide_resnet_variants_differ_in_stem_and_first_projection() -> None:
    deepmind = create_model("wide_resnet", depth=10, width=1, variant="deepmind")
    zagoruyko = create_model("wide_resnet", depth=10, width=1, variant="zagoruyko")
    assert deepmind.stem_conv.out_channels == zagoruyko.stem_conv.out_channels == 16
    assert deepmind.groups[0][0].shortcut is not None and zagoruyko.groups[0][0].shortcut is None
    wide = create_model("wide_resnet", depth=10, width=2, variant="deepmind")
    assert wide.stem_conv.out_channels == 32 and wide.groups[0][0].shortcut is not None
    assert _count(wide) == _wrn_parameters(10, 2, 10, variant="deepmind")


def test_wrn_28_10_has_the_papers_36_5_million_parameters() -> None:
    assert round(_count(create_model("wrn_28_10_relu")) / 1e6, 1) == 36.5


def test_latents_shape_of_full_size_trunk() -> None:
    model = create_model("llr_pretrain_adv").eval()
    with torch.no_grad():
        latents = model.latents(torch.rand(1, 3, 64, 64))
    assert latents.shape == (1, 2048, 1, 1)


@pytest.mark.parametrize("stride_in", ["first", "last"])
@pytest.mark.parametrize("padding", ["same", "symmetric"])
def test_resnet_options_keep_resolution_schedule(stride_in: str, padding: str) -> None:
    model = create_model("llr_pretrain_adv_tiny", stride_in=stride_in, padding=padding).eval()
    x = torch.rand(1, 3, 64, 64)
    features = model.trunk.stem_pool(model.trunk.stem_conv(model.preprocess(x)))
    sizes = []
    for stage in model.trunk.stages:
        features = stage(features)
        sizes.append(features.shape[-1])
    expected = [16, 8, 4, 2] if stride_in == "first" else [8, 4, 2, 2]
    assert sizes == expected


def test_stride_in_last_puts_stride_in_last_unit() -> None:
    model = create_model("llr_pretrain_adv_tiny", units=(2, 2, 2, 2), stride_in="last")
    strides = [[unit.stride for unit in stage] for stage in model.trunk.stages]
    assert strides == [[1, 2], [1, 2], [1, 2], [1, 1]]
    first = create_model("llr_pretrain_adv_tiny", units=(2, 2, 2, 2))
    assert [[u.stride for u in s] for s in first.trunk.stages] == [[1, 1], [2, 1], [2, 1], [2, 1]]


@pytest.mark.parametrize("preset", ["cifar10_wrn28x8_llr", "cifar10_wrn28x8_pgd",
                                    "cifar10_wrn28x8_trades"])
def test_presets_claiming_deepminds_configuration_build_deepminds_wrn(preset: str) -> None:
    from llrnet.train.presets import load_config

    config = load_config(preset)
    with torch.device("meta"):
        model = create_model(config.model.name, **config.model.kwargs)
    assert isinstance(model, WideResNet) and model.variant == "deepmind"
    assert model.stem_conv.out_channels == 16 * 8
