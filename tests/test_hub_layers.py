"""The hub's inner layers import one way (conversion -> recognition -> formats); the
TensorFlow worker needs nothing but TensorFlow and numpy. The package's layers: test_layers.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import llrnet
from llrnet.hub.conversion import verify

PACKAGE = Path(llrnet.__file__).parent
LAYERS = ("formats", "recognition", "conversion")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (at any depth of the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_downwards(layer: str) -> None:
    above = [f"llrnet.hub.{name}" for name in LAYERS[LAYERS.index(layer) + 1:]]
    above.append("llrnet.hub.importer")
    for path in sorted((PACKAGE / "hub" / layer).glob("*.py")):
        upward = sorted(m for m in _imports(path) if any(m.startswith(a) for a in above))
        assert not upward, f"{path.name} imports {upward}"


def test_formats_need_no_torch_and_no_models() -> None:
    for path in sorted((PACKAGE / "hub" / "formats").glob("*.py")):
        imported = _imports(path)
        assert not {m for m in imported if m.split(".")[0] == "torch"}, path.name
        assert not {m for m in imported if m.startswith("llrnet.models")}, path.name


def test_tf_worker_imports_only_tensorflow_numpy_and_the_standard_library() -> None:
    assert verify.WORKER.is_file()
    roots = {m.split(".")[0] for m in _imports(verify.WORKER)}
    assert roots <= {"__future__", "os", "sys", "numpy", "tensorflow"}, roots
    # it loads in an interpreter where torch and llrnet cannot be imported
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['llrnet'] = None; "
            f"runpy.run_path({str(verify.WORKER)!r}, run_name='worker')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_remote_sits_beside_formats_without_torch() -> None:
    """Fetching knows files and URLs only: no recognition, conversion, importer or torch."""
    above = ("llrnet.hub.recognition", "llrnet.hub.conversion", "llrnet.hub.importer",
             "llrnet.models", "torch")
    paths = sorted((PACKAGE / "hub" / "remote").glob("*.py"))
    assert paths
    for path in paths:
        wrong = sorted(m for m in _imports(path) if m.startswith(above))
        assert not wrong, f"{path.name} imports {wrong}"
