"""SPSA: cleverhans 2.1 semantics, bounds, early stop, batching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llrnet.attacks.parts import ImageRng, margin_loss
from llrnet.attacks.spsa import SPSA

pytestmark = pytest.mark.usefixtures("one_thread")


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))


def conv_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))


def labelled(model: nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, 8, 8)
    with torch.no_grad():
        return x, model(x).argmax(1)


def reference_spsa(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, seed: int, *, eps: float,
                   steps: int, samples: int, threshold: float) -> tuple[torch.Tensor, int]:
    """A plain one-image loop written from docs/challenge.md's SPSA pseudo-code (4.4)."""
    rng = ImageRng([seed], "spsa")
    def loss(z: torch.Tensor) -> torch.Tensor:
        return margin_loss(model(z), y.expand(z.shape[0]))
    def project(p: torch.Tensor) -> torch.Tensor:
        return (x0 + p.clamp(-eps, eps)).clamp(0, 1) - x0
    p = project(eps * (2 * rng.uniform(x0.shape[1:], x0.device) - 1))
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    evaluations = 0
    with torch.no_grad():
        for t in range(1, steps + 1):
            s = rng.rademacher((samples // 2, *x0.shape[1:]), x0.device)[0]
            V = torch.cat([0.01 * s, -0.01 * s])
            probes = loss(x0 + p + V)
            g = (probes.reshape(-1, 1, 1, 1) * V).mean(0, keepdim=True) / 0.01
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            p_new = p - 0.01 * (m / (1 - 0.9**t)) / (torch.sqrt(v / (1 - 0.999**t)) + 1e-9)
            current = loss(x0 + p)  # before the update
            evaluations += samples + 1
            p = project(p_new)
            if current.item() < threshold:
                break
    return x0 + p, evaluations


def test_spsa_matches_reference_loop_and_is_batch_invariant() -> None:
    model = conv_model()
    x, y = labelled(model, 5)
    with torch.no_grad():
        threshold = float(margin_loss(model(x), y).median())  # some images stop at once
    seeds = torch.tensor([10, 11, 12, 13, 14])
    attack = SPSA(eps=0.2, steps=6, samples=8, early_stop_loss_threshold=threshold, max_batch=11)
    out = attack(model, x, y, seeds=seeds)
    total = 0
    for i in range(5):
        ref, evals = reference_spsa(model, x[i : i + 1], y[i : i + 1], int(seeds[i]), eps=0.2,
                                    steps=6, samples=8, threshold=threshold)
        total += evals
        torch.testing.assert_close(out[i : i + 1], ref, rtol=1e-4, atol=1e-5)
    assert attack.last_stats["model_evaluations"] == total
    assert 5 * 9 < total < 5 * 6 * 9  # some images stopped early, not all
    torch.testing.assert_close(attack(model, x[2:3], y[2:3], seeds=seeds[2:3]), out[2:3])


def test_spsa_fools_undefended_model_within_bounds() -> None:
    model = linear_model()
    with torch.no_grad():
        model[1].weight.mul_(10)  # logits on a scale where the -1 early stop is reachable
    x, y = labelled(model, 12)
    attack = SPSA(eps=0.3, steps=40, samples=32, max_batch=128)
    x_adv = attack(model, x, y, seeds=0)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        fooled = (model(x_adv).argmax(1) != y).float().mean()
    assert fooled >= 0.9
    # Early stopping saves most of the budget on an undefended model.
    assert attack.last_stats["model_evaluations"] < 0.5 * 12 * 40 * 33


def test_early_stop_returns_the_post_update_point() -> None:
    model = linear_model()
    x, y = labelled(model, 4)
    stop_now = SPSA(eps=0.1, steps=10, samples=4, early_stop_loss_threshold=float("inf"))
    one_step = SPSA(eps=0.1, steps=1, samples=4, early_stop_loss_threshold=None)
    a = stop_now(model, x, y, seeds=3)
    b = one_step(model, x, y, seeds=3)
    torch.testing.assert_close(a, b)  # stopped after the first step, with its update applied
    assert stop_now.last_stats["model_evaluations"] == 4 * 5
    start_only = SPSA(eps=0.1, steps=0, samples=4)(model, x, y, seeds=3)
    assert not torch.equal(a, start_only)
    never = SPSA(eps=0.1, steps=3, samples=4, early_stop_loss_threshold=None)
    never(model, x, y)
    assert never.last_stats["model_evaluations"] == 4 * 3 * 5


@pytest.mark.parametrize("max_batch", [1, 5, 1000, None])
def test_max_batch_does_not_change_results(max_batch: int | None) -> None:
    model = conv_model()
    x, y = labelled(model, 3)
    base = SPSA(eps=0.1, steps=3, samples=6, max_batch=64)(model, x, y, seeds=1)
    other = SPSA(eps=0.1, steps=3, samples=6, max_batch=max_batch)(model, x, y, seeds=1)
    torch.testing.assert_close(base, other, rtol=1e-5, atol=1e-6)


def test_spsa_restores_train_mode_and_handles_rgb() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten()).train()
    x = torch.rand(2, 3, 6, 6)
    y = torch.tensor([0, 1])
    out = SPSA(eps=0.05, steps=2, samples=4)(model, x, y)
    assert model.training and out.shape == x.shape
    assert (out - x).abs().max() <= 0.05 + 1e-6


def test_default_max_batch_follows_the_image_size() -> None:
    spsa = SPSA()
    assert spsa.batch_for(torch.empty(3, 224, 224)) == 256  # 4 images' probes
    assert spsa.batch_for(torch.empty(1, 28, 28)) == 1024  # capped
    assert spsa.batch_for(torch.empty(3, 1024, 1024)) == 64  # never below one image's probes
    assert SPSA(max_batch=7).batch_for(torch.empty(3, 224, 224)) == 7


def test_spsa_image_depends_only_on_its_own_seed() -> None:
    """Permuting the images with their seeds permutes the results."""
    model = conv_model()
    x, y = labelled(model, 6)
    seeds = torch.tensor([7, 3, 9, 1, 5, 8])
    attack = SPSA(eps=0.1, steps=3, samples=6, early_stop_loss_threshold=None, max_batch=12)
    out = attack(model, x, y, seeds=seeds)
    order = torch.tensor([5, 2, 0, 4, 1, 3])
    torch.testing.assert_close(attack(model, x[order], y[order], seeds=seeds[order]), out[order],
                               rtol=1e-5, atol=1e-6)


def test_spsa_forwards_at_most_the_cpu_chunk_per_call() -> None:
    """On a CPU the probes reach the model in calls of at most CPU_FORWARD_CHUNK images,
    and the result equals one-call-per-image batching."""
    from llrnet.attacks.parts import CPU_FORWARD_CHUNK

    model = conv_model()
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[0]))
    x, y = labelled(model, 6)
    sizes.clear()
    out = SPSA(eps=0.1, steps=2, samples=32, early_stop_loss_threshold=None,
               max_batch=192)(model, x, y, seeds=0)
    handle.remove()
    assert max(sizes) == CPU_FORWARD_CHUNK < 192
    small = SPSA(eps=0.1, steps=2, samples=32, early_stop_loss_threshold=None,
                 max_batch=32)(model, x, y, seeds=0)
    torch.testing.assert_close(out, small, rtol=1e-5, atol=1e-6)


