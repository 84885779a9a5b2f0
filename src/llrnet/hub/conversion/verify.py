"""Numerical verification of an import against TensorFlow (optional).
More: docs/hub.md, "llrnet.hub.conversion.verify"."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llrnet.core.errors import RunError
from llrnet.hub.conversion.convert import Conversion
from llrnet.hub.formats.module import HubModule
from llrnet.hub.recognition.analyze import Analysis, analyze
from llrnet.models import BirdOrBicycleClassifier, WideResNet
from llrnet.models.classifier import ImageNetClassifier

TOLERANCE = 1e-4
WORKER = Path(__file__).with_name("tf_worker.py")


@dataclass
class Verification:
    """Outcome: ``status`` is "passed", "failed" or "skipped"."""

    status: str
    reason: str
    max_abs_diff: float | None = None
    tolerance: float = TOLERANCE
    images: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_tf_python(explicit: str | None = None) -> tuple[str | None, str]:
    """(interpreter that imports TensorFlow, or None; the reason when None)."""
    configured = explicit or os.environ.get("LLRNET_TF_PYTHON")
    if configured:
        if not Path(configured).is_file():
            return None, f"the configured TensorFlow interpreter {configured} does not exist"
        return configured, ""
    if importlib.util.find_spec("tensorflow") is not None:
        return sys.executable, ""
    return None, ("TensorFlow is not installed in this environment (optional extra: "
                  "pip install 'llrnet[tf]', or point LLRNET_TF_PYTHON / --tf-python at an "
                  "interpreter that has it)")


def verification_images(size: int, seed: int = 0) -> np.ndarray:
    """[4, size, size, 3] float32 in [0, 1]: two uniform-noise and two smooth images."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(2, 3, size, size, generator=generator)
    coarse = torch.rand(2, 3, 7, 7, generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    ramp = torch.linspace(0, 0.3, size).view(1, 1, 1, size)
    smooth = (0.7 * smooth + ramp + 0.02 * torch.randn(2, 3, size, size, generator=generator))
    images = torch.cat([noise, smooth.clamp(0, 1)])
    return images.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def _run_tf(python: str, module: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory(prefix="llrnet-verify-") as tmp:
        inputs, outputs = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inputs, **feeds)  # type: ignore[arg-type]
        result = subprocess.run([python, str(WORKER), str(module), str(inputs), str(outputs)],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise RunError(f"TensorFlow failed to run {module}: {tail}")
        with np.load(outputs, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def _feeds(analysis: Analysis, image: np.ndarray) -> dict[str, np.ndarray]:
    feeds = {analysis.image_input: image}
    for key, dtype in analysis.facts["other_inputs"].items():
        feeds[key] = np.asarray(0.1 if dtype.startswith("float") else 0,
                                dtype=np.float32 if dtype.startswith("float") else np.int64)
    return feeds


def verify_conversion(conversion: Conversion, module: HubModule, linear: HubModule | None = None,
                      *, tf_python: str | None = None, image_size: int = 224,
                      tolerance: float = TOLERANCE, seed: int = 0) -> Verification:
    """Compare TensorFlow's and the converted model's logits on the same images."""
    python, reason = find_tf_python(tf_python)
    if python is None:
        return Verification("skipped", reason, tolerance=tolerance)
    model = conversion.model.eval()
    device = next(model.parameters()).device
    images = verification_images(image_size, seed)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
    analysis = analyze(module)
    with torch.no_grad():
        if isinstance(model, BirdOrBicycleClassifier):
            if linear is None:
                raise RunError("verification of a bird-or-bicycle import needs the linear module")
            prepared = model.preprocess(x)
            ours = model(x)
            latents = _run_tf(python, module.path, _feeds(analysis, _nhwc(prepared)))
            head = analyze(linear)
            logits = _run_tf(python, linear.path, _feeds(head, _first(latents)))
            theirs = _first(logits).reshape(len(images), -1)
        elif isinstance(model, ImageNetClassifier):
            ours = model(x)
            theirs = _first(_run_tf(python, module.path, _feeds(analysis, _nhwc(model.scale(x)))))
        elif isinstance(model, WideResNet):
            ours = model(x)
            normalized = _nhwc(model.normalize(x))
            theirs = _first(_run_tf(python, module.path, _feeds(analysis, normalized)))
        else:
            return Verification("skipped", f"no TF comparison for {type(model).__name__}",
                                tolerance=tolerance)
    ours_np = ours.float().cpu().numpy()
    if ours_np.shape != theirs.shape:
        return Verification("failed", f"output shapes differ: {ours_np.shape} vs {theirs.shape}",
                            tolerance=tolerance, images=len(images))
    diff = float(np.abs(ours_np - theirs).max())
    status = "passed" if diff <= tolerance else "failed"
    return Verification(status, f"max |logit difference| {diff:.3g} on {len(images)} images "
                        f"({image_size}x{image_size}, noise + smooth) vs tolerance {tolerance:g}",
                        diff, tolerance, len(images))


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).contiguous().float().cpu().numpy()


def _first(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return outputs["default"] if "default" in outputs else outputs[sorted(outputs)[0]]
