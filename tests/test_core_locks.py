"""Folder locks: exclusive and shared holders, the holder's line, and no trace when unused."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from llrnet.core.errors import RunError
from llrnet.core.locks import LOCK_FILE, folder_lock, holder_line, read_holder


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    # flock conflicts between two open files even in one process, as between two processes.
    with folder_lock(tmp_path, what="run folder") as path:
        assert path == tmp_path / LOCK_FILE
        line = read_holder(path)
        assert re.fullmatch(rf"pid {os.getpid()} on {re.escape(socket.gethostname())} since "
                            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line)
        refused = rf"^run folder {re.escape(str(tmp_path))} is in use by {re.escape(line)}; wait"
        with pytest.raises(RunError, match=refused), folder_lock(tmp_path, what="run folder"):
            pass
        with pytest.raises(RunError), folder_lock(tmp_path, what="run folder", shared=True):
            pass
    with folder_lock(tmp_path, what="run folder"):  # released
        pass


def test_shared_holders_coexist_and_exclude_an_exclusive_one(tmp_path: Path) -> None:
    with folder_lock(tmp_path, what="x", shared=True), \
            folder_lock(tmp_path, what="x", shared=True), \
            pytest.raises(RunError, match="is in use by pid"), folder_lock(tmp_path, what="x"):
        pass


def test_a_folder_the_lock_created_goes_when_nothing_was_written(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    with folder_lock(target, what="x"):
        assert (target / LOCK_FILE).is_file()
    assert not (tmp_path / "a").exists()
    with folder_lock(target, what="x"):
        (target / "result.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == [LOCK_FILE, "result.json"]
    with folder_lock(target, what="x"):  # an existing folder is never removed
        pass
    assert (target / "result.json").is_file()


def test_an_empty_lock_file_names_another_process(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("")
    assert read_holder(tmp_path / LOCK_FILE) == "another process"
    assert read_holder(tmp_path / "missing") == "another process"
    assert holder_line().startswith(f"pid {os.getpid()} on ")
