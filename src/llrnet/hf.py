"""``export_hf``: an llrnet weights file as a Hugging Face Hub model folder (weights, config, card).
More: docs/models.md, "Hugging Face Hub"."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from llrnet import __version__
from llrnet.core.errors import InputError, UsageError
from llrnet.core.fileio import publish_mode, temporary_folder
from llrnet.core.http import redact_text
from llrnet.core.paths import output_folder
from llrnet.eval.plan import model_fingerprint
from llrnet.eval.suites import suite_facts
from llrnet.models import challenge_view, load_weights
from llrnet.models.heads import SigmoidBirdHead, head_of
from llrnet.models.hf_hub import CONFIG_FILE, WEIGHTS_FILE, parse_hf_name
from llrnet.models.layers import Normalize, ScaleToSymmetric
from llrnet.models.preprocessing import CropResizeScale
from llrnet.models.wide_resnet import WideResNet

__all__ = ["CARD_FILE", "ExportedFolder", "export_hf", "hf_config"]

CARD_FILE = "README.md"


@dataclass(frozen=True)
class ExportedFolder:
    """What :func:`export_hf` wrote: the folder, its three files' names and the weights' record."""

    folder: Path
    files: tuple[str, ...]
    record: dict[str, Any]


def _has_credentials(text: str) -> bool:
    """Whether a URL in ``text`` carries a user, password or credential-like parameter."""
    return redact_text(text) != text


def _input_size(model: nn.Module, architecture: str) -> list[int]:
    """[C, H, W] the model was made for: 28x28 grayscale digits, 32x32 CIFAR-style
    Wide-ResNets, 224x224 for the ResNets (every model here pools globally, so other
    sizes run too)."""
    channels = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
    if architecture == "digits_wrn":
        return [channels, 28, 28]
    if isinstance(model, WideResNet):
        return [channels, 32, 32]
    return [channels, 224, 224]


def _normalization(model: nn.Module, channels: int) -> dict[str, Any]:
    """The crop/resize and mean/std the model applies to its [0, 1] input itself."""
    found: dict[str, Any] = {"crop_pct": 1.0, "crop_mode": "none", "interpolation": "none"}
    for module in model.modules():
        if isinstance(module, CropResizeScale) and module.enabled:
            found.update(crop_pct=module.crop_fraction, crop_mode="center",
                         interpolation="bilinear",
                         resize="TF1 resize_bilinear (align_corners=False, no half-pixel "
                         "offset) of the central crop back to the input size",
                         mean=[0.5] * channels, std=[0.5] * channels)
            return found
        if isinstance(module, ScaleToSymmetric):
            return {**found, "mean": [0.5] * channels, "std": [0.5] * channels}
        if isinstance(module, Normalize):
            return {**found, "mean": [float(v) for v in module.mean.flatten()],
                    "std": [float(v) for v in module.std.flatten()]}
        if isinstance(module, nn.BatchNorm2d) and not module.affine \
                and module.running_mean is not None and module.running_var is not None:
            std = torch.sqrt(module.running_var + module.eps)
            return {**found, "mean": [float(v) for v in module.running_mean],
                    "std": [float(v) for v in std], "normalization": "learned (batch norm)"}
    return found


def hf_config(model: nn.Module) -> dict[str, Any]:
    """The timm-style ``config.json`` of a model loaded with :func:`load_weights`.

    ``architecture`` and ``model_args`` rebuild it (``create_model(architecture,
    **model_args)``); ``pretrained_cfg`` describes its input: ``input_size`` [C, H,
    W], ``input_range`` [0, 1], and the crop, resize and mean/std that the model
    applies *itself* (``normalization_inside_model``: give it [0, 1] images as they
    are); ``num_classes`` is the width of its raw logits.
    """
    record = dict(getattr(model, "llrnet_metadata", {}) or {})
    architecture = str(record["architecture"])
    size = _input_size(model, architecture)
    with torch.no_grad():
        logits = model(torch.full((1, *size), 0.5))
    num_classes = int(logits.shape[-1])
    head = head_of(model)
    cfg: dict[str, Any] = {
        "input_size": size,
        "fixed_input_size": False,
        "input_range": [0.0, 1.0],
        **_normalization(model, size[0]),
        "normalization_inside_model": True,
        "num_classes": num_classes,
        "head": ("sigmoid bird logit, column "
                 f"{head.column}" if isinstance(head, SigmoidBirdHead) else "softmax"),
    }
    return {
        "architecture": architecture,
        "model_args": dict(record.get("kwargs", {})),
        "num_classes": num_classes,
        "pretrained_cfg": cfg,
        "llrnet_version": __version__,
        "weights_llrnet_version": record.get("llrnet_version"),
        "tensors_sha256": record.get("sha256"),
    }


def _read_results(path: Path, model: nn.Module) -> dict[str, Any]:
    """An ``llrnet eval`` results.json, checked to belong to ``model`` where its
    config.json says which model it scored."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"results file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error})") from None
    attacks = results.get("attacks") if isinstance(results, dict) else None
    if not isinstance(attacks, dict) or not attacks or not all(
            isinstance(r, dict) and "accuracy@80" in r for r in attacks.values()):
        raise InputError(f"{path} is not an llrnet eval results.json (no 'attacks' with "
                         "'accuracy@80')")
    config = path.with_name("config.json")
    scored = None
    if config.is_file():
        try:
            scored = json.loads(config.read_text(encoding="utf-8")).get("model")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            scored = None
    if isinstance(scored, str) and scored != model_fingerprint(challenge_view(model), False,
                                                              torch.empty(0)):
        raise InputError(f"{path} scored another model than this weights file (the model "
                         f"fingerprint in {config} differs)")
    return results


