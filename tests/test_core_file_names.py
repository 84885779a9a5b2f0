"""Output files of any legal name (long, not UTF-8), and a full disk reported as
``OSError(ENOSPC)`` naming the file being written. A full disk is simulated by
monkeypatching the write (the test cannot fill a real disk)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from llrnet.core import fileio
from llrnet.core.errors import InputError
from llrnet.core.fileio import atomic_path, atomic_write_text, temporary_folder, utf8_name
from llrnet.models import create_model, load_weights, save_weights
from llrnet.models.weights import read_metadata

LONG = "w" * 243 + ".safetensors"  # 255 bytes: the longest name most file systems take
NOT_UTF8 = os.fsdecode(b"caf\xe9.safetensors")  # a Latin-1 name on a UTF-8 system


def _full_disk(self: Path, data: bytes) -> int:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))


def test_a_255_byte_name_gets_a_short_temporary(tmp_path: Path) -> None:
    assert len(os.fsencode(LONG)) == 255
    seen = []
    with atomic_path(tmp_path / LONG) as tmp:
        seen.append(tmp.name)
        tmp.write_bytes(b"x")
    assert (tmp_path / LONG).read_bytes() == b"x"
    assert len(seen[0]) < 140 and fileio._OURS.match(seen[0]), seen[0]
    folder = temporary_folder(tmp_path / ("d" * 255))
    assert len(folder.name) < 140 and fileio._OURS.match(folder.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LONG, folder.name])


def test_short_names_keep_their_name_in_the_temporary(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "results.json") as tmp:
        assert tmp.name.startswith(".results.json.")
        tmp.write_text("{}")


def test_weights_round_trip_under_a_long_and_a_non_utf8_name(tmp_path: Path) -> None:
    model = create_model("llr_pretrain_adv_tiny")
    for name in (LONG, NOT_UTF8):
        path = tmp_path / name
        save_weights(model, path, {"source": "test"})
        assert read_metadata(path)["source"] == "test"
        again = load_weights(path)
        for key, value in model.state_dict().items():
            assert torch.equal(value, again.state_dict()[key]), key
    assert sorted(os.listdir(tmp_path)) == sorted([LONG, NOT_UTF8])  # no temporaries left


def test_utf8_name_opens_any_name(tmp_path: Path) -> None:
    path = tmp_path / NOT_UTF8
    path.write_bytes(b"data")
    with utf8_name(path) as name:
        name.encode("utf-8")
        assert Path(name).read_bytes() == b"data"
    with utf8_name(tmp_path / "plain.txt") as name:
        assert name == str(tmp_path / "plain.txt")


def test_a_full_disk_names_the_target_not_its_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Path, "write_bytes", _full_disk)
    with pytest.raises(OSError) as raised:
        atomic_write_text(tmp_path / "out.txt", "x")
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC,
                                                           str(tmp_path / "out.txt"))
    assert os.listdir(tmp_path) == []


def test_a_full_disk_reported_by_safetensors_becomes_enospc(tmp_path: Path) -> None:
    text = ('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
            '"No space left on device" })')
    with pytest.raises(OSError) as raised, atomic_path(tmp_path / "chunk.safetensors"):
        raise SafetensorError(text)
    assert raised.value.errno == errno.ENOSPC
    assert str(raised.value) == f"[Errno 28] No space left on device: " \
                                f"'{tmp_path / 'chunk.safetensors'}'"
    assert isinstance(raised.value.__cause__, SafetensorError)
    with pytest.raises(SafetensorError), atomic_path(tmp_path / "other.safetensors"):
        raise SafetensorError("some other failure")  # not a full disk: passed through
    assert os.listdir(tmp_path) == []


def test_save_weights_on_a_full_disk_raises_oserror(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("llr_pretrain_adv_tiny")
    monkeypatch.setattr(Path, "write_bytes", _full_disk)
    with pytest.raises(OSError, match="No space left on device") as raised:
        save_weights(model, tmp_path / "w.safetensors")
    assert raised.value.filename == str(tmp_path / "w.safetensors")
    assert os.listdir(tmp_path) == []


def test_save_weights_refuses_a_meta_device_model(tmp_path: Path) -> None:
    model = create_model("llr_pretrain_adv_tiny").to("meta")
    with pytest.raises(InputError, match=r"tensor '.*' is on the meta device \(it holds no "
                                         r"values\); load or initialize the model"):
        save_weights(model, tmp_path / "w.safetensors")
    assert os.listdir(tmp_path) == []