def test_samples_beyond_the_bound_are_refused_when_built() -> None:
    from llrnet.attacks.spsa import MAX_SAMPLES
    from llrnet.core.errors import UsageError

    assert SPSA(0.1, 1, samples=MAX_SAMPLES).samples == MAX_SAMPLES
    with pytest.raises(UsageError, match=r"samples must be <= 65536, got 1000000000"):
        SPSA(0.1, 1, samples=1_000_000_000)


def test_probe_buffers_beyond_free_memory_are_refused_before_allocating(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import llrnet.core.devices
    from llrnet.core.errors import UsageError

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 224 * 224, 2))
    x, y = torch.rand(1, 3, 224, 224), torch.tensor([0])
    monkeypatch.setattr(llrnet.core.devices, "available_memory", lambda device: 2**30)
    # 4096 probes: 6144 buffer rows + a 4096-image batch, of 150,528 floats each = 5.7 GiB
    with pytest.raises(UsageError, match=r"SPSA with samples=4096 on images of shape "
                                         r"\[3, 224, 224\] needs 5\.7 GiB, more than the "
                                         r"1\.0 GiB available on cpu"):
        SPSA(0.1, 1, samples=4096)(model, x, y, seeds=0)
    monkeypatch.setattr(llrnet.core.devices, "available_memory", lambda device: None)
    assert SPSA(0.1, 1, samples=4, max_batch=4)(model, x, y, seeds=0).shape == x.shape


def test_available_memory_is_known_for_the_cpu() -> None:
    from llrnet.core.devices import available_memory

    free = available_memory("cpu")
    assert free is not None and free > 0
