"""``llrnet models``, ``info`` and ``predict`` on an oracle model with a known answer."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llrnet.cli import main
from llrnet.inference import load_image
from llrnet.models import list_models
from model_helpers import constant_bird_weights


def _image(path: Path, size: tuple[int, int] = (300, 260), colour: int = 120) -> Path:
    array = np.full((size[1], size[0], 3), colour, np.uint8)
    array[:, : size[0] // 2, 0] = 255
    Image.fromarray(array).save(path)
    return path


def test_load_image_resizes_shorter_side_and_center_crops(tmp_path: Path) -> None:
    tensor = load_image(_image(tmp_path / "wide.png", (448, 300)))
    assert tensor.shape == (3, 224, 224)
    assert tensor.dtype == torch.float32
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0
    # Left half has red 255, right half 120: the crop keeps both, split in the middle.
    assert tensor[0, 100, 10].item() == pytest.approx(1.0)
    assert tensor[0, 100, 213].item() == pytest.approx(120 / 255, abs=1e-6)


def test_predict_prints_known_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = constant_bird_weights(tmp_path / "w.safetensors", 2.0)
    images = [_image(tmp_path / "a.png"), _image(tmp_path / "b.jpg", colour=10)]
    assert main(["predict", *map(str, images), "--weights", str(weights), "--json",
                 "--batch-size", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(line["path"]).name for line in lines] == ["a.png", "b.jpg"]
    for line in lines:
        assert line["label"] == "bird"
        assert line["bird_logit"] == pytest.approx(2.0, abs=1e-6)
        assert line["bird_probability"] == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)
        assert line["confidence"] == pytest.approx(2.0, abs=1e-6)


def test_predict_text_output_and_bicycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    weights = constant_bird_weights(tmp_path / "w.safetensors", -1.5)
    assert main(["predict", str(_image(tmp_path / "a.png")), "--weights", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "bicycle" in out and "confidence=1.5000" in out


def test_predict_reports_unreadable_files_and_scores_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = constant_bird_weights(tmp_path / "w.safetensors", 1.0)
    good = _image(tmp_path / "good.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    code = main(["predict", str(good), str(broken), str(truncated), str(tmp_path / "missing.png"),
                 "--weights", str(weights), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert len(captured.out.splitlines()) == 1 and "good.png" in captured.out
    errors = captured.err.splitlines()
    assert len(errors) == 3
    assert any("broken.jpg: cannot decode image" in e for e in errors)
    assert any("truncated.jpg: cannot decode image" in e for e in errors)
    assert any("missing.png: no such file" in e for e in errors)


def test_info_prints_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = constant_bird_weights(tmp_path / "w.safetensors", 1.0)
    assert main(["info", str(weights), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["architecture"] == "llr_pretrain_adv_tiny" and record["source"] == "oracle"
    assert main(["info", str(weights)]) == 0
    assert "architecture" in capsys.readouterr().out


def test_models_lists_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "llr_pretrain_adv(" in out and "wrn_28_8_softplus(" in out
    # One line per registered model, in the registry's order, with its arguments.
    assert [line.split("(")[0] for line in out.splitlines()] == list_models()
    assert ("digits_wrn(depth=10, width=2, num_classes=2, activation='softplus', "
            "head='softmax')") in out


def test_bad_weights_give_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llrnet", "info", str(tmp_path / "missing.safetensors")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"llrnet info: error: weights file not found: {tmp_path / 'missing.safetensors'}"
    )
    assert "Traceback" not in result.stderr


def test_bad_batch_size_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    weights = constant_bird_weights(tmp_path / "w.safetensors", 1.0)
    assert main(["predict", str(_image(tmp_path / "a.png")), "--weights", str(weights),
                 "--batch-size", "0"]) == 2
    assert "batch size must be >= 1" in capsys.readouterr().err


def test_predict_in_bf16_scores_with_the_bf16_copy(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # The bias 1.3 is not a bf16 number: fp32 reports it, the bf16 copy its rounding.
    weights = constant_bird_weights(tmp_path / "w.safetensors", 1.3)
    image = str(_image(tmp_path / "a.png"))
    logits = {}
    for precision in ("fp32", "bf16"):
        assert main(["predict", image, "--weights", str(weights), "--json",
                     "--precision", precision]) == 0
        logits[precision] = json.loads(capsys.readouterr().out)["bird_logit"]
    assert logits["fp32"] == pytest.approx(1.3, abs=1e-6)
    assert logits["bf16"] == torch.tensor(1.3).bfloat16().item()
