"""ImageNet classifiers read as bird-or-bicycle models (the kit's undefended baselines).
More: docs/models.md, "llrnet.models.imagenet_adapter"."""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from llrnet.core.contracts import check_logits
from llrnet.core.errors import UsageError, WeightsError, first_line, pickle_refusal
from llrnet.core.fileio import utf8_name
from llrnet.models.classifier import ImageNetClassifier
from llrnet.models.heads import BICYCLE, BIRD, SOFTMAX_HEAD, Head, head_of
from llrnet.models.layers import Normalize
from llrnet.models.weights import load_state_strict, load_weights

BIRD_IMAGENET_CLASSES: tuple[int, ...] = tuple(range(80, 101))
"""ImageNet classes read as bird: 80..100 (the kit's ``CLASS_NAME_TO_IMAGENET_CLASS``)."""
BICYCLE_IMAGENET_CLASSES: tuple[int, ...] = (444, 671)
"""ImageNet classes read as bicycle: tandem bicycle (444) and mountain bike (671)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The per-channel normalization of torchvision's ImageNet models (on [0, 1] images)."""

Normalization = tuple[Sequence[float], Sequence[float]]

SOURCES = ("torchvision", "timm", "llrnet")


def imagenet_to_two_class(logits: Tensor) -> Tensor:
    """ImageNet logits [N, 1000] -> the challenge's two-class logits [N, 2].

    Column :data:`~llrnet.models.heads.BICYCLE` (0) is the largest
    log-softmax over :data:`BICYCLE_IMAGENET_CLASSES`, column
    :data:`~llrnet.models.heads.BIRD` (1) over :data:`BIRD_IMAGENET_CLASSES`.
    Both are <= 0; the larger is the prediction and its confidence.
    """
    check_logits(logits, logits.shape[0], finite=False)
    if logits.shape[1] != 1000:
        raise UsageError(f"an ImageNet classifier has 1000 logits, this one {logits.shape[1]}")
    log_probs = F.log_softmax(logits, dim=1)
    bicycle = log_probs[:, list(BICYCLE_IMAGENET_CLASSES)].amax(dim=1)
    bird = log_probs[:, list(BIRD_IMAGENET_CLASSES)].amax(dim=1)
    return torch.stack([bicycle, bird], dim=1)  # columns BICYCLE (0), BIRD (1)


def imagenet_normalization(model: nn.Module) -> Normalization | None:
    """The (mean, std) on [0, 1] images that ``model`` expects, or None for none.

    llrnet's :class:`~llrnet.models.classifier.ImageNetClassifier` scales its own input
    (None); a timm model declares its own (``pretrained_cfg``); any other
    torchvision model takes :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`.

    Raises:
        UsageError: the model is none of these (pass ``normalization`` yourself).
    """
    if isinstance(model, ImageNetClassifier):
        return None
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(config, dict) and "mean" in config and "std" in config:
        return tuple(config["mean"]), tuple(config["std"])
    if type(model).__module__.startswith("torchvision."):
        return IMAGENET_MEAN, IMAGENET_STD
    raise UsageError(f"cannot tell the input normalization of {type(model).__name__}; pass "
                     "normalization=(mean, std) for [0, 1] images, or None")


class ImageNetAsBirdOrBicycle(nn.Module):
    """An ImageNet classifier seen as a bird-or-bicycle model.

    ``forward``: images [N, 3, H, W] in [0, 1] -> normalized (if
    ``normalization``) -> ImageNet logits [N, 1000] -> two-class logits
    [N, 2] (:func:`imagenet_to_two_class`: column 0 bicycle, column 1 bird).
    Its head is a softmax head: the output already is the challenge contract.
    """

    output_head: Head = SOFTMAX_HEAD

    def __init__(self, model: nn.Module, normalization: Normalization | None) -> None:
        super().__init__()
        if head_of(model) is not SOFTMAX_HEAD:
            raise UsageError(f"{type(model).__name__} has a {type(head_of(model)).__name__}; "
                             "an ImageNet classifier has softmax logits [N, 1000]")
        self.model = model
        self.normalize: nn.Module = (nn.Identity() if normalization is None
                                     else Normalize(tuple(normalization[0]),
                                                    tuple(normalization[1])))

    def forward(self, x: Tensor) -> Tensor:
        """[N, 3, H, W] in [0, 1] -> two-class logits [N, 2]."""
        return imagenet_to_two_class(self.model(self.normalize(x)))


