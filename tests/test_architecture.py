"""The package's layout stays the architecture (docs/architecture.md): rooms import only
the rooms below them, no import cycles between modules, zarr's private API behind one
adapter module, and no module or room named like a package or a function it holds."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "reprstore"


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def imported_names(path: Path) -> list[str]:
    """Every module an ``import`` statement of ``path`` names, at any depth."""
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
    return out


def test_import_contracts_are_kept() -> None:
    """import-linter's contracts of pyproject.toml: the layers, and torch, zarr and dask
    only in their rooms."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules() -> None:
    """Function-level imports count too (only ``if TYPE_CHECKING:`` imports do not)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("reprstore", exclude_type_checking_imports=True)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert strongly_connected(edges) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_zarr_private_api_only_in_its_adapter() -> None:
    adapter = PACKAGE / "store" / "zarr_internals.py"
    users = [
        str(p.relative_to(ROOT))
        for p in modules()
        if p != adapter
        and any(
            n == "zarr.core" or n.startswith(("zarr.core.", "zarr._")) for n in imported_names(p)
        )
    ]
    assert users == []
    assert any(n.startswith("zarr.core") for n in imported_names(adapter))


def test_no_module_is_named_like_a_package_or_a_function_it_defines() -> None:
    packages = {p.parent.name for p in PACKAGE.rglob("__init__.py")}
    clashes = []
    for p in modules():
        if p.name == "__init__.py":
            continue
        if p.stem in packages:
            clashes.append(f"{p.relative_to(ROOT)} is named like a package")
        tree = ast.parse(p.read_text())
        defined = {
            n.name
            for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        }
        if p.stem in defined:
            clashes.append(f"{p.relative_to(ROOT)} defines {p.stem}()")
    assert clashes == []


def test_no_cross_module_private_imports() -> None:
    """``from reprstore.x import _name`` reaches into another module's insides."""
    found = []
    for p in modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reprstore"):
                # a dunder (__version__) is public; _name is another module's insides
                private = [
                    a.name
                    for a in node.names
                    if a.name.startswith("_") and not a.name.endswith("__")
                ]
                if private:
                    found.append(f"{p.relative_to(ROOT)}: {node.module} {private}")
    assert found == [], "\n".join(found)
