"""Final files get the mode open() would give them (0666 less the umask), not mkstemp's 0600."""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from llrnet.core.fileio import atomic_path, atomic_write_json, atomic_write_text, current_umask
from llrnet.eval import evaluate
from llrnet.hub.formats.archive import extract_archive
from llrnet.models import create_model
from llrnet.models.weights import save_weights
from llrnet.train.checkpoint import save_checkpoint
from test_eval_runner import suite, tiny_data, tiny_model


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_umask_is_read_without_changing_it(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask


def test_atomic_writes_have_the_open_mode(tmp_path: Path, umask: int) -> None:
    with open(tmp_path / "plain", "w") as handle:
        handle.write("x")
    atomic_write_text(tmp_path / "text", "x")
    atomic_write_json(tmp_path / "a" / "b.json", {"x": 1})
    with atomic_path(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"x")
    assert mode(tmp_path / "plain") == 0o666 & ~umask
    for name in ("text", "a/b.json", "c.bin"):
        assert mode(tmp_path / name) == 0o666 & ~umask, name


def test_weights_checkpoints_and_evaluation_outputs(tmp_path: Path, umask: int) -> None:
    expected = 0o666 & ~umask
    save_weights(create_model("llr_pretrain_adv_tiny"), tmp_path / "w.safetensors")
    assert mode(tmp_path / "w.safetensors") == expected
    save_checkpoint(tmp_path / "ckpt", 3, {"x": torch.ones(2)})
    assert {mode(p) for p in (tmp_path / "ckpt").iterdir()} == {expected}
    evaluate(tiny_model(), suite()[0], tiny_data(8), out_dir=tmp_path / "eval", progress=False)
    files = [p for p in (tmp_path / "eval").rglob("*") if p.is_file()]
    assert {"results.json", "config.json", "examples.png", "chunk_00000.safetensors"} <= \
        {p.name for p in files}
    assert {p.relative_to(tmp_path): mode(p) for p in files} == \
        {p.relative_to(tmp_path): expected for p in files}


def test_an_extracted_archive_folder_has_the_mkdir_mode(tmp_path: Path, umask: int) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "saved_model.pb").write_bytes(b"x")
    with tarfile.open(tmp_path / "m.tar.gz", "w:gz") as archive:
        archive.add(source / "saved_model.pb", arcname="saved_model.pb")
    target = extract_archive(tmp_path / "m.tar.gz", tmp_path / "cache" / "abc")
    assert mode(target) == 0o777 & ~umask
