"""The model option the import added: batch norm without scale (``bn_scale=False``)."""

from __future__ import annotations

import torch

from llrnet.models import create_model
from llrnet.models.resnet_v2 import OffsetBatchNorm2d, ResNetV2


def test_offset_batch_norm_is_offset_only_and_tracks_statistics() -> None:
    bn = OffsetBatchNorm2d(3, eps=1e-3, momentum=0.5)
    assert sorted(bn.state_dict()) == ["bias", "num_batches_tracked", "running_mean",
                                       "running_var"]
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    x = torch.randn(2, 3, 4, 4)
    bn.eval()
    expected = (x - bn.running_mean.view(1, 3, 1, 1)) / torch.sqrt(
        bn.running_var.view(1, 3, 1, 1) + 1e-3) + bn.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(bn(x), expected)
    bn.train()
    out = bn(x)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), bn.bias.detach(), atol=1e-5, rtol=0)
    expected_mean = 0.5 * torch.tensor([1.0, 2.0, 3.0]) + 0.5 * x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, expected_mean)
    out.sum().backward()
    assert bn.bias.grad is not None


def test_bn_scale_option_defaults_unchanged() -> None:
    default = ResNetV2(units=(1, 1), widths=(2, 4), stem_width=4)
    assert all(type(m) is torch.nn.BatchNorm2d for m in default.modules()
               if isinstance(m, torch.nn.BatchNorm2d))
    offset = create_model("llr_pretrain_adv_tiny", bn_scale=False)
    kinds = {type(m) for m in offset.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert kinds == {OffsetBatchNorm2d}
    assert not any(k.endswith("bn1.weight") for k in offset.state_dict())
    x = torch.rand(2, 3, 32, 32)
    assert offset(x).shape == (2, 2)
