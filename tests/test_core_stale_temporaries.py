"""Temporaries left by killed writes are removed by the next run, and only when stale."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from llrnet.core import fileio
from llrnet.core.fileio import STALE_AFTER, atomic_write_text, remove_stale_temporaries
from llrnet.hub.formats.archive import extract_archive

HOST = fileio._HOST


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def touch(path: Path, *, age: float = 0.0, folder: bool = False) -> Path:
    if folder:
        path.mkdir()
        (path / "part").write_bytes(b"x")
        os.utime(path / "part", (time.time() - age,) * 2)
    else:
        path.write_bytes(b"x")
    os.utime(path, (time.time() - age,) * 2)
    return path


def test_what_is_stale(tmp_path: Path) -> None:
    old = STALE_AFTER + 60
    dead, alive = dead_pid(), os.getppid()
    stale = [
        touch(tmp_path / f".results.json.{HOST}-{dead}.abcd1234.tmp"),  # writer gone: at once
        touch(tmp_path / f".old.{HOST}-{alive}.abcd1234.tmp", age=old),  # pid reused? age
        touch(tmp_path / f".old.otherhost-{dead}.abcd1234.tmp", age=old),
        touch(tmp_path / ".old.abcd1234.tmp", age=old),  # an older version's name
        touch(tmp_path / ".0123456789abcdef.abcd_234", age=old, folder=True),  # old hub folder
        touch(tmp_path / f".0123456789abcdef.{HOST}-{dead}.abcd1234.tmp", folder=True),
    ]
    kept = [
        touch(tmp_path / f".x.{HOST}-{alive}.abcd1234.tmp"),  # a live writer here
        touch(tmp_path / f".x.otherhost-{dead}.abcd1234.tmp2"),
        touch(tmp_path / f".y.otherhost-{dead}.abcd1234.tmp"),  # maybe live, elsewhere
        touch(tmp_path / ".x.abcd1234.tmp"),  # young, writer unknown
        touch(tmp_path / f".z.{HOST}-{alive}.abcd1234.tmp", age=old - 120, folder=True),
        touch(tmp_path / ".gitignore", age=old),
        touch(tmp_path / "results.json", age=old),
        touch(tmp_path / ".cache.tmp", age=old),
    ]
    # A folder that changed recently inside is not stale, however old the folder is.
    busy = touch(tmp_path / f".w.{HOST}-{alive}.abcd1234.tmp", age=old, folder=True)
    os.utime(busy / "part")
    kept.append(busy)
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_an_atomic_write_sweeps_its_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                           ) -> None:
    leftover = touch(tmp_path / f".step-00000100.pt.{HOST}-{dead_pid()}.abcd1234.tmp")
    with caplog.at_level("INFO", logger="llrnet.core.fileio"):
        atomic_write_text(tmp_path / "step-00000200.json", "{}")
    assert not leftover.exists() and str(leftover) in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000200.json"]


def test_temporary_names_record_the_writer(tmp_path: Path) -> None:
    seen = []
    with fileio.atomic_path(tmp_path / "a.txt") as tmp:
        seen.append(tmp.name)
        tmp.write_text("x")
    assert seen[0].startswith(f".a.txt.{HOST}-{os.getpid()}.") and seen[0].endswith(".tmp")
    assert fileio._OURS.match(seen[0])


def test_an_extraction_sweeps_the_hub_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    leftover = touch(cache / f".0123456789abcdef.{HOST}-{dead_pid()}.abcd1234.tmp", folder=True)
    (tmp_path / "saved_model.pb").write_bytes(b"x")
    with tarfile.open(tmp_path / "m.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "saved_model.pb", arcname="saved_model.pb")
    extract_archive(tmp_path / "m.tar.gz", cache / "fedcba9876543210")
    assert sorted(p.name for p in cache.iterdir()) == ["fedcba9876543210"]
    assert not leftover.exists()
