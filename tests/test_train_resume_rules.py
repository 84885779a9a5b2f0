"""What a resume refuses: a configuration edited since the checkpoint, another CPU thread count,
and a run folder another process holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llrnet.cli import main
from llrnet.core.errors import RunError, UsageError
from llrnet.models import read_metadata
from llrnet.train import load_run_config, train
from test_train_loop import tiny

pytestmark = pytest.mark.usefixtures("one_thread")

SRC = str(Path(__file__).resolve().parents[1] / "src")


def started(out: Path) -> None:
    """A tiny run of 4 steps cut after 2 (one thread, lr 0.05)."""
    result = train(tiny("steps=4"), out, until_step=2, progress=False)
    assert not result.finished


def test_an_edited_config_yaml_is_refused_naming_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    started(out)
    path = out / "config.yaml"
    text = path.read_text()
    assert "  lr: 0.05\n" in text
    path.write_text(text.replace("  lr: 0.05\n", "  lr: 0.5\n"))
    # The case: the edited rate was recorded in final.safetensors, never used.
    with pytest.raises(UsageError, match=r"optim\.lr: 0\.05 -> 0\.5\) than the one "
                                         r".*step-00000002\.pt was trained with"):
        train(load_run_config(out), out, resume=True, progress=False)
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optim.lr: 0.05 -> 0.5" in err
    assert not (out / "final.safetensors").exists()


def test_an_edit_of_a_setting_that_keeps_the_weights_is_applied_and_recorded(
        tmp_path: Path) -> None:
    out = tmp_path / "run"
    started(out)
    path = out / "config.yaml"
    path.write_text(path.read_text().replace("log_every: 2\n", "log_every: 1\n"))
    result = train(load_run_config(out), out, resume=True, progress=False)
    assert result.finished
    assert read_metadata(out / "final.safetensors")["recipe"]["log_every"] == 1


def test_another_thread_count_on_cpu_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    started(out)  # with one thread
    torch.set_num_threads(2)  # the fixture restores the count
    with pytest.raises(UsageError, match=r"with 1 CPU threads and this process has 2; .*"
                                         r"resume with --threads 1"):
        train(tiny("steps=4"), out, resume=True, progress=False)
    torch.set_num_threads(1)
    assert train(tiny("steps=4"), out, resume=True, progress=False).finished


HOLD = """
import sys, time
from llrnet.core.locks import folder_lock
with folder_lock(sys.argv[1], what="test"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_on_the_run_folder_is_refused_naming_the_holder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=rf"run folder .*run is in use by pid {holder.pid} "
                                           r"on .* since \d{4}-\d\d-\d\dT"):
            train(tiny("steps=2"), out, progress=False)
        code = main(["train", "--preset", "digits_standard", "--set", "steps=2", "--out",
                     str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1 and f"pid {holder.pid}" in err
        assert not (out / "metrics.jsonl").exists() and not (out / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    assert train(tiny("steps=2"), out, progress=False).finished  # released with its holder
