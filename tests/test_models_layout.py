"""Each architecture maps a recognized network (models/layout.py) onto every one of its tensors."""

from __future__ import annotations

import itertools

import pytest
import torch

from llrnet.models import create_model
from llrnet.models.layout import (
    TENSOR_NAMES,
    Importable,
    Layout,
    Network,
    Slot,
    Target,
    Unit,
    batch_norm,
    importable,
    residual_unit,
)

_names = itertools.count()


def _slot(kind: str, *roles: str, source: str = "module") -> Slot:
    return Slot(kind, {role: f"v{next(_names)}" for role in roles}, source)


def _bn(scale: bool = True) -> Slot:
    return _slot("bn", *(("scale",) if scale else ()), "offset", "mean", "variance")


def _unit(convs: int, shortcut: bool, bn_scale: bool = True, out_bias: bool = False) -> Unit:
    """``out_bias``: biases on the last convolution and the projection (ResNetV2's option)."""
    out = ("w", "b") if out_bias else ("w",)
    return Unit(tuple(_bn(bn_scale) for _ in range(convs)),
                (*(_slot("conv", "w") for _ in range(convs - 1)), _slot("conv", *out)),
                _slot("conv", *out) if shortcut else None)


def _filled(model: torch.nn.Module, layout: Layout) -> list[str]:
    """State-dict keys the layout fills from variables, one entry per variable."""
    return [key for target in layout.targets for role, key in target.keys().items()
            if role in target.slot.variables]


def _batch_counters(model: torch.nn.Module) -> set[str]:
    return {k for k in model.state_dict() if k.endswith("num_batches_tracked")}


def test_resnet_v2_classifier_layout_fills_every_tensor_once() -> None:
    model = create_model("resnet_v2_tiny_imagenet", units=(2, 1, 1, 1))
    assert isinstance(model, Importable)
    assert model.import_structure() == {"units": (2, 1, 1, 1), "widths": (4, 8, 16, 32),
                                        "stem_width": 8}
    # the second unit of stage 0 keeps its channel count: identity shortcut
    units = (_unit(3, True), _unit(3, False), *(_unit(3, True) for _ in range(3)))
    network = Network(_slot("conv", "w"), units, _bn(), _slot("dense", "w", "b"))
    layout = model.import_layout(network)
    filled = _filled(model, layout)
    assert len(filled) == len(set(filled))
    assert set(filled) | _batch_counters(model) == set(model.state_dict())
    assert not layout.constructed
    assert layout.targets[0].module == "trunk.stem_conv"
    assert [t.module for t in layout.targets[1:4]] == ["trunk.stages.0.0.bn1",
                                                       "trunk.stages.0.0.conv1",
                                                       "trunk.stages.0.0.bn2"]
    assert (layout.targets[-1].module, layout.targets[-1].form) == ("fc", "linear")


def test_bird_or_bicycle_head_comes_from_its_own_slot() -> None:
    model = create_model("llr_pretrain_adv_tiny", bn_scale=False, stem_bias=True,
                         out_bias=True)
    units = tuple(_unit(3, True, bn_scale=False, out_bias=True) for _ in range(4))
    stem = _slot("conv", "w", "b")
    head = _slot("conv", "w", "b", source="linear")
    layout = model.import_layout(Network(stem, units, _bn(False), head))
    filled = _filled(model, layout)
    assert len(filled) == len(set(filled))
    assert set(filled) | _batch_counters(model) == set(model.state_dict())
    last = layout.targets[-1]
    assert (last.module, last.form, last.slot.source) == ("linear", "conv", "linear")
    with pytest.raises(ValueError, match="filled from the linear module"):
        model.import_layout(Network(stem, units, _bn(False)))


def test_wide_resnet_layout_keeps_its_input_normalization() -> None:
    model = create_model("wrn_10_1_softplus")
    assert model.import_structure() == {"activation": "softplus", "depth": 10, "width": 1,
                                        "variant": "zagoruyko"}
    # WRN-10-1: group 0 keeps 16 channels (identity), groups 1 and 2 project
    units = (_unit(2, False), _unit(2, True), _unit(2, True))
    layout = model.import_layout(Network(_slot("conv", "w"), units, _bn(),
                                         _slot("dense", "w", "b")))
    filled = _filled(model, layout)
    constructed = set(layout.constructed or {})
    assert constructed == {"normalize.mean", "normalize.std"}
    assert len(filled) == len(set(filled))
    assert set(filled) | _batch_counters(model) | constructed == set(model.state_dict())
    assert [t.module for t in layout.targets[-3:]] == ["groups.2.0.shortcut", "final_bn", "fc"]
    with pytest.raises(ValueError, match="has 2 units, this WRN 3"):
        model.import_layout(Network(_slot("conv", "w"), units[:2], _bn(),
                                    _slot("dense", "w")))


def test_full_size_structures() -> None:
    with torch.device("meta"):
        resnet = create_model("resnet152_v2_imagenet")
        wrn = create_model("wrn_40_8_softplus")
        relu = create_model("wrn_28_10_relu")
    assert resnet.import_structure() == {"units": (3, 8, 36, 3), "widths": (64, 128, 256, 512),
                                         "stem_width": 64}
    assert wrn.import_structure() == {"activation": "softplus", "depth": 40, "width": 8,
                                      "variant": "deepmind"}
    assert relu.import_structure()["activation"] == "relu"
    with pytest.raises(ValueError, match="has 0 units, this trunk 50"):
        resnet.import_layout(Network(_slot("conv", "w"), (), _bn(), _slot("dense", "w")))


def test_targets_name_their_tensors() -> None:
    bn = _bn()
    assert batch_norm(bn, "a.bn").keys() == {"scale": "a.bn.weight", "offset": "a.bn.bias",
                                             "mean": "a.bn.running_mean",
                                             "variance": "a.bn.running_var"}
    # a batch norm with a variable of its own names it (DeepMind's keeps a counter)
    names = {**TENSOR_NAMES["batch_norm"], "counter": "num_batches_tracked"}
    assert Target(bn, "b", "batch_norm", names).keys()["counter"] == "b.num_batches_tracked"
    unit = _unit(2, True)
    assert [t.module for t in residual_unit(unit, "g.0")] == ["g.0.bn1", "g.0.conv1", "g.0.bn2",
                                                             "g.0.conv2", "g.0.shortcut"]
    layout = Layout(tuple(residual_unit(unit, "g.0")), {"n.mean": "why"})
    longer = layout.with_targets(batch_norm(bn, "final_bn"))
    assert len(longer.targets) == 6 and longer.constructed == {"n.mean": "why"}


def test_importable_rejects_other_modules() -> None:
    with pytest.raises(TypeError, match="Linear has no import layout"):
        importable(torch.nn.Linear(2, 2))
