"""``llrnet.models.compiled``: a module compiled in place keeps its identity and weights,
agrees with its eager self, and falls back to eager with one warning where compiling fails."""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from llrnet.models import compiled, create_model
from llrnet.models.compiled import compile_model, is_compiled, uncompile
from llrnet.models.weights import tensors_sha256

_REAL_COMPILE = torch.compile


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts as a process where torch.compile has not failed yet."""
    monkeypatch.setattr(compiled, "_UNAVAILABLE", [])
    yield


@pytest.fixture
def dynamo_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile traced by dynamo but run by the eager backend: no C++ compiler
    needed, seconds instead of minutes."""
    monkeypatch.setattr(torch, "compile", functools.partial(_REAL_COMPILE, backend="eager"))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return create_model("digits_wrn", depth=10, width=1, num_classes=3).eval()


def test_a_compiled_module_keeps_its_class_weights_and_outputs(dynamo_only: None) -> None:
    model = _tiny()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        eager = model(x)
    keys, digest = list(model.state_dict()), tensors_sha256(model.state_dict())
    assert compile_model(model, x, gradients=True)
    assert is_compiled(model) and type(model).__name__ == "WideResNet"
    assert list(model.state_dict()) == keys and tensors_sha256(model.state_dict()) == digest
    with torch.no_grad():
        torch.testing.assert_close(model(x), eager, rtol=0, atol=0)
    assert compile_model(model)  # a second call is a no-op
    uncompile(model)
    assert not is_compiled(model) and "forward" not in model.__dict__


def _failing_compile(message: str) -> Callable[..., Any]:
    def compile_(fn: Callable[..., Any], **kwargs: Any) -> Any:
        raise RuntimeError(message)
    return compile_


def _compiled_call_fails(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
    def run(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("InductorError: CppCompileError: C++ compile error\nmore lines")
    return run


def _backward_fails(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return x.clone()

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("backward compile failed")

    def run(*args: Any, **kw: Any) -> Any:
        return Broken.apply(fn(*args, **kw))
    return run


@pytest.mark.parametrize("broken", [_failing_compile("Dynamo is not supported on this "
                                                     "platform"),
                                    _compiled_call_fails, _backward_fails])
def test_where_compiling_fails_one_warning_and_eager(monkeypatch: pytest.MonkeyPatch,
                                                     broken: Callable[..., Any]) -> None:
    monkeypatch.setattr(torch, "compile", broken)
    model, copy = _tiny(), _tiny()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        eager = model(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not compile_model(model, x, gradients=True)
        assert not compile_model(copy, x, gradients=True, what="the bf16 search copy")
    assert len(caught) == 1 and caught[0].category is RuntimeWarning
    message = str(caught[0].message)
    assert message.startswith("torch.compile cannot run here (RuntimeError: ")
    assert message.endswith("); the model runs eager") and "\n" not in message
    assert not is_compiled(model) and not is_compiled(copy)
    with torch.no_grad():
        torch.testing.assert_close(model(x), eager, rtol=0, atol=0)


def test_a_failing_compiled_call_after_warm_up_goes_eager_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", _compiled_call_fails)
    model = _tiny()
    x = torch.rand(2, 1, 28, 28)
    assert compile_model(model)  # no example: nothing called yet
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            first = model(x)
            second = model(x)
    assert len(caught) == 1 and not is_compiled(model)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_a_model_error_is_raised_as_the_eager_model_raises_it(dynamo_only: None) -> None:
    model = _tiny()
    assert compile_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning for the model's own error
        with pytest.raises(RuntimeError, match="channels"):
            model(torch.rand(2, 5, 28, 28))


def test_the_warm_up_logs_the_compile_time(dynamo_only: None,
                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="llrnet.models.compiled"):
        assert compile_model(_tiny(), torch.rand(2, 1, 28, 28), what="the model")
    assert any(r.getMessage().startswith("torch.compile: the model compiled in ")
               for r in caplog.records)


@pytest.mark.slow
def test_inductor_resnet_logits_within_1e_4() -> None:
    """The real backend (inductor, C++ on a CPU): a small ResNet v2's logits, fp32."""
    torch.manual_seed(0)
    model = create_model("resnet_v2_classifier", num_classes=10).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        eager = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager would fail the test
        assert compile_model(model, x)
        with torch.no_grad():
            fast = model(x)
    assert is_compiled(model)
    assert float((fast - eager).abs().max()) < 1e-4


def test_compiled_in_buckets_pads_hides_the_padding_and_restores(dynamo_only: None) -> None:
    model = _tiny()
    assert compile_model(model)  # a --compile forward: restored after the block
    before = model.__dict__["forward"]
    seen: list[int] = []
    model.register_forward_hook(lambda m, args, out: seen.append(out.shape[0]))
    with torch.no_grad():
        xs = [torch.rand(n, 1, 28, 28) for n in (1, 5, 16, 17, 40)]
        eager = [model(x) for x in xs]
        seen.clear()
        with compiled.compiled_in_buckets(model, 48, bucket=16) as done:
            assert done and not is_compiled(model)  # the bucketed forward, not compile_model's
            outs = [model(x) for x in xs]
        assert seen == [1, 5, 16, 17, 40]  # hooks see the images given, not the padding
        for out, ref in zip(outs, eager):
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert model.__dict__["forward"] is before
    uncompile(model)
    with compiled.compiled_in_buckets(model, 48):
        pass
    assert "forward" not in model.__dict__


def test_compiled_in_buckets_where_compiling_fails_is_eager(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", _failing_compile("no compiler"))
    model = _tiny()
    with (pytest.warns(RuntimeWarning, match="no compiler"),
          compiled.compiled_in_buckets(model, 64) as done, torch.no_grad()):
        assert not done and "forward" not in model.__dict__
        assert model(torch.rand(3, 1, 28, 28)).shape == (3, 3)


def test_compiled_in_buckets_whose_compiled_call_fails_goes_eager_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def broken(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
        def run(x: torch.Tensor) -> Any:
            calls.append(x.shape[0])
            raise RuntimeError("InductorError: CppCompileError: C++ compile error")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    model = _tiny()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        eager = model(x)
        with (pytest.warns(RuntimeWarning, match="CppCompileError"),
              compiled.compiled_in_buckets(model, 64)):
            outs = [model(x) for _ in range(3)]
    assert calls == [16]  # the compiled code was tried once (padded), then never again
    for out in outs:
        torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    assert "forward" not in model.__dict__
