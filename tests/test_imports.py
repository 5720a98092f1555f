"""What the service's modules import: no cycles, and no PyMongo for a SQLite server.

The layers and the independence of the store backends are import-linter
contracts in pyproject.toml (``lint-imports``, run by ``make test``).
import-linter only takes packages, so the search for import cycles across
the whole project, top-level modules (server.py, settings.py, ...) included,
is here.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.support.helpers import ROOT

#: Folders that are not part of the service.
NOT_SERVICE = {"tests", "bench", "examples", "scripts", "static", "docs"}


def service_modules() -> dict[str, Path]:
    """Every module of the service by dotted name (``storage.sqlite.store``), with its file."""
    found: dict[str, Path] = {}
    for path in sorted(Path(ROOT).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[0] in NOT_SERVICE or any(p.startswith(".") or p == "node_modules" for p in parts):
            continue
        # Only real packages: every folder on the way has an __init__.py.
        if not all((Path(ROOT, *parts[:i]) / "__init__.py").exists() for i in range(1, len(parts))):
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[tuple[str, bool]]:
    """The service modules ``name`` imports anywhere in its file, each with whether only for typing."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[tuple[str, bool]] = set()

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for statement in child.body:
                    visit_statement(statement, True)
                for statement in child.orelse:
                    visit_statement(statement, typing_only)
            else:
                visit_statement(child, typing_only)

    def visit_statement(node: ast.AST, typing_only: bool) -> None:
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            # ``from package import module`` imports the module; ``from module import name`` the module.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        found.update((t, typing_only) for t in targets if t in modules and t != name)
        visit(node, typing_only)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                connect(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            connect(module)
    return cycles


def test_the_service_modules_import_each_other_without_cycles():
    modules = service_modules()
    assert {"server", "service", "settings", "storage.sqlite.store", "tracking.tracker"} <= set(modules)
    # Imports inside functions and for type hints only count too: a cycle
    # that is only broken by importing late is still a cycle in what depends
    # on what.
    graph = {
        name: {imported for imported, _ in imports_of(name, path, modules)} for name, path in modules.items()
    }
    assert import_cycles(graph) == []


def test_the_cycle_search_finds_a_cycle_through_a_late_import(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "base.py").write_text("def make():\n    from .impl import Impl\n    return Impl()\n")
    (tmp_path / "pkg" / "impl.py").write_text("from pkg.base import make\n")
    modules = {"pkg": tmp_path / "pkg" / "__init__.py"}
    modules |= {f"pkg.{n}": tmp_path / "pkg" / f"{n}.py" for n in ("base", "impl")}
    graph = {name: {m for m, _ in imports_of(name, path, modules)} for name, path in modules.items()}
    assert import_cycles(graph) == [["pkg.base", "pkg.impl"]]


SQLITE_SERVER = """
import asyncio, sys
import tornado.netutil
import server, settings

async def serve_once(store):
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    service = await server.start(settings.load(["--store=" + store]), sockets)
    await service.shutdown()

asyncio.run(serve_once(sys.argv[1]))
status = server.main(["report", "--store=" + sys.argv[1], "course", "c1"])
print("report exit status", status)
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in {"pymongo", "bson", "motor"}))
"""


def test_a_sqlite_server_and_its_reports_never_import_pymongo(tmp_path):
    """Each backend is imported only when a --store URL names it."""
    result = subprocess.run(
        [sys.executable, "-c", SQLITE_SERVER, f"sqlite:///{tmp_path}/study_time.db"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "report exit status 0" in result.stdout, result.stdout + result.stderr
    assert "loaded: []" in result.stdout, result.stdout