def _percent(value: Any) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "-"
    return f"{100 * value:.1f}"


def _results_rows(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(label, record) per attack in the evaluation's order, each white-box bound under it."""
    attacks = results["attacks"]
    order = [n for n in results.get("order", []) if n in attacks]
    order += [n for n in attacks if n not in order]
    rows: list[tuple[str, Mapping[str, Any]]] = []
    for name in order:
        rows.append((name, attacks[name]))
        bound = attacks[name].get("white_box_bound") or {}
        if "accuracy@80" in bound:
            rows.append((f"{name} (white-box bound)", bound))
    return rows


def _data_name(results: Mapping[str, Any] | None) -> str | None:
    if results is None:
        return None
    try:
        return suite_facts(str(results.get("suite"))).data
    except UsageError:
        return None


def _model_index(title: str, results: Mapping[str, Any]) -> list[dict[str, Any]]:
    data = _data_name(results) or str(results.get("suite"))
    metrics = [{"name": f"{label} accuracy at 80% coverage", "type": "accuracy",
                "value": round(100 * float(record["accuracy@80"]), 2), "verified": False}
               for label, record in _results_rows(results)
               if isinstance(record.get("accuracy@80"), int | float)
               and not math.isnan(record["accuracy@80"])]
    return [{"name": title, "results": [{
        "task": {"type": "image-classification", "name": "Image Classification"},
        "dataset": {"name": f"{data} (llrnet suite {results.get('suite')})", "type": data},
        "metrics": metrics}]}]


def _front_matter(record: Mapping[str, Any], config: Mapping[str, Any], license: str,
                  title: str, results: Mapping[str, Any] | None) -> dict[str, Any]:
    tags = ["llrnet", "image-classification", "adversarial-robustness", "safetensors",
            config["architecture"]]
    if config["pretrained_cfg"]["head"] != "softmax":
        tags.append("bird-or-bicycle")
    datasets: list[str] = []
    recipe = record.get("recipe")
    if isinstance(recipe, dict) and isinstance(recipe.get("data"), dict):
        datasets.append(str(recipe["data"].get("name")))
    data = _data_name(results)
    if data is not None and data not in datasets:
        datasets.append(data)
    matter: dict[str, Any] = {"library_name": "llrnet", "license": license, "tags": tags}
    if datasets:
        matter["datasets"] = datasets
    matter["pipeline_tag"] = "image-classification"
    if results is not None:
        matter["model-index"] = _model_index(title, results)
    return matter


def _provenance(record: Mapping[str, Any], file_sha256: str) -> list[str]:
    lines = [f"- weights file sha256 (`{WEIGHTS_FILE}`): `{file_sha256}`",
             f"- tensors sha256 (checked on every load): `{record.get('sha256')}`",
             f"- written by llrnet {record.get('llrnet_version')}"]
    source = record.get("source")
    if isinstance(source, dict):
        for role, entry in sorted(source.items()):
            if not isinstance(entry, dict):
                lines.append(f"- source ({role}): `{redact_text(str(entry))}`")
                continue
            checked = " (matched the published value)" if entry.get("sha256_checked") else ""
            lines.append(f"- source ({role}): `{redact_text(str(entry.get('path')))}`")
            lines.append(f"  - {entry.get('sha256_of', 'archive')} sha256: "
                         f"`{entry.get('sha256')}`{checked}")
    elif source is not None:
        lines.append(f"- source: {redact_text(str(source))}")
    recipe = record.get("recipe")
    if isinstance(recipe, str):
        lines.append(f"- recipe: {redact_text(recipe)}")
    elif isinstance(recipe, dict):
        lines.append("- recipe: the training configuration, in the file's record "
                     "(`llrnet info`)")
    checks = record.get("checks")
    if isinstance(checks, list) and checks:
        lines.append("- conversion proof (the checks recorded at conversion):")
        lines += [f"  - {redact_text(str(check))}" for check in checks]
    verification = (record.get("import") or {}).get("verification") \
        if isinstance(record.get("import"), dict) else None
    if isinstance(verification, dict):
        lines.append(f"- TensorFlow verification: {verification.get('status')}: "
                     f"{redact_text(str(verification.get('reason')))}")
    metrics = record.get("metrics")
    if isinstance(metrics, dict) and metrics:
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in sorted(metrics.items()))
        lines.append(f"- training metrics: {shown}")
    return lines


