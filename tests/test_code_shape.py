"""The size limits a reader can rely on (docs/architecture.md): no production class with more than
12 public methods, no function longer than 60 lines. Branches (at most 15 per function) are ruff's
C901 and PLR0912, configured in pyproject.toml."""

from __future__ import annotations

import ast

from tests.test_imports import service_modules

MAX_PUBLIC_METHODS = 12
MAX_FUNCTION_LINES = 60


def shapes() -> tuple[dict[str, int], dict[str, int]]:
    """Public methods per class and lines per function, over every module of the service."""
    methods: dict[str, int] = {}
    lines: dict[str, int] = {}
    for name, path in service_modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                public = [
                    n
                    for n in node.body
                    if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and not n.name.startswith("_")
                ]
                methods[f"{name}.{node.name}"] = len(public)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines[f"{name}:{node.name}"] = node.end_lineno - node.lineno + 1
    return methods, lines


def test_no_class_has_more_than_12_public_methods():
    methods, _ = shapes()
    assert "service.sessions.SessionCore" in methods
    assert {name: n for name, n in methods.items() if n > MAX_PUBLIC_METHODS} == {}


def test_no_function_is_longer_than_60_lines():
    _, lines = shapes()
    assert "service.sessions:open" in lines
    assert {name: n for name, n in lines.items() if n > MAX_FUNCTION_LINES} == {}
