"""docs/architecture.md's layer diagram is the import graph: it cannot drift from the code.

Every module of the service has a place in the diagram, every import goes
to a lower line (or stays inside its own package), siblings on one line
(``a | b``) do not import each other, and the layers import-linter enforces
(pyproject.toml) appear in the diagram in the same order.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.support.helpers import ROOT
from tests.test_imports import imports_of, service_modules

DOC = Path(ROOT, "docs", "architecture.md")
MARKER = "<!-- layers: checked by tests/test_architecture_doc.py -->"


def diagram() -> list[list[str]]:
    """The diagram's lines, top to bottom, each as its names."""
    text = DOC.read_text()
    block = text.split(MARKER, 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    layers = []
    for line in block.splitlines():
        names = re.match(r"(\S+(?: \| \S+)*)", line)
        assert names, f"not a layer line: {line!r}"
        layers.append(names.group(1).split(" | "))
    return layers


def place(module: str, layers: list[list[str]]) -> tuple[int, str] | None:
    """The line and name that stand for ``module``: the longest name that is it or a package of it."""
    found = [
        (len(name), i, name)
        for i, names in enumerate(layers)
        for name in names
        if module == name or module.startswith(name + ".")
    ]
    return max(found)[1:] if found else None


def test_every_module_has_a_place_and_every_import_goes_down():
    layers = diagram()
    modules = service_modules()
    places = {name: place(name, layers) for name in modules}
    assert [name for name, where in places.items() if where is None] == []
    wrong = []
    for name, path in modules.items():
        line, entry = places[name]  # type: ignore[misc]
        for imported, _ in imports_of(name, path, modules):
            to_line, to_entry = places[imported]  # type: ignore[misc]
            if to_entry != entry and to_line <= line:
                wrong.append(f"{name} ({' | '.join(layers[line])}) imports {imported}")
    assert wrong == []


def test_the_import_linter_layers_are_the_diagrams():
    config = tomllib.loads(Path(ROOT, "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    linted = [layer.split(" | ") for layer in contract["layers"]]
    known = {name for layer in linted for name in layer}
    shown = [names for names in diagram() if known & set(names)]
    assert shown == linted


def test_the_check_finds_an_import_that_runs_back_up(tmp_path):
    layers = [["top"], ["bottom"]]
    assert place("top.x", layers) == (0, "top")
    assert place("bottom", layers) == (1, "bottom")
    assert place("elsewhere", layers) is None
