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

from tests.support.browser import POLICY_ENFORCED, WAIT_MS, wait_attached
from tests.support.helpers import ServerProcess, raw_request
from tests.support.seed import COURSE, LEARNERS, seed

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


def installed_static_dir(installed: Path) -> Path:
    return Path(
        subprocess.run(
            [installed / "python", "-c", "import handlers.app; print(handlers.app.STATIC_DIR)"],
            capture_output=True,
            text=True,
            cwd=installed.parent,
            check=True,
        ).stdout.strip()
    )


def files_under(folder: Path) -> set[str]:
    return {
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_every_static_file_is_installed(installed):
    """static/ and its subfolders (vendor/: uPlot and its license), file for file."""
    assert files_under(installed_static_dir(installed)) == files_under(ROOT / "static")


def installed_tokens(installed: Path, path: Path, *args: str) -> str:
    """``study-time tokens create ARGS``, the installed command; returns the token it prints."""
    result = subprocess.run(
        [installed / "study-time", "tokens", "create", *args, "--tokens-file", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=path.parent,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def console_error(message) -> str:
    """A console error with the address it is about; "" for anything else.

    The browser asks for /favicon.ico on its own (the page names no icon):
    that 404 is not the page's.
    """
    url = message.location.get("url", "")
    if message.type != "error" or url.endswith("/favicon.ico"):
        return ""
    return f"{message.text} ({url})"


def test_the_installed_command_serves_each_dashboard_without_a_console_error(installed, tmp_path, browser):
    """The learner's and the teacher's dashboards on seeded records, in Chromium under the server's policy."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    db = tmp_path / "study_time.db"
    seed(str(db))
    path = tmp_path / "tokens.json"
    readers = {
        "learner": (installed_tokens(installed, path, "--user", LEARNERS[0]), "learner-chart"),
        "teacher": (
            installed_tokens(installed, path, "--user", "t1", "--roles", "teacher", "--courses", COURSE),
            "course-chart",
        ),
    }
    with ServerProcess(
        f"--store=sqlite:///{db}",
        "--auth=token",
        f"--tokens-file={path}",
        command=[str(installed / "study-time")],
        cwd=tmp_path,
    ) as server:
        for reader, (token, chart) in readers.items():
            context = browser.new_context(**POLICY_ENFORCED)
            try:
                page = context.new_page()
                page.set_default_timeout(WAIT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
                page.on("console", lambda m, errors=errors: errors.append(console_error(m)))
                page.goto(f"{server.http_url}/?courseId={COURSE}")
                page.fill("#token", token)
                page.click("#tab-reports")
                try:
                    wait_attached(page, '#view-reports[data-state="ok"]')
                    wait_attached(page, '#view-reports[data-busy="0"]')
                    wait_attached(page, f"#{chart} canvas")  # drawn by uPlot, from static/vendor/
                except PlaywrightTimeout:
                    raise AssertionError(f"{reader}: the dashboard was not drawn: {errors}") from None
                assert [e for e in errors if e] == [], reader
            finally:
                context.close()
        assert server.terminate() == 0


def test_the_installed_command_names_itself_in_usage_errors_and_hints(installed, tmp_path):
    command = str(installed / "study-time")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([command, *args], capture_output=True, text=True, timeout=30, cwd=tmp_path)

    help_text = run("--help").stdout
    assert help_text.startswith("usage: study-time ") and "'study-time tokens --help'" in help_text
    assert run("tokens", "--help").stdout.startswith("usage: study-time tokens ")
    assert run("reprot").stderr.strip() == (
        "study-time: error: unknown command 'reprot': the commands are 'report', 'tokens' and"
        f" 'migrate'; settings start with -- (see {command} --help)"
    )
    assert run("--flood-burst=0").stderr.startswith("study-time: error: invalid --flood-burst")
    # The first start, before any token: the log names the command that makes one.
    with ServerProcess(
        f"--store=sqlite:///{tmp_path}/study_time.db",
        "--auth=token",
        command=[command],
        cwd=tmp_path,
    ) as server:
        assert f"(create tokens with: {command} tokens create --user ID --tokens-file data/tokens.json;" in (
            server.log
        )
        assert "server.py" not in server.log
        assert server.terminate() == 0
