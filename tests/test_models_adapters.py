"""Hub-style and challenge adapters: conventions and round trips."""

from __future__ import annotations

import numpy as np
import torch

from llrnet.models import as_model_fn, create_model
from llrnet.models.adapters import latents_module, linear_module
from llrnet.models.heads import ChallengeView, two_class_from_bird_logit


def test_two_class_view_by_hand() -> None:
    logits = two_class_from_bird_logit(torch.tensor([2.0, -3.0, 0.0]))
    expected = torch.tensor([[0.0, 2.0], [3.0, 0.0], [0.0, 0.0]])
    assert torch.equal(logits, expected)
    # Confidence (max logit) is |l|; a zero logit is a tie, scored as bicycle (argmax 0).
    assert torch.equal(logits.max(1).values, torch.tensor([2.0, 3.0, 0.0]))
    assert torch.equal(logits.argmax(1), torch.tensor([1, 0, 0]))


def test_classifier_views_agree() -> None:
    model = create_model("llr_pretrain_adv_tiny").eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        raw = model(x)
        logit = model.bird_logit(x)
        torch.testing.assert_close(logit, raw[:, 1])
        torch.testing.assert_close(model.bird_probability(x), torch.sigmoid(raw[:, 1]))
        torch.testing.assert_close(model.two_class_logits(x), two_class_from_bird_logit(logit))
        torch.testing.assert_close(ChallengeView(model)(x), model.two_class_logits(x))


def test_hub_adapters_compose_to_the_classifier() -> None:
    model = create_model("llr_pretrain_adv_tiny").eval()
    x = torch.rand(2, 3, 32, 32)
    nhwc = model.preprocess(x).permute(0, 2, 3, 1)
    with torch.no_grad():
        latents = latents_module(model)({"inputs": nhwc, "decay_rate": 0.1})
        logits = linear_module(model)({"inputs": latents})
        assert latents.shape == (2, 1, 1, 128)
        assert logits.shape == (2, 1, 1, 2)
        torch.testing.assert_close(logits[:, 0, 0, :], model(x))


def test_decay_rate_is_the_batch_norm_momentum_and_inert_in_eval() -> None:
    model = create_model("llr_pretrain_adv_tiny")
    nhwc = torch.rand(4, 32, 32, 3) * 2 - 1
    call = latents_module(model)
    model.eval()
    with torch.no_grad():
        a = call({"inputs": nhwc, "decay_rate": 0.1})
        b = call({"inputs": nhwc, "decay_rate": 0.9})
    assert torch.equal(a, b)
    model.train()
    seen: list[torch.Tensor] = []
    model.trunk.final_bn.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    with torch.no_grad():
        call({"inputs": nhwc, "decay_rate": 0.5})
    assert model.trunk.final_bn.momentum == 0.5
    # running = running - rate * (running - batch_mean), from a zero start
    batch_mean = seen[0].mean(dim=(0, 2, 3))
    torch.testing.assert_close(model.trunk.final_bn.running_mean, 0.5 * batch_mean)


def test_model_fn_matches_two_class_logits_and_batches() -> None:
    model = create_model("llr_pretrain_adv_tiny").eval()
    images = np.random.default_rng(0).random((5, 32, 32, 3), dtype=np.float32)
    out = as_model_fn(model, batch_size=2, device="cpu")(images)
    assert out.dtype == np.float32 and out.shape == (5, 2)
    with torch.no_grad():
        expected = model.two_class_logits(torch.from_numpy(images).permute(0, 3, 1, 2))
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-6)
    empty = as_model_fn(model)(np.zeros((0, 32, 32, 3), np.float32))
    assert empty.shape == (0, 2)


def test_model_fn_passes_generic_two_class_models_through() -> None:
    model = create_model("digits_wrn").eval()
    images = np.random.default_rng(1).random((3, 28, 28, 1), dtype=np.float32)
    # digits_wrn is single-channel: the challenge contract needs RGB, so wrap it.
    wrapped = torch.nn.Sequential()
    wrapped.add_module("gray", _Gray())
    wrapped.add_module("model", model)
    rgb = np.repeat(images, 3, axis=-1)
    out = as_model_fn(wrapped)(rgb)
    with torch.no_grad():
        expected = model(torch.from_numpy(images).permute(0, 3, 1, 2))
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-6)


class _Gray(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1, keepdim=True)