def _results_section(results: Mapping[str, Any]) -> list[str]:
    lines = ["## Evaluation", "",
             f"`llrnet eval --suite {results.get('suite')}`: seed {results.get('seed')}, "
             f"{results.get('images')} images, precision {results.get('precision', 'fp32')}; "
             "accuracy in percent at 80% and 100% coverage (the challenge's metric is the "
             "first).", "",
             "| attack | accuracy @ 80% | accuracy @ 100% | images |", "|---|---|---|---|"]
    for label, record in _results_rows(results):
        lines.append(f"| {label} | {_percent(record.get('accuracy@80'))} | "
                     f"{_percent(record.get('accuracy@100'))} | {record.get('images', '-')} |")
    warned = [str(w) for w in results.get("warnings") or []]
    if warned:
        lines += ["", "Warnings of the evaluation:", ""]
        lines += [f"- {redact_text(w)}" for w in warned]
    return [*lines, ""]


def _inside(cfg: Mapping[str, Any]) -> str:
    """What the model does to its input itself, in words."""
    steps = []
    if cfg["crop_mode"] == "center":
        steps.append(f"crops the central {100 * cfg['crop_pct']:g}%, resizes it back "
                     "(TF1 bilinear)")
    if "mean" in cfg:
        steps.append("subtracts mean and divides by std")
    return "the model " + " and ".join(steps) + " itself" if steps else "no preprocessing"


