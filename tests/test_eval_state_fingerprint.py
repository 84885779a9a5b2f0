"""Evaluation state cannot mix runs: chunks record their place and run, a missing or damaged
manifest is refused, and an output folder is locked against a second process."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from llrnet.core.errors import RunError, UsageError
from llrnet.eval import evaluate
from llrnet.eval.state import RunState
from test_eval_runner import suite, tiny_data, tiny_model, without_times

SRC = str(Path(__file__).resolve().parents[1] / "src")


def other_model() -> nn.Module:
    """The oracle with its sign flipped: wrong on every image the oracle is sure of."""
    model = tiny_model()
    with torch.no_grad():
        model[1].weight.neg_()
    return model


def run(out: Path, model: nn.Module | None = None, **options: object) -> dict:
    return evaluate(model or tiny_model(), suite()[0], tiny_data(), out_dir=out,
                    progress=False, **options)


def test_a_chunk_copied_over_another_attacks_place_is_redone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run(tmp_path / "a")
    run(tmp_path / "b")
    state = tmp_path / "a/state"
    # The case: a valid chunk of `clean` copied over chunk 1 of another attack.
    shutil.copyfile(state / "clean/chunk_00000.safetensors", state / "pgd/chunk_00001.safetensors")
    # And chunk 0 of clean over chunk 2 of clean (right attack, wrong index).
    shutil.copyfile(state / "clean/chunk_00000.safetensors",
                    state / "clean/chunk_00002.safetensors")
    again, attack = suite()
    with caplog.at_level(logging.WARNING, logger="llrnet.eval.state"):
        evaluate(tiny_model(), again, tiny_data(), out_dir=tmp_path / "a", progress=False)
    assert attack._calls == 1  # only the replaced pgd chunk was computed again
    assert "chunk 0 of attack 'clean', not chunk 1 of 'pgd'" in caplog.text
    assert "chunk 0 of attack 'clean', not chunk 2 of 'clean'" in caplog.text
    assert without_times(tmp_path / "a/results.json") == without_times(tmp_path / "b/results.json")


def test_a_chunk_of_another_run_is_redone(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    run(tmp_path / "a")
    run(tmp_path / "b", other_model())
    run(tmp_path / "c")
    # The same place in a run of another model: attack, index and images all match.
    shutil.copyfile(tmp_path / "b/state/clean/chunk_00003.safetensors",
                    tmp_path / "a/state/clean/chunk_00003.safetensors")
    with caplog.at_level(logging.WARNING, logger="llrnet.eval.state"):
        results = run(tmp_path / "a")
    assert "belongs to another run" in caplog.text
    assert results["clean"]["accuracy@100"] == 1.0
    assert without_times(tmp_path / "a/results.json") == without_times(tmp_path / "c/results.json")


def test_chunks_record_the_run_fingerprint(tmp_path: Path) -> None:
    from safetensors import safe_open

    run(tmp_path / "a")
    run(tmp_path / "b", other_model())
    runs = []
    for name in ("a", "b"):
        path = tmp_path / name / "state/clean/chunk_00000.safetensors"
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
        assert meta["attack"] == "clean" and meta["chunk"] == "0"
        runs.append(meta["run"])
    assert len(runs[0]) == 64 and runs[0] != runs[1]


def test_a_deleted_manifest_with_chunks_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "a"
    first = run(out)
    assert first["clean"]["accuracy@100"] == 1.0
    (out / "state/manifest.json").unlink()
    # The case: a rerun with another model must not reuse the first one's chunks.
    with pytest.raises(UsageError, match=r"no manifest\.json.*--restart.*new --out"):
        run(out, other_model())
    restarted = run(out, other_model(), restart=True)
    fresh = run(tmp_path / "b", other_model())
    assert restarted["clean"]["accuracy@100"] == fresh["clean"]["accuracy@100"] < 0.5
    assert without_times(out / "results.json") == without_times(tmp_path / "b/results.json")
    assert (out / "discarded/state/clean/chunk_00000.safetensors").is_file()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_a_damaged_manifest_is_refused(tmp_path: Path, text: str) -> None:
    run(tmp_path)
    (tmp_path / "state/manifest.json").write_text(text)
    with pytest.raises(UsageError) as caught:
        run(tmp_path)
    message = str(caught.value)
    assert "manifest.json is damaged" in message and "--restart" in message
    assert "\n" not in message
    run(tmp_path, restart=True)  # and a restart recovers


def test_a_manifest_without_chunks_is_a_fresh_start(tmp_path: Path) -> None:
    assert not RunState(tmp_path).has_chunks()
    run(tmp_path)
    assert RunState(tmp_path).has_chunks()


HOLD = """
import sys, time
from pathlib import Path
from llrnet.core.locks import folder_lock
folder, name, shared = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "shared"
with folder_lock(folder, what="test", name=name, shared=shared):
    print("held", flush=True)
    time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 60)
"""


def hold(folder: Path, name: str, shared: bool = False,
         seconds: float = 60) -> subprocess.Popen[str]:
    """A second process holding ``folder/name``'s lock until killed (or ``seconds``)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), name,
                              "shared" if shared else "exclusive", str(seconds)],
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": SRC})
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def stop(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait()


def test_a_second_process_on_the_same_attack_is_refused_naming_the_holder(
        tmp_path: Path) -> None:
    child = hold(tmp_path / "state", "pgd.lock")
    try:
        with pytest.raises(RunError, match=rf"attack pgd in .* is in use by pid {child.pid} on "):
            run(tmp_path)
        # Another attack of the suite may run beside it (the demo's workers do).
        evaluate(tiny_model(), suite()[0], tiny_data(), out_dir=tmp_path, progress=False,
                 attacks=["clean"])
        # A restart needs the folder to itself.
        shared = hold(tmp_path, ".llrnet.lock", shared=True)
        try:
            with pytest.raises(RunError, match=rf"in use by pid {shared.pid} "):
                run(tmp_path, restart=True)
        finally:
            stop(shared)
    finally:
        stop(child)
    run(tmp_path)  # the kernel released the killed holder's lock


def test_the_lock_is_released_after_an_error(tmp_path: Path) -> None:
    killed, _ = suite(fail_at=2)
    with pytest.raises(RuntimeError, match="killed"):
        evaluate(tiny_model(), killed, tiny_data(), out_dir=tmp_path, progress=False)
    run(tmp_path)


def test_the_manifest_lock_is_waited_for(tmp_path: Path) -> None:
    # Held only while a manifest is checked or written: a second process starting
    # another attack at the same moment waits for it instead of failing.
    child = hold(tmp_path / "state", ".manifest.lock", seconds=3)
    try:
        run(tmp_path)
        assert child.wait(60) == 0
    finally:
        stop(child)
