"""The shipped systemd unit (deploy/study-time.service) and its environment file example."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import settings as settings_module
from settings import Settings, env_name
from tests.support.helpers import ServerProcess, raw_request, run_server

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "study-time.service"
ENV_EXAMPLE = ROOT / "deploy" / "study-time.env.example"
EXEC_START = re.compile(r"^ExecStart=(\S+)$", re.M)
ENV_LINE = re.compile(r"^#?\s*(STUDY_TIME_[A-Z0-9_]+)=(.*)$", re.M)
NGINX = ROOT / "deploy" / "nginx.conf"


def unit_settings() -> dict[str, str]:
    """The unit's ``Key=value`` lines (the last one wins, as in systemd for these keys)."""
    pairs = (line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"^[A-Z]\w*=", line))
    return dict(pairs)


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(s|min)?", value).groups()
    return float(number) * (60 if unit == "min" else 1)


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        why = "systemd-analyze is not installed (scripts/ensure-nginx.sh installs Debian's systemd as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    # verify checks that ExecStart's program exists; /opt/study-time is where
    # an operator installs it, not this machine. Only that path is replaced
    # (by a real program), everything else is the shipped unit.
    text = UNIT.read_text()
    (command,) = EXEC_START.findall(text)
    assert command == "/opt/study-time/bin/study-time"  # the console script of pyproject.toml
    checked = tmp_path / UNIT.name
    checked.write_text(EXEC_START.sub(f"ExecStart={sys.executable}", text))
    result = subprocess.run(
        [analyze, "verify", str(checked)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    # Unknown keys or bad values are only warnings (exit 0): the output must be empty too.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_unit_restarts_on_failure_and_waits_for_the_graceful_shutdown():
    unit = unit_settings()
    assert unit["Restart"] == "on-failure"
    assert unit["KillSignal"] == "SIGTERM"
    # The supervisor forwards SIGTERM to its workers; systemd signals the main process only.
    assert unit["KillMode"] == "mixed"
    assert unit["EnvironmentFile"] == "/etc/study-time/study-time.env"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # Enough time to close every session and wait --shutdown-timeout for the store, with a margin.
    assert seconds(unit["TimeoutStopSec"]) >= Settings().shutdown_timeout + 10
    assert int(unit["LimitNOFILE"]) >= 65536
    assert unit["User"] == "study-time" and unit["NoNewPrivileges"] == "yes"
    assert unit["ProtectSystem"] == "strict" and unit["PrivateTmp"] == "yes"


def test_the_environment_example_names_every_setting_and_only_real_ones():
    named = ENV_LINE.findall(ENV_EXAMPLE.read_text())
    names = [name for name, _ in named]
    real = {env_name(f.name) for f in fields(Settings)}
    assert sorted(set(names) - real) == [], "names in deploy/study-time.env.example that are no setting"
    assert sorted(real - set(names)) == [], "settings missing from deploy/study-time.env.example"
    # The lines it sets (not commented) are valid settings as they stand.
    text = ENV_EXAMPLE.read_text()
    active = dict(re.findall(r"^(STUDY_TIME_[A-Z0-9_]+)=(.*)$", text, re.M))
    assert "STUDY_TIME_PROCESSES" in active
    settings = settings_module.load([], environ=active)
    assert settings.trust_proxy_headers and settings.store.startswith("mongodb://")


def example_settings() -> dict[str, str]:
    """The lines deploy/study-time.env.example sets (not commented), as systemd reads them."""
    return dict(re.findall(r"^(STUDY_TIME_[A-Z0-9_]+)=(.*)$", ENV_EXAMPLE.read_text(), re.M))


def comment_above(name: str) -> str:
    """The comment lines right above ``NAME=`` in the example."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{name}="))
    above = []
    for line in reversed(lines[:at]):
        if not line.startswith("# ") or line.startswith("# STUDY_TIME_"):
            break
        above.append(line)
    return " ".join(reversed(above))


def test_the_example_as_shipped_refuses_to_start_until_its_secret_is_replaced():
    result = run_server("--port=0", env=example_settings())
    assert result.returncode == 2, result.stderr
    assert "invalid --jwt-secret: this is the placeholder" in result.stderr
    assert "change-me" not in result.stderr  # the value is never echoed


def test_the_example_answers_its_public_name_whatever_the_auth_and_says_so(tmp_path):
    """The Host check applies to every --auth once --allowed-hosts is set: the example's comment says so,
    its name is nginx's server_name, and the example (secret and store replaced) answers that name only."""
    env = example_settings()
    (server_name,) = set(re.findall(r"^\s*server_name\s+(\S+);", NGINX.read_text(), re.M))
    assert env["STUDY_TIME_ALLOWED_HOSTS"] == server_name
    assert env["STUDY_TIME_AUTH"] != "none"
    comment = comment_above("STUDY_TIME_ALLOWED_HOSTS")
    assert "only" not in comment.replace("answers only", ""), comment  # not "needed with none only"
    assert "Whatever STUDY_TIME_AUTH" in comment and "403" in comment
    env |= {
        "STUDY_TIME_JWT_SECRET": "s" * 48,
        "STUDY_TIME_STORE": f"sqlite:///{tmp_path}/study_time.db",
        "STUDY_TIME_PROCESSES": "1",
    }
    with ServerProcess(env=env) as server:
        for host, status in [(server_name, 200), ("127.0.0.1", 200), ("study.other-school.example", 403)]:
            answer, _, body = raw_request(
                server.port, f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
            )
            assert answer == status, (host, body)
        assert server.terminate() == 0
