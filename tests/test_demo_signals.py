"""``llrnet demo --jobs 2``'s workers die with their parent: on SIGTERM (the parent stops them)
and on SIGKILL (PR_SET_PDEATHSIG); the resource tracker goes with them. The workers' tasks are
replaced by sleeps, so nothing is trained."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")

SCRIPT = '''
import os, sys, time
from pathlib import Path
import llrnet.demo.run as run


def sleeper(task, out, quick, progress, seed):
    (out / f"worker-{os.getpid()}").write_text("")
    time.sleep(600)


if __name__ == "__main__":
    run._run_task = sleeper
    run._run_tasks(["a", "b"], Path(sys.argv[1]), True, False, 2, 1, 0)
'''

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, or a gone process, is dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(condition: object, seconds: float) -> bool:
    """Poll ``condition()`` until true or ``seconds`` passed (a hang guard)."""
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return bool(condition())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_workers_and_resource_tracker_die_with_the_parent(tmp_path: Path, signum: int) -> None:
    script = tmp_path / "demo_sleeps.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(out)],
                              env={**os.environ, "PYTHONPATH": SRC},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    family: list[int] = []
    try:
        assert wait_for(lambda: len(list(out.glob("worker-*"))) == 2, 300), "no workers"
        workers = {int(p.name.split("-")[1]) for p in out.glob("worker-*")}
        family = children_of(parent.pid)
        assert workers <= set(family) and len(family) >= 3  # the workers and the tracker
        parent.send_signal(signum)
        code = parent.wait(120)
        assert code == (128 + signum if signum == signal.SIGTERM else -signum)
        assert wait_for(lambda: not any(alive(pid) for pid in family), 60), \
            [pid for pid in family if alive(pid)]
        if signum == signal.SIGTERM:
            assert parent.stderr is not None
            assert "stopping the worker processes" in parent.stderr.read()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in family:  # never leave one behind, whatever failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
