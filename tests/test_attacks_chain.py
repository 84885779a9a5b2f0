"""Chain: stage order, the second stage's ball around the first stage's output, counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llrnet.attacks import SPSA, Boundary, Chain, Identity, RandomSpatial

pytestmark = pytest.mark.usefixtures("one_thread")


def model() -> nn.Module:
    """Linear, balanced on random images: logit1 = sum of +-1 weighted pixels, logit0 = 0."""
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(256, 2))
    with torch.no_grad():
        m[1].weight.zero_()
        m[1].bias.zero_()
        m[1].weight[1] = torch.randint(0, 2, (256,), generator=g) * 2.0 - 1.0
    return m


def test_spsa_with_random_spatial_ball_is_around_the_first_stage() -> None:
    net = model().train()
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        y = net.eval()(x).argmax(1)
    net.train()
    spatial = RandomSpatial(limits=(3.0, 3.0, 10.0), border=2)
    spsa = SPSA(eps=0.1, steps=5, samples=8)
    chain = Chain(spatial, spsa)
    assert chain.name == "spsa_with_random_spatial"
    seeds = torch.tensor([1, 2, 3, 4])
    out = chain(net, x, y, seeds=seeds)
    assert net.training
    first = spatial(net, x, y, seeds=seeds)
    assert (out - first).abs().max() <= 0.1 + 1e-6
    assert (out - x).abs().max() > 0.1  # the motion itself is not bounded
    torch.testing.assert_close(out, spsa(net, first, y, seeds=seeds))
    assert chain.last_stats["model_evaluations"] == spsa.last_stats["model_evaluations"] > 0
    assert [s["model_evaluations"] for s in chain.stage_stats] == [
        0.0, spsa.last_stats["model_evaluations"]
    ]
    torch.testing.assert_close(chain(net, x[1:2], y[1:2], seeds=seeds[1:2]), out[1:2])


def test_boundary_chain_needs_and_passes_the_pool() -> None:
    net = model()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        y = net(x).argmax(1)
        pool_x = torch.rand(12, 1, 16, 16)
        pool = (pool_x, net(pool_x).argmax(1))
    chain = Chain(RandomSpatial(limits=(2.0, 2.0, 5.0), border=2),
                  Boundary(threshold=1.0, iterations=20))
    assert chain.name == "boundary_with_random_spatial" and chain.needs_pool
    out = chain(net, x, y, seeds=0, pool=pool)
    first = RandomSpatial(limits=(2.0, 2.0, 5.0), border=2)(net, x, y, seeds=0)
    assert ((out - first).flatten(1).norm(dim=1) <= 1.0 * (1 + 1e-5)).all()


def test_custom_name_and_identity_stage() -> None:
    chain = Chain(Identity(), name="clean_twice")
    x = torch.rand(2, 1, 16, 16)
    assert chain.name == "clean_twice"
    torch.testing.assert_close(chain(model(), x, torch.tensor([0, 1])), x)
