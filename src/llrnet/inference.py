"""Scoring image files with a bird-or-bicycle classifier (``llrnet predict``).
More: docs/core.md, "llrnet.inference"."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import functional as TF

from llrnet.core.devices import resolve_device
from llrnet.core.errors import InputError
from llrnet.core.fileio import NotRegularFileError, open_regular_file
from llrnet.core.modes import kept_as_given
from llrnet.models.compiled import compile_model, is_compiled, uncompile
from llrnet.models.heads import SigmoidBirdHead, head_of
from llrnet.models.precision import fast_copy, resolve_precision

IMAGE_SIZE = 224


@dataclass(frozen=True)
class Prediction:
    """One image's score.

    Attributes:
        path: the image file.
        bird_probability: sigmoid of the bird logit, in [0, 1].
        label: ``"bird"`` or ``"bicycle"`` (a zero logit is a tie: bicycle).
        confidence: the challenge confidence ``max(relu(-l), relu(l)) = |l|``.
        bird_logit: the raw logit ``l``.
    """

    path: str
    bird_probability: float
    label: str
    confidence: float
    bird_logit: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return asdict(self)


def load_image(path: str | os.PathLike[str], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Decode ``path`` to a float tensor [3, size, size] in [0, 1].

    8-bit modes (L, P, RGB, RGBA, CMYK, YCbCr, ...) go through Pillow's RGB
    conversion; 16-bit grayscale (``I;16``) is scaled by 65535, not clipped to
    8 bits. 32-bit integer and float images (``I``, ``F``) have no agreed
    range and are refused. Animated files are scored on their first frame.

    Raises:
        InputError: the file is missing, a folder, not a regular file (a FIFO,
            a device: refused without reading), not an image, truncated, a
            decompression bomb (more pixels than Pillow's limit), or of a mode
            without a defined range.
    """
    if Path(path).is_dir():
        raise InputError(f"{path}: is a directory, not an image")
    try:
        with open_regular_file(path) as handle, Image.open(handle) as opened:
            tensor = _decode(opened, path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except NotRegularFileError as error:
        raise InputError(f"{path}: {error.strerror}; refused (an image must be a file)") \
            from None
    except Image.DecompressionBombError as error:
        raise InputError(f"{path}: refused as a decompression bomb ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{path}: cannot decode image ({error})") from None
    tensor = TF.resize(tensor, size, interpolation=TF.InterpolationMode.BILINEAR,
                       antialias=True)
    return TF.center_crop(tensor, [size, size]).clamp_(0.0, 1.0)


def _decode(image: Image.Image, path: str | os.PathLike[str]) -> torch.Tensor:
    """[3, H, W] float in [0, 1] from an opened image of any mode Pillow reads."""
    if image.mode.startswith("I;16"):
        # Pillow's RGB conversion clips 16-bit values at 255: scale them ourselves.
        values = np.asarray(image).astype(np.float32) / 65535.0
        gray = torch.from_numpy(values)
        return gray.unsqueeze(0).expand(3, -1, -1).contiguous()
    if image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "floating-point"
        raise InputError(f"{path}: {kind} images (mode {image.mode}) have no defined "
                         "range; convert it to an 8- or 16-bit image")
    rgb = image.convert("RGB")
    return TF.pil_to_tensor(rgb).float().div_(255.0)


def predict_images(
    model: torch.nn.Module,
    paths: list[str | os.PathLike[str]],
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    compile: bool = False,
) -> tuple[list[Prediction], dict[str, str]]:
    """Score every readable image in ``paths``.

    ``precision`` ``"bf16"`` scores with a bf16 channels_last copy of the model
    (:func:`llrnet.models.fast_copy`); ``"auto"`` does so where the device has
    bf16 matrix units (:func:`llrnet.models.precision.resolve_precision`). bf16 logits
    differ from fp32 ones by bf16 rounding (docs/benchmarks.md). ``compile``
    runs the scoring model through ``torch.compile``
    (:func:`llrnet.models.compiled.compile_model`: compiled on the first batch,
    eager with one warning where compiling cannot run). The caller's model comes
    back as given: mode, device, and eager unless the caller compiled it.

    Returns the predictions (in input order, readable files only) and a mapping
    from each unreadable path to the reason.
    """
    head = head_of(model)
    if not isinstance(head, SigmoidBirdHead):
        raise InputError(
            f"predict needs a bird-or-bicycle classifier (a sigmoid bird head), got "
            f"{type(model).__name__} with a {type(head).__name__}"
        )
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    device = resolve_device(device)
    with kept_as_given(model):  # the caller's model comes back as given (mode, device)
        scorer = model.to(device).eval()
        if resolve_precision(precision, device) == "bf16":
            scorer = fast_copy(scorer, "bf16").eval()
        was_compiled = is_compiled(scorer)
        try:
            return _score(scorer, head, paths, batch_size, device, compile)
        finally:
            if not was_compiled:
                uncompile(scorer)  # the caller's module is as it was


def _score(model: torch.nn.Module, head: SigmoidBirdHead, paths: list[str | os.PathLike[str]],
           batch_size: int, device: torch.device, compile: bool
           ) -> tuple[list[Prediction], dict[str, str]]:
    """:func:`predict_images` once the model is ready."""
    failures: dict[str, str] = {}
    readable: list[tuple[str, torch.Tensor]] = []
    for path in paths:
        try:
            readable.append((str(path), load_image(path)))
        except InputError as error:
            failures[str(path)] = str(error)
    predictions: list[Prediction] = []
    with torch.inference_mode():
        for start in range(0, len(readable), batch_size):
            chunk = readable[start : start + batch_size]
            batch = torch.stack([image for _, image in chunk]).to(device)
            if compile and start == 0:
                compile_model(model, batch, what="the model")
            logits = head.bird_logit(model(batch)).float().cpu().numpy()
            for (path, _), logit in zip(chunk, logits):
                predictions.append(_prediction(path, float(logit)))
    return predictions, failures


def _prediction(path: str, logit: float) -> Prediction:
    probability = float(1.0 / (1.0 + np.exp(-logit)))
    return Prediction(
        path=Path(path).as_posix(),
        bird_probability=probability,
        label="bird" if logit > 0 else "bicycle",
        confidence=abs(logit),
        bird_logit=logit,
    )