def bird_or_bicycle_from_imagenet(
    model: nn.Module, *, normalization: Normalization | str | None = "auto"
) -> ImageNetAsBirdOrBicycle:
    """``model`` (ImageNet logits [N, 1000]) as a two-class bird-or-bicycle model.

    ``normalization``: ``"auto"`` (:func:`imagenet_normalization`), None (the
    model takes [0, 1] images), or ``(mean, std)`` per channel.
    """
    if isinstance(normalization, str):
        if normalization != "auto":
            raise UsageError(f"normalization must be 'auto', None or (mean, std), got "
                             f"{normalization!r}")
        normalization = imagenet_normalization(model)
    return ImageNetAsBirdOrBicycle(model, normalization)


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``"torchvision:resnet50=FILE"`` -> ``("torchvision", "resnet50", "FILE")``.

    ``llrnet:FILE`` -> ``("llrnet", "", "FILE")``; the file is optional for
    torchvision (published weights) and timm (its pretrained weights).
    """
    source, sep, rest = spec.partition(":")
    if not sep or source not in SOURCES or not rest:
        raise UsageError(f"--imagenet-model {spec!r} must look like torchvision:NAME, "
                         "torchvision:NAME=FILE, timm:NAME[=FILE] or llrnet:FILE")
    if source == "llrnet":
        return source, "", rest
    name, eq, file = rest.partition("=")
    if not name or (eq and not file):
        raise UsageError(f"--imagenet-model {spec!r}: give a model name and, after '=', a file")
    return source, name, file or None


def check_spec(spec: str) -> tuple[str, str, str | None]:
    """:func:`parse_spec`, plus the checks that need no weights: the weights file
    exists and a torchvision name is one of torchvision's models."""
    source, name, file = parse_spec(spec)
    if file is not None and not Path(file).is_file():
        raise FileNotFoundError(f"weights file not found: {file}")
    if source == "torchvision":
        import torchvision  # deferred: heavy (torchvision)

        if name not in torchvision.models.list_models():
            raise UsageError(f"torchvision has no model {name!r}; see "
                             "torchvision.models.list_models()")
    return source, name, file


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Tensors of a ``.safetensors`` file or a torch checkpoint (loaded ``weights_only``)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if file.suffix == ".safetensors":
        with utf8_name(file) as name:  # safetensors opens UTF-8 names only
            return load_file(name)
    try:
        loaded = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and format errors alike
        raise WeightsError(f"{path}: not a readable weights file ({type(error).__name__}: "
                           f"{pickle_refusal(error)})") from None
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def fetch_state_dict(url: str, cache_dir: str | os.PathLike[str] | None = None,
                     *, fetch_hint: str = "") -> dict[str, Tensor]:
    """The state dict at ``url``, through torch's hub cache (``cache_dir``, default
    ``$TORCH_HOME/hub/checkpoints``); a cached copy is used without the network.

    The file name's hash prefix is checked (torchvision's names carry one) and
    the file is loaded ``weights_only``.

    Raises:
        WeightsError: the file could not be fetched or checked; the message says
            so, with ``fetch_hint``.
    """
    try:
        state = torch.hub.load_state_dict_from_url(
            url, model_dir=None if cache_dir is None else str(cache_dir), map_location="cpu",
            progress=False, check_hash=True, weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
        reason = pickle_refusal(error)
        raise WeightsError(f"could not fetch {url} ({reason}){fetch_hint}") from None
    return dict(state)


def _torchvision(name: str, file: str | None) -> nn.Module:
    import torchvision  # deferred: heavy (torchvision)

    model = torchvision.models.get_model(name, weights=None)
    if file is not None:
        state = read_state_dict(file)
    else:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        hint = (f"; where the internet is reachable, fetch them with `python -c \"import "
                f"torchvision; torchvision.models.get_model('{name}', weights='DEFAULT')\"` "
                f"(cached under {torch.hub.get_dir()}/checkpoints), or pass a weights file: "
                f"--imagenet-model torchvision:{name}=FILE")
        state = fetch_state_dict(weights.url, fetch_hint=hint)
    load_state_strict(model, state, source=file or f"torchvision's {name} weights")
    return model


def _timm(name: str, file: str | None) -> nn.Module:
    try:
        timm = importlib.import_module("timm")  # deferred: optional (timm)
    except ImportError:
        raise UsageError("timm models need the package timm: pip install timm") from None
    try:
        model: nn.Module = timm.create_model(name, pretrained=file is None)
    except (OSError, RuntimeError) as error:
        raise WeightsError(f"timm could not create {name} with its pretrained weights "
                           f"({first_line(error)}); pass a weights file: "
                           f"--imagenet-model timm:{name}=FILE") from None
    if file is not None:
        load_state_strict(model, read_state_dict(file), source=file)
    return model


def load_imagenet_model(spec: str, *, device: str | torch.device = "cpu"
                        ) -> ImageNetAsBirdOrBicycle:
    """The ImageNet classifier named by ``spec`` (:func:`parse_spec`) as a bird-or-bicycle
    model (:func:`bird_or_bicycle_from_imagenet`), on ``device``, in eval mode.

    Raises:
        UsageError: a malformed spec or an unknown model name.
        WeightsError: published weights that cannot be fetched, or a bad file.
        FileNotFoundError: a missing weights file.
    """
    source, name, file = check_spec(spec)
    model: nn.Module
    if source == "torchvision":
        model = _torchvision(name, file)
    elif source == "timm":
        model = _timm(name, file)
    else:
        assert file is not None
        model = load_weights(file)
    return bird_or_bicycle_from_imagenet(model).to(device).eval()


assert (BICYCLE, BIRD) == (0, 1)  # the column order imagenet_to_two_class writes
