"""ImageNet classifiers as bird-or-bicycle models: the kit's class lists, max log-softmax."""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from llrnet.cli import main
from llrnet.core.errors import UsageError, WeightsError
from llrnet.models import create_model, load_imagenet_model
from llrnet.models.imagenet_adapter import (
    BICYCLE_IMAGENET_CLASSES,
    BIRD_IMAGENET_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    bird_or_bicycle_from_imagenet,
    fetch_state_dict,
    imagenet_normalization,
    imagenet_to_two_class,
    parse_spec,
)


class Oracle(nn.Module):
    """Returns fixed ImageNet logits [N, 1000] and records what it was given."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.seen: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        self.seen = x.detach().clone()
        return self.logits[: x.shape[0]] + 0 * x.sum()


def test_the_class_lists_are_the_kits() -> None:
    # bird_or_bicycle.CLASS_NAME_TO_IMAGENET_CLASS at the kit's commit 7285875.
    assert tuple(range(80, 101)) == BIRD_IMAGENET_CLASSES
    assert len(BIRD_IMAGENET_CLASSES) == 21
    assert sorted(BICYCLE_IMAGENET_CLASSES) == [444, 671]


def test_two_class_logits_are_the_max_log_probabilities() -> None:
    logits = torch.zeros(3, 1000, dtype=torch.float64)
    logits[0, 90] = 5.0    # a confident bird
    logits[0, 444] = 2.0
    logits[1, 671] = 4.0   # a mountain bike
    logits[1, 99] = 1.0
    logits[2, 7] = 9.0     # neither: a cock (class 7), both columns low
    two = imagenet_to_two_class(logits)
    # log p_c = l_c - log(sum_k exp(l_k)); rows hold 998 zeros and two non-zero logits.
    z0 = torch.log(torch.tensor(998 + torch.e ** 5 + torch.e ** 2, dtype=torch.float64))
    z1 = torch.log(torch.tensor(998 + torch.e ** 4 + torch.e ** 1, dtype=torch.float64))
    z2 = torch.log(torch.tensor(999 + torch.e ** 9, dtype=torch.float64))
    expected = torch.stack([
        torch.stack([2.0 - z0, 5.0 - z0]),      # column 0 bicycle, column 1 bird
        torch.stack([4.0 - z1, 1.0 - z1]),
        torch.stack([0.0 - z2, 0.0 - z2]),
    ])
    torch.testing.assert_close(two, expected, rtol=0, atol=1e-12)
    assert two.argmax(dim=1).tolist()[:2] == [1, 0]


def test_a_bird_outside_the_list_does_not_count() -> None:
    logits = torch.zeros(1, 1000)
    logits[0, 79] = 10.0   # class 79 is just outside 80..100
    logits[0, 101] = 10.0  # and so is 101
    two = imagenet_to_two_class(logits)
    assert two[0, 0] == two[0, 1]


def test_the_wrapper_normalizes_and_applies_the_rule() -> None:
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(0))
    oracle = Oracle(logits)
    model = bird_or_bicycle_from_imagenet(oracle, normalization=(IMAGENET_MEAN, IMAGENET_STD))
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    out = model(x)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert oracle.seen is not None
    torch.testing.assert_close(oracle.seen, (x - mean) / std)
    log_probs = torch.log_softmax(logits, dim=1)
    assert torch.equal(out[:, 1], log_probs[:, 80:101].max(dim=1).values)
    assert torch.equal(out[:, 0], torch.maximum(log_probs[:, 444], log_probs[:, 671]))


def test_normalization_is_told_from_the_model() -> None:
    import torchvision

    tv = torchvision.models.resnet18(weights=None)
    assert imagenet_normalization(tv) == (IMAGENET_MEAN, IMAGENET_STD)
    ours = create_model("resnet_v2_tiny_imagenet")
    assert imagenet_normalization(ours) is None  # it scales [0, 1] itself (2x - 1)
    timm_like = nn.Linear(2, 2)
    timm_like.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}  # type: ignore[assignment]
    assert imagenet_normalization(timm_like) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    with pytest.raises(UsageError, match="normalization"):
        imagenet_normalization(nn.Linear(2, 2))


def test_llrnets_imagenet_classifier_works_through_the_wrapper() -> None:
    torch.manual_seed(0)
    ours = create_model("resnet_v2_tiny_imagenet", num_classes=1000).eval()
    model = bird_or_bicycle_from_imagenet(ours)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = imagenet_to_two_class(ours(x))
        assert torch.equal(model(x), expected)


def test_a_model_without_1000_logits_is_refused() -> None:
    with pytest.raises(UsageError, match="1000 logits"):
        imagenet_to_two_class(torch.zeros(2, 10))


@pytest.mark.parametrize(("spec", "parsed"), [
    ("torchvision:resnet50", ("torchvision", "resnet50", None)),
    ("torchvision:resnet50=/w.pth", ("torchvision", "resnet50", "/w.pth")),
    ("timm:vit_small=/w.safetensors", ("timm", "vit_small", "/w.safetensors")),
    ("llrnet:/w.safetensors", ("llrnet", "", "/w.safetensors")),
])
def test_specs_parse(spec: str, parsed: tuple[str, str, str | None]) -> None:
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["resnet50", "keras:resnet50", "torchvision:", "llrnet:",
                                  "torchvision:resnet50="])
def test_bad_specs_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_spec(spec)


def test_a_torchvision_weights_file_is_loaded(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    source = torchvision.models.mobilenet_v3_small(weights=None).eval()
    path = tmp_path / "mobilenet.pth"
    torch.save(source.state_dict(), path)
    model = load_imagenet_model(f"torchvision:mobilenet_v3_small={path}")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        expected = imagenet_to_two_class(source((x - mean) / std))
        torch.testing.assert_close(model(x), expected)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "site"
    folder.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


def test_published_weights_are_fetched_hash_checked_and_cached(
        served: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = served
    state = {"weight": torch.arange(6.0).reshape(2, 3)}
    raw = tmp_path / "raw.pth"
    torch.save(state, raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()[:8]
    (folder / f"tiny-{digest}.pth").write_bytes(raw.read_bytes())
    cache = tmp_path / "cache"
    got = fetch_state_dict(f"{url}/tiny-{digest}.pth", cache)
    assert torch.equal(got["weight"], state["weight"])
    assert (cache / f"tiny-{digest}.pth").is_file()
    (folder / f"tiny-{digest}.pth").unlink()  # the cached copy is used without the server
    assert torch.equal(fetch_state_dict(f"{url}/tiny-{digest}.pth", cache)["weight"],
                       state["weight"])
    (folder / "bad-00000000.pth").write_bytes(raw.read_bytes())
    with pytest.raises(WeightsError, match="could not fetch"):
        fetch_state_dict(f"{url}/bad-00000000.pth", tmp_path / "cache2")


def test_unreachable_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"could not fetch .*; try this"):
        fetch_state_dict("http://127.0.0.1:9/none-12345678.pth", tmp_path, fetch_hint="; try this")


@pytest.mark.parametrize(("extra", "message"), [
    (["--suite", "digits", "--imagenet-model", "torchvision:resnet18"],
     "use it with --suite bird_or_bicycle"),
    (["--suite", "bird_or_bicycle", "--imagenet-model", "keras:resnet50", "--data", "."],
     "must look like torchvision:NAME"),
    (["--suite", "bird_or_bicycle", "--imagenet-model", "torchvision:resnet18=/missing.pth",
      "--data", "."], "weights file not found"),
    (["--suite", "bird_or_bicycle", "--imagenet-model", "torchvision:nope", "--data", "."],
     "torchvision has no model 'nope'"),
])
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 extra: list[str], message: str) -> None:
    code = main(["eval", "--out", str(tmp_path / "out"), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err


def test_weights_files_that_are_not_state_dicts_are_named(tmp_path: Path) -> None:
    from llrnet.models.imagenet_adapter import read_state_dict

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk\.pth: not a readable weights file \("):
        read_state_dict(junk)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listing)
    with pytest.raises(WeightsError, match=r"list\.pth: expected a state dict of tensors"):
        read_state_dict(listing)


def test_bad_adapter_arguments_are_usage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="give a model name and, after '=', a file"):
        parse_spec("torchvision:=/w.pth")
    with pytest.raises(UsageError, match="an ImageNet classifier has softmax logits"):
        bird_or_bicycle_from_imagenet(create_model("llr_pretrain_adv_tiny"), normalization=None)
    with pytest.raises(UsageError, match="normalization must be 'auto', None or"):
        bird_or_bicycle_from_imagenet(nn.Linear(2, 2), normalization="imagenet")
    import importlib

    real = importlib.import_module

    def no_timm(name: str, *args: object) -> object:
        if name == "timm":
            raise ImportError(name)
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib, "import_module", no_timm)
    with pytest.raises(UsageError, match="timm models need the package timm: pip install timm"):
        load_imagenet_model("timm:resnet50")


def test_timm_failing_to_build_names_the_file_option(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import types

    fake = types.SimpleNamespace(create_model=lambda name, pretrained: (_ for _ in ()).throw(
        RuntimeError("")))  # an error without a message: the report names its type
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module",
                        lambda name, *a: fake if name == "timm" else real(name, *a))
    with pytest.raises(WeightsError, match=r"timm could not create resnet50 with its pretrained "
                                           r"weights \(RuntimeError\); pass a weights file: "
                                           r"--imagenet-model timm:resnet50=FILE"):
        load_imagenet_model("timm:resnet50")
