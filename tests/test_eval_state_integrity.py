"""Evaluation state chunks carry a sha256: a damaged chunk is reported and recomputed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from llrnet.eval import evaluate
from llrnet.eval.state import ChunkResult, RunState
from test_eval_runner import suite, tiny_data, tiny_model, without_times


def small_chunk() -> ChunkResult:
    return ChunkResult(indices=torch.arange(3), labels=torch.tensor([0, 1, 0]),
                       logits=torch.randn(3, 2, generator=torch.Generator().manual_seed(0)),
                       model_evaluations=9.0, wall_time=0.5, adversarial=torch.rand(1, 1, 2, 2))


def test_every_single_bit_flip_is_detected(tmp_path: Path) -> None:
    state = RunState(tmp_path)
    state.save_chunk("pgd", 0, small_chunk())
    path = state.chunk_path("pgd", 0)
    original = path.read_bytes()
    assert state.load_chunk("pgd", 0) is not None
    logging.disable(logging.WARNING)
    try:
        for position in range(len(original)):
            for bit in range(8):
                damaged = bytearray(original)
                damaged[position] ^= 1 << bit
                path.write_bytes(bytes(damaged))
                assert state.load_chunk("pgd", 0) is None, (position, bit)
    finally:
        logging.disable(logging.NOTSET)


def test_a_chunk_without_a_digest_is_redone(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    from safetensors.torch import save_file

    state = RunState(tmp_path)
    path = state.chunk_path("pgd", 0)
    path.parent.mkdir(parents=True)
    chunk = small_chunk()
    save_file({"indices": chunk.indices, "labels": chunk.labels, "logits": chunk.logits},
              str(path), metadata={"model_evaluations": "9.0", "wall_time": "0.5"})
    with caplog.at_level(logging.WARNING):
        assert state.load_chunk("pgd", 0) is None
    assert "no sha256" in caplog.text and str(path) in caplog.text


def test_a_flipped_bit_is_reported_and_recomputed(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    data = tiny_data()
    evaluate(tiny_model(), suite()[0], data, out_dir=tmp_path / "a", progress=False)
    evaluate(tiny_model(), suite()[0], data, out_dir=tmp_path / "b", progress=False)
    # Damage a logit of chunk 1 of the clean entry (the case of the report: clean
    # accuracy changed on resume) and one of pgd.
    for name in ("clean", "pgd"):
        path = tmp_path / "a/state" / name / "chunk_00001.safetensors"
        damaged = bytearray(path.read_bytes())
        damaged[-5] ^= 0x40
        path.write_bytes(bytes(damaged))
    (tmp_path / "a/results.json").unlink()
    again, attack = suite()
    with caplog.at_level(logging.WARNING, logger="llrnet.eval.state"):
        evaluate(tiny_model(), again, data, out_dir=tmp_path / "a", progress=False)
    assert attack._calls == 1  # only the damaged pgd chunk was computed again
    for name in ("clean", "pgd"):
        assert str(tmp_path / "a/state" / name / "chunk_00001.safetensors") in caplog.text
    assert "sha256 does not match" in caplog.text
    assert without_times(tmp_path / "a/results.json") == without_times(tmp_path / "b/results.json")
