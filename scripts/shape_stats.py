"""Print the package's shape: lines of ``src/``, the longest functions, imports inside
functions, ``__all__`` sizes per package and the share of module docstrings.

Usage: ``python scripts/shape_stats.py [SRC]`` (default ``src``; point it at another
checkout's ``src`` to compare).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def _files(src: Path) -> list[Path]:
    return sorted(src.rglob("*.py"))


def _in_function_imports(tree: ast.Module) -> tuple[int, int]:
    """(all imports inside functions, those of llrnet modules, relative included)."""
    total = ours = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    total += 1
                    ours += any(a.name.startswith("llrnet") for a in inner.names)
                elif isinstance(inner, ast.ImportFrom):
                    total += 1
                    ours += inner.level > 0 or (inner.module or "").startswith("llrnet")
    return total, ours


def main(src: Path) -> None:
    """Print the counts for the Python files under ``src``."""
    lines = nonblank = doc_lines = all_doc_lines = 0
    functions: list[tuple[int, str]] = []
    inside = inside_ours = 0
    exports: dict[str, int] = {}
    for path in _files(src):
        text = path.read_text()
        tree = ast.parse(text)
        lines += len(text.splitlines())
        nonblank += sum(1 for line in text.splitlines() if line.strip())
        doc = ast.get_docstring(tree, clean=False)
        if doc:
            doc_lines += sum(1 for line in doc.splitlines() if line.strip())
        rel = path.relative_to(src)
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                text_of = ast.get_docstring(node, clean=False) or ""
                all_doc_lines += sum(1 for line in text_of.splitlines() if line.strip())
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((length, f"{rel}:{node.lineno} {node.name}"))
        total, ours = _in_function_imports(tree)
        inside += total
        inside_ours += ours
        if path.name == "__init__.py":
            for node in tree.body:
                if isinstance(node, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets) \
                        and isinstance(node.value, ast.List | ast.Tuple):
                    exports[".".join(rel.parent.parts)] = len(node.value.elts)
    print(f"lines of {src}: {lines} ({nonblank} non-blank, {len(_files(src))} files)")
    print(f"module docstrings: {doc_lines} non-blank lines, "
          f"{100 * doc_lines / nonblank:.1f}% of non-blank lines; all docstrings "
          f"{all_doc_lines} lines, {100 * all_doc_lines / nonblank:.1f}%")
    print(f"imports inside functions: {inside} ({inside_ours} of llrnet modules)")
    print("longest functions (lines):")
    for length, name in sorted(functions, reverse=True)[:10]:
        print(f"  {length:4d}  {name}")
    print("__all__ sizes:")
    for package, size in sorted(exports.items()):
        print(f"  {size:4d}  {package}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("src"))
