"""`pip install .` makes a working `study-time` command; requirements.txt locks the declared dependencies.

The install test builds the project from a copy of the checkout (setuptools
writes build/ and *.egg-info/ next to the sources) into a fresh virtualenv,
then runs the installed command from another directory: the modules and the
demo page must come from the installation, not the checkout. The new
virtualenv sees the test environment's packages through a .pth file, so
nothing is downloaded (--no-deps, --no-build-isolation) and `pip check` still
proves the declared dependencies are satisfied by the pinned ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.helpers import ServerProcess, raw_request

ROOT = Path(__file__).resolve().parent.parent
NOT_INSTALLED = (
    ".venv",
    ".git",
    "node_modules",
    "data",
    "__pycache__",
    "tests",
    "bench",
    "test-output",
    "build",
)


def declared() -> list[Requirement]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return [Requirement(text) for text in tomllib.load(file)["project"]["dependencies"]]


def pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()  # a pin may carry an environment marker
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def closure(requirements: list[Requirement]) -> set[str]:
    """The names of ``requirements`` and everything they need, as installed here (extras followed)."""
    seen: set[str] = set()
    todo = [(r.name, frozenset(r.extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in seen and not extras:
            continue
        seen.add(key)
        for text in requires(name) or []:
            requirement = Requirement(text)
            environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return seen


def test_requirements_txt_pins_exactly_the_declared_dependencies():
    pins = pinned()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is declared in pyproject.toml but not pinned in requirements.txt"
        assert requirement.specifier.contains(pins[name]), (
            f"requirements.txt pins {name}=={pins[name]}: not {requirement}"
        )
    # Nothing else: the pins are the declared dependencies and what they pull in.
    assert set(pins) == closure(declared())


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv with the project installed by pip; returns its bin/ folder."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_INSTALLED, "*.egg-info"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The test environment's packages (the pinned dependencies, pip and setuptools), without the checkout.
    (Path(site) / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    result = subprocess.run(
        [*pip, "install", "--no-deps", "--no-build-isolation", "--no-index", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=60, cwd=tmp)
    assert check.returncode == 0, check.stdout + check.stderr
    return env_dir / "bin"


def test_the_installed_command_reports_its_version(installed, tmp_path):
    result = subprocess.run(
        [installed / "study-time", "--version"], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert (result.returncode, result.stdout.strip()) == (0, "study-time 0.1.0")
    # The same from the checkout, where the version comes from pyproject.toml.
    here = subprocess.run(
        [sys.executable, "server.py", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert here.stdout == result.stdout


def test_the_installed_command_serves_the_demo_page_and_health(installed, tmp_path):
    command = installed / "study-time"
    with ServerProcess(
        f"--store=sqlite:///{tmp_path}/study_time.db", command=[str(command)], cwd=tmp_path
    ) as server:
        status, headers, body = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status == 200 and b"study-time-client.js" in body
        assert headers["content-security-policy"].startswith("default-src 'none'")
        status, _, body = raw_request(
            server.port, b"GET /study-time-client.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        assert status == 200 and body
        status, _, body = raw_request(server.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status == 200 and json.loads(body) == {"status": "ok"}
        assert server.terminate() == 0
    # Served from the installation: the modules and static/ are in the virtualenv, not the checkout.
    where = subprocess.run(
        [
            installed / "python",
            "-c",
            "import handlers.app, server; print(handlers.app.STATIC_DIR, server.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert str(ROOT) not in where and str(installed.parent) in where
    assert re.search(r"/site-packages/static ", where)
    assert os.path.isfile(where.split()[0] + "/index.html")
