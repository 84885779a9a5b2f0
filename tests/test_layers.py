"""The package's layering is true: every import of every module under ``src/llrnet`` (top
level, inside functions, under ``TYPE_CHECKING``, relative, and ``importlib`` strings) points
down the layer table of ``tests/layer_table.py``, no modules import each other in a circle,
an import inside a function defers an optional or heavy dependency and says so, and
docs/design.md shows the same table."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import llrnet
from layer_table import LAYERS, UNITS

PACKAGE = Path(llrnet.__file__).parent
DESIGN = PACKAGE.parents[1] / "docs" / "design.md"

# The one declared exception: models re-exports create_model from the top-level
# llrnet.pretrained lazily, so `from llrnet.models import create_model` keeps working
# while pretrained=True is decided above both models and hub.
DECLARED_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("llrnet.models", "llrnet.pretrained"):
        "create_model re-exported lazily where users import it",
}

DEFERRED = re.compile(r"#\s*deferred:\s*\S")


@dataclass(frozen=True)
class Import:
    """One import of ``source`` (a module name): ``target`` module, where and how."""

    source: str
    target: str
    line: int
    in_function: bool
    commented: bool  # carries a `# deferred: ...` comment (on it or the line above)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel.with_suffix(".py")).is_file() or (
        PACKAGE.parent / rel / "__init__.py").is_file()


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "..."`` assignments, to resolve ``import_module(NAME)``."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _dynamic_target(call: ast.Call, constants: dict[str, str]) -> str | None:
    """The module named by ``importlib.import_module(...)`` or ``__import__(...)``."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name):
        return constants.get(arg.id, f"<unresolved {arg.id}>")
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = str(arg.values[0].value)  # f"llrnet.cli.{name}": the package it reads from
        return prefix.rstrip(".") or "<unresolved f-string>"
    return "<unresolved expression>"


def _imports_of(path: Path) -> list[Import]:
    source = _module_name(path)
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    return imports_in(path.read_text(), source, package)


def imports_in(text: str, source: str, package: str) -> list[Import]:
    """Every import of module ``source`` (in ``package``) whose code is ``text``."""
    lines = text.splitlines()
    tree = ast.parse(text)
    constants = _string_constants(tree)
    found: list[Import] = []

    def add(target: str, node: ast.stmt | ast.expr, in_function: bool) -> None:
        # the statement's own lines, or the block of comment lines right above it
        span = lines[node.lineno - 1:(node.end_lineno or node.lineno)]
        above = node.lineno - 2
        while above >= 0 and lines[above].strip().startswith("#"):
            span.append(lines[above])
            above -= 1
        found.append(Import(source, target, node.lineno, in_function,
                            any(DEFERRED.search(line) for line in span)))

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, in_function)
            elif isinstance(child, ast.ImportFrom):
                module = child.module or ""
                if child.level:
                    base = package.split(".")[:len(package.split(".")) - (child.level - 1)]
                    module = ".".join([*base, module] if module else base)
                for alias in child.names:
                    full = f"{module}.{alias.name}"
                    add(full if _is_module(full) else module, child, in_function)
            elif isinstance(child, ast.Call):
                target = _dynamic_target(child, constants)
                if target is not None:
                    add(target, child, in_function)
            visit(child, in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(tree, False)
    return found


def _all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in _imports_of(path)]


def unit_of(module: str) -> str:
    """The unit of an llrnet module: its subpackage or top-level module, or ``llrnet``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "llrnet"
    return "cli" if parts[1] == "__main__" else parts[1]


def _layer_of() -> dict[str, int]:
    return {unit: layer for layer, units in LAYERS.items() for unit in units}


IMPORTS = _all_imports()
OURS = [imp for imp in IMPORTS if imp.target.split(".")[0] == "llrnet"]


SAMPLE = """
from typing import TYPE_CHECKING
import importlib
from . import balls
from ..core.errors import UsageError
if TYPE_CHECKING:
    from llrnet.eval import Suite
PROVIDER = "llrnet.hub.pretrained"

def f(name):
    # deferred: heavy
    from llrnet.train import train
    import timm
    importlib.import_module(PROVIDER)
    importlib.import_module(f"llrnet.cli.{name}")
    return __import__("pyautoattack")
"""


def test_the_scan_sees_every_kind_of_import() -> None:
    """The scanner on a hand-made module: relative, TYPE_CHECKING, in-function, importlib."""
    found = {(imp.target, imp.in_function, imp.commented)
             for imp in imports_in(SAMPLE, "llrnet.attacks.sample", "llrnet.attacks")}
    assert found == {
        ("typing", False, False), ("importlib", False, False),
        ("llrnet.attacks.balls", False, False), ("llrnet.core.errors", False, False),
        ("llrnet.eval", False, False),
        ("llrnet.train", True, True), ("timm", True, False),
        ("llrnet.hub.pretrained", True, False), ("llrnet.cli", True, False),
        ("pyautoattack", True, False),
    }
    assert not [imp for imp in IMPORTS if imp.target.startswith("<unresolved")]


def test_every_unit_is_in_the_table_once() -> None:
    listed = [unit for units in LAYERS.values() for unit in units]
    assert len(listed) == len(set(listed))
    assert list(UNITS) == listed
    present = {unit_of(_module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert present <= set(listed), f"units missing from the table: {present - set(listed)}"
    assert set(listed) <= present, set(listed) - present


def _upward(imp: Import, layer: dict[str, int]) -> bool:
    source, target = unit_of(imp.source), unit_of(imp.target)
    return source != target and layer[target] >= layer[source]


def test_units_import_only_lower_layers() -> None:
    layer = _layer_of()
    wrong = sorted({
        f"{imp.source}:{imp.line} -> {imp.target} ({unit_of(imp.source)} layer "
        f"{layer[unit_of(imp.source)]}, {unit_of(imp.target)} layer {layer[unit_of(imp.target)]})"
        for imp in OURS
        if _upward(imp, layer)
        and (imp.source, imp.target) not in DECLARED_EXCEPTIONS})
    assert not wrong, "imports against the layer table:\n" + "\n".join(wrong)


def test_imports_inside_functions_say_what_they_defer() -> None:
    """An import inside a function defers an optional or heavy dependency, with a comment."""
    bare = sorted({f"{imp.source}:{imp.line} imports {imp.target}"
                   for imp in IMPORTS if imp.in_function and not imp.commented
})
    assert not bare, "in-function imports without `# deferred: <why>`:\n" + "\n".join(bare)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module on itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_no_import_circles_between_modules() -> None:
    """Module-level imports (``TYPE_CHECKING`` blocks included) form no circle."""
    edges: dict[str, set[str]] = {}
    for imp in OURS:
        if not imp.in_function and imp.target != imp.source:
            edges.setdefault(imp.source, set()).add(imp.target)
    assert not _cycles(edges)


def test_the_cycle_search_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def render_table() -> str:
    """The layer table as docs/design.md shows it (a Markdown table)."""
    rows = ["| layer | unit | what it is |", "|---|---|---|"]
    rows += [f"| {layer} | `{unit}` | {UNITS[unit]} |"
             for layer, units in LAYERS.items() for unit in units]
    return "\n".join(rows)


def test_design_doc_shows_the_table() -> None:
    assert render_table() in DESIGN.read_text(), "docs/design.md:\n" + render_table()


@pytest.mark.parametrize("unit", [u for units in LAYERS.values() for u in units])
def test_design_doc_tree_names_each_present_unit(unit: str) -> None:
    if unit == "llrnet":
        return
    assert re.search(rf"^\s+{unit}(/|\.py)\s", DESIGN.read_text(), re.MULTILINE), unit