def _card(record: Mapping[str, Any], config: Mapping[str, Any], license: str, repo_id: str,
          file_sha256: str, results: Mapping[str, Any] | None) -> str:
    title = repo_id.split("/")[-1] if repo_id != "OWNER/REPO" else config["architecture"]
    matter = yaml.safe_dump(_front_matter(record, config, license, title, results),
                            sort_keys=False, allow_unicode=True)
    cfg = config["pretrained_cfg"]
    c, h, w = cfg["input_size"]
    arguments = ", ".join(f"{k}={v!r}" for k, v in config["model_args"].items())
    lines = [
        "---", matter.rstrip(), "---", "", f"# {title}", "",
        f"`{config['architecture']}` weights for llrnet, in llrnet's weights format "
        "(safetensors with a metadata record: architecture, arguments, tensor hash, "
        "provenance).", "",
        "## Usage", "",
        "```bash", "pip install 'llrnet[hf]'", f"llrnet info hf-hub:{repo_id}",
    ]
    if cfg["head"] != "softmax":  # llrnet predict scores bird-or-bicycle classifiers
        lines.append(f"llrnet predict image.jpg --weights hf-hub:{repo_id}")
    lines += [
        "```", "",
        "```python", "import torch", "from llrnet.models import load_weights", "",
        f'model = load_weights("hf-hub:{repo_id}")  # strict, hash-checked, never unpickles',
        f"x = torch.rand(1, {c}, {h}, {w})  # images in [0, 1], NCHW",
        f"logits = model(x)  # [1, {cfg['num_classes']}]", "```", "",
        "Pin a revision with `hf-hub:OWNER/REPO@REVISION`; `HF_HUB_OFFLINE=1` loads from "
        "the Hugging Face cache.", "",
        "## Model", "",
        f"- architecture: `{config['architecture']}({arguments})`",
        f"- input: [N, {c}, {h}, {w}] float images in [0, 1], as they are: {_inside(cfg)} "
        "(`pretrained_cfg` in `config.json`)",
        f"- output: raw logits [N, {cfg['num_classes']}] ({cfg['head']})", "",
        "## Provenance", "",
        *_provenance(record, file_sha256), "",
    ]
    if results is not None:
        lines += _results_section(results)
    return "\n".join(lines)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_hf(weights: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
              results: str | os.PathLike[str] | None = None, license: str = "unknown",
              repo_id: str | None = None) -> ExportedFolder:
    """Write the folder that ``hf upload OWNER/REPO OUT_DIR`` publishes unchanged.

    * ``model.safetensors``: ``weights`` copied byte for byte (record and hash included),
      after loading it once (strict and hash-checked, so a corrupt file is never published);
    * ``config.json``: :func:`hf_config`;
    * ``README.md``: the model card: YAML front matter (``library_name: llrnet``,
      ``license``, tags, datasets, ``pipeline_tag``, ``model-index`` from ``results``),
      usage, provenance from the record (URLs without credentials) and, with ``results``
      (an ``llrnet eval`` results.json), the evaluation's table.

    The folder is written beside ``out_dir`` and renamed into place, so a failure
    leaves nothing there. ``repo_id`` (``owner/repo``) fills the usage snippet.

    Raises:
        UsageError: a malformed ``repo_id`` or empty ``license``.
        InputError: ``out_dir`` exists and is not an empty folder; ``results`` is not
            an evaluation of this model.
        WeightsError: ``weights`` is not a valid llrnet weights file.
    """
    if not license.strip() or any(ch.isspace() for ch in license):
        raise UsageError(f"license must be one identifier such as apache-2.0, got {license!r}")
    if repo_id is not None:
        parse_hf_name(f"hf-hub:{repo_id}")
    target = output_folder(out_dir, what="export folder")
    if target.exists() and any(target.iterdir()):
        raise InputError(f"{out_dir} is not empty; give a new or empty folder")
    source = Path(weights)
    model = load_weights(source)
    record = dict(model.llrnet_metadata)  # type: ignore[arg-type]
    evaluation = None if results is None else _read_results(Path(results), model)
    config = hf_config(model)
    if _has_credentials(json.dumps(record)):
        warnings.warn(f"{weights}: its record holds a URL with credentials; the card shows "
                      f"it redacted, but {WEIGHTS_FILE} is copied as it is", stacklevel=2)
    folder = temporary_folder(target)
    try:
        shutil.copyfile(source, folder / WEIGHTS_FILE)
        file_sha256 = _sha256_file(folder / WEIGHTS_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (folder / CARD_FILE).write_text(
            _card(record, config, license, repo_id or "OWNER/REPO", file_sha256, evaluation),
            encoding="utf-8")
        for name in (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE):
            publish_mode(folder / name)
        publish_mode(folder, folder=True)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(folder, target)
    finally:
        if folder.exists():
            shutil.rmtree(folder)
    return ExportedFolder(target, (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE), record)
