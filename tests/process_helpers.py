"""Killing a child process at a chosen moment, for the kill-then-resume tests."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def sigkill_at(child: subprocess.Popen[bytes], marker: Path, *, seconds: float,
               what: str) -> bytes:
    """Wait (at most ``seconds``) until ``child`` creates ``marker``, SIGKILL it and return
    its stderr; fail with ``what`` if the marker never appears, or if the child ended on
    its own instead of by the signal."""
    deadline = time.monotonic() + seconds
    while not marker.exists() and child.poll() is None:
        assert time.monotonic() < deadline, what
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    return err
