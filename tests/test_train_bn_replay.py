"""Batch-norm replay: perturbed passes use the clean batch's statistics, running
averages move only in the nominal pass, and the LLR step uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llrnet.train.bn_replay import BatchNormReplay, frozen_batch_norm
from llrnet.train.llr import LLROptions, llr_regularizer


def _bn(channels: int = 3) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, momentum=0.1)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1.0, 1.0)
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
    return bn.train()


def _manual(bn: nn.BatchNorm2d, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    shape = (1, -1, 1, 1)
    return ((x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps) * bn.weight.view(shape)
            + bn.bias.view(shape))


def _running(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor, Tensor]:
    assert bn.running_mean is not None and bn.running_var is not None
    assert bn.num_batches_tracked is not None
    return bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()


def test_replay_normalizes_with_the_clean_statistics() -> None:
    bn = _bn()
    clean = torch.randn(8, 3, 4, 4) * 2 + 1
    other = torch.randn(5, 3, 4, 4) * 3 - 2  # different statistics and batch size
    replay = BatchNormReplay(bn)
    with replay.record(update_running_stats=False):
        out_clean = bn(clean)
    mean = clean.mean(dim=(0, 2, 3))
    var = clean.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(out_clean, _manual(bn, clean, mean, var))
    for detach in (True, False):
        with replay.replay(detach=detach):
            out = bn(other)
        torch.testing.assert_close(out, _manual(bn, other, mean, var))
    (rec_mean, rec_var), = replay.statistics()
    torch.testing.assert_close(rec_mean, mean)
    torch.testing.assert_close(rec_var, var)


def test_running_averages_move_only_in_the_nominal_pass() -> None:
    bn = _bn()
    reference = _bn()
    reference.load_state_dict(bn.state_dict())
    clean = torch.randn(8, 3, 4, 4)
    before = _running(bn)
    replay = BatchNormReplay(bn)
    with replay.record(update_running_stats=True):
        bn(clean)
    reference(clean)  # an ordinary training-mode pass
    for ours, theirs in zip(_running(bn), _running(reference), strict=True):
        torch.testing.assert_close(ours, theirs)
    after_nominal = _running(bn)
    assert not torch.allclose(after_nominal[0], before[0])
    for detach in (True, False):
        with replay.replay(detach=detach):
            bn(clean + 0.3 * torch.randn_like(clean))
    for ours, kept in zip(_running(bn), after_nominal, strict=True):
        torch.testing.assert_close(ours, kept, rtol=0, atol=0)
    with replay.record(update_running_stats=False):
        bn(clean * 2)
    for ours, kept in zip(_running(bn), after_nominal, strict=True):
        torch.testing.assert_close(ours, kept, rtol=0, atol=0)


def test_detach_controls_whether_gradients_reach_the_clean_pass() -> None:
    bn = _bn()
    clean = torch.randn(6, 3, 4, 4, requires_grad=True)
    other = torch.randn(6, 3, 4, 4)
    replay = BatchNormReplay(bn)
    with replay.record(update_running_stats=False):
        bn(clean)
    with replay.replay(detach=True):
        out = bn(other)
    assert out.grad_fn is not None  # still differentiable in the BN parameters
    grads = torch.autograd.grad(out.sum(), [clean, bn.weight], allow_unused=True)
    assert grads[0] is None and grads[1] is not None
    with replay.replay(detach=False):
        out = bn(other)
    (grad_clean,) = torch.autograd.grad((out**2).sum(), clean)
    assert grad_clean.abs().max() > 0


def test_contexts_restore_the_layers_even_after_an_error() -> None:
    bn = _bn()
    replay = BatchNormReplay(bn)
    with pytest.raises(RuntimeError, match="no batch-norm statistics recorded"), \
            replay.replay(detach=True):
        pass
    with pytest.raises(ZeroDivisionError), replay.record():
        bn(torch.randn(4, 3, 2, 2))
        _ = 1 / 0
    assert "forward" not in bn.__dict__
    with pytest.raises(RuntimeError, match="cannot be nested"), replay.record(), replay.record():
        pass
    assert "forward" not in bn.__dict__


def test_eval_mode_layers_record_their_running_averages() -> None:
    bn = _bn().eval()
    x = torch.randn(4, 3, 2, 2)
    replay = BatchNormReplay(bn)
    with replay.record():
        reference = bn(x)
    with replay.replay(detach=True):
        torch.testing.assert_close(bn(x), reference)


def test_frozen_batch_norm_uses_batch_or_running_statistics_and_updates_nothing() -> None:
    bn = _bn()
    x = torch.randn(6, 3, 4, 4) * 2
    before = _running(bn)
    with frozen_batch_norm(bn, mode="batch"):
        out = bn(x)
    torch.testing.assert_close(out, _manual(bn, x, x.mean(dim=(0, 2, 3)),
                                            x.var(dim=(0, 2, 3), unbiased=False)))
    with frozen_batch_norm(bn, mode="eval"):
        out = bn(x)
    torch.testing.assert_close(out, _manual(bn, x, before[0], before[1]))
    for ours, kept in zip(_running(bn), before, strict=True):
        torch.testing.assert_close(ours, kept, rtol=0, atol=0)
    assert "forward" not in bn.__dict__


class _BNNet(nn.Module):
    """x -> BN (affine) -> flatten -> linear: the perturbed loss has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = _bn(2)
        self.fc = nn.Linear(2 * 3 * 3, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.bn(x).flatten(1))


def _far_off_running_stats() -> tuple[_BNNet, Tensor, Tensor]:
    """A training-mode _BNNet whose running mean is far from the batch's, and a batch."""
    model = _BNNet().train()
    with torch.no_grad():
        model.bn.running_mean.fill_(50.0)
    return model, torch.rand(6, 2, 3, 3), torch.tensor([0, 1, 2, 0, 1, 2])


def test_llr_perturbed_passes_use_clean_statistics_not_running_or_own() -> None:
    # Known mistake: the inner loop with running-average batch norm. The running
    # averages here are far off, so any pass using them would change the loss.
    model, x, y = _far_off_running_stats()
    terms = llr_regularizer(model, x, y, LLROptions(eps=0.1, steps=3))
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False)

    def loss_with_stats(z: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        return F.cross_entropy(model.fc(_manual(model.bn, z, mean, var).flatten(1)), y,
                               reduction="none")

    # G is the gradient of the clean training-mode loss (through its batch statistics).
    xv = x.clone().requires_grad_(True)
    clean = loss_with_stats(xv, xv.mean(dim=(0, 2, 3)), xv.var(dim=(0, 2, 3), unbiased=False))
    g = torch.autograd.grad(clean.sum(), xv)[0]
    lin = (terms.delta * g).flatten(1).sum(1)
    expected = (loss_with_stats(x + terms.delta, mean, var) - clean - lin).abs()
    torch.testing.assert_close(terms.deviation, expected, rtol=1e-4, atol=1e-6)
    # Running averages: llr_regularizer's own clean pass leaves them alone.
    assert float(model.bn.running_mean.min()) == 50.0


def test_every_perturbed_pass_of_the_inner_loop_uses_the_clean_statistics() -> None:
    model, x, y = _far_off_running_stats()
    passes: list[tuple[Tensor, Tensor]] = []
    model.bn.register_forward_hook(
        lambda _m, inp, out: passes.append((inp[0].detach(), out.detach())))
    llr_regularizer(model, x, y, LLROptions(eps=0.1, steps=4))
    assert len(passes) == 1 + 4 + 1
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False)
    for inputs, outputs in passes:
        torch.testing.assert_close(outputs, _manual(model.bn, inputs, mean, var))
