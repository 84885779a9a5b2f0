"""``llrnet import-hub`` killed with SIGKILL while writing: nothing at the final path,
and the next run succeeds and removes the dead writer's temporary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub_helpers import FIXTURES
from llrnet.cli import main
from process_helpers import sigkill_at

# Runs the real CLI, but stops for good inside the atomic write of the weights:
# after the bytes are in the temporary file, before the rename.
STOP_WHILE_WRITING = """
import os, sys, time
from pathlib import Path
import llrnet.core.fileio as fileio
def stop(path, **kwargs):
    # The marker appears whole or not at all (the parent reads it as soon as it exists).
    Path(sys.argv[1] + ".part").write_text(str(path))
    os.replace(sys.argv[1] + ".part", sys.argv[1])
    time.sleep(600)
fileio.publish_mode = stop
from llrnet.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_sigkill_while_writing_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "wrn.safetensors"
    marker = tmp_path / "writing"
    args = ["import-hub", str(FIXTURES / "cifar10"), "--arch", "wrn_10_1_softplus",
            "--out", str(out)]
    child = subprocess.Popen([sys.executable, "-c", STOP_WHILE_WRITING, str(marker), *args],
                             env={**os.environ, "OMP_NUM_THREADS": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sigkill_at(child, marker, seconds=120, what="the write never started")
    temporary = Path(marker.read_text())
    assert temporary.is_file() and temporary.parent == tmp_path
    assert not out.exists()

    assert main(args) == 0
    assert out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, marker.name])
