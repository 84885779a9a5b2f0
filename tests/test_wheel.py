"""The wheel: built offline from a copy of the sources, installed with ``--no-deps`` into a
fresh venv that borrows only the dependencies (torch, ...) of the running one, and run from
a folder outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import llrnet

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "llrnet"

pytestmark = pytest.mark.slow


def _run(command: list[str], cwd: Path, timeout: float = 120) -> str:
    """``command``'s stdout; fails the test (showing stderr) on a non-zero exit."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return done.stdout


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of pyproject.toml, README.md and src/ (so the checkout gets
    no build/ or egg-info), built offline with the installed setuptools."""
    tree = tmp / "tree"
    (tree / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(SOURCE, tree / "src" / "llrnet",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
          "--no-index", "-q", "-w", str(tmp / "dist"), str(tree)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("llrnet-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A new venv with the wheel installed (no dependencies); a ``.pth`` file adds this
    interpreter's site-packages for the dependencies. Its plain path lines are not
    site directories, so their own ``.pth`` files (an editable llrnet's) are not read."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
          "--no-deps", "--no-index", str(wheel)], cwd=tmp)
    site = Path(_run([str(python), "-c", "import sysconfig; "
                      "print(sysconfig.get_paths()['purelib'])"], cwd=tmp).strip())
    dependencies = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    for path in dependencies:
        assert not Path(path).resolve().is_relative_to(SOURCE.parent)
    (site / "llrnet_test_dependencies.pth").write_text("".join(f"{p}\n" for p in dependencies))
    return venv


def test_the_wheel_holds_the_package_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    assert wheel.name.startswith(f"llrnet-{llrnet.__version__}-py3-none-any")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"llrnet-{llrnet.__version__}.dist-info/METADATA").decode()
    modules = {f"llrnet/{p.relative_to(SOURCE).as_posix()}" for p in SOURCE.rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules <= names, sorted(modules - names)
    presets = {f"llrnet/configs/{p.name}" for p in (SOURCE / "configs").glob("*.yaml")}
    assert presets and presets <= names
    assert "llrnet/py.typed" in names
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "scripts")]
    assert f"Version: {llrnet.__version__}\n" in metadata
    assert "Requires-Dist: google-crc32c" in metadata
    assert "Provides-Extra: fast" not in metadata

    venv = _fresh_venv(tmp_path, wheel)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    python, command = str(venv / "bin" / "python"), str(venv / "bin" / "llrnet")
    where = _run([python, "-c", "import llrnet; print(llrnet.__file__, llrnet.__version__)"],
                 cwd=cwd).split()
    assert Path(where[0]).resolve().is_relative_to(venv.resolve())
    assert where[1] == llrnet.__version__
    assert _run([command, "--version"], cwd=cwd).strip() == f"llrnet {llrnet.__version__}"
    assert "llr_pretrain_adv(" in _run([command, "models"], cwd=cwd)
    listed = _run([command, "train", "--list-presets"], cwd=cwd).split()
    assert sorted(listed) == sorted(p.split("/")[-1][:-5] for p in presets)
    out = _run([command, "demo", "--quick", "--out", "demo", "--jobs", "1", "--no-progress"],
               cwd=cwd, timeout=300)
    assert "| llr_adv |" in out
    assert (cwd / "demo" / "report.md").is_file()
