"""A real Learning Record Store for the xAPI tests: Learning Locker's xapi-statements, in memory.

``scripts/ensure-lrs.sh`` (run by ``make test``) installs it from npm into
``tests/lrs/node_modules`` at the versions of ``tests/lrs/package-lock.json``.
This module starts it under Node on a free loopback port (its statements in
memory, its test authority accepting any Basic credential), waits until
``/xAPI/about`` answers, and stops it at the end. :func:`validate` runs
Learning Locker's xapi-validation on statements. Without Node or the
packages the tests skip, except under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request

import pytest

from .child import ChildServer
from .helpers import ROOT

LRS_DIR = os.path.join(ROOT, "tests", "lrs")
LRS_MAIN = os.path.join(LRS_DIR, "node_modules", "xapi-statements", "dist", "index.js")
VALIDATOR = os.path.join(LRS_DIR, "validate.js")
HEADERS = {"X-Experience-API-Version": "1.0.3", "Authorization": "Basic dGVzdDp0ZXN0"}


def unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (the xAPI tests must run under CI)")
    pytest.skip(why)


def node() -> str:
    found = shutil.which("node")
    if found is None:
        unavailable("Node.js is not installed: the xAPI tests need it for the test LRS")
    if not os.path.exists(LRS_MAIN):
        unavailable("the test LRS is not installed (scripts/ensure-lrs.sh, which `make test` runs)")
    return found  # type: ignore[return-value]


class LRS(ChildServer):
    """xapi-statements in a child process, on ``port``; start, pause (SIGSTOP), resume and stop it."""

    name = "the LRS"

    def __init__(self, port: int) -> None:
        super().__init__("lrs-")
        self.port = port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/xAPI/"

    def start(self, timeout: float = 30.0) -> LRS:
        env = {
            **os.environ,
            "EXPRESS_PORT": str(self.port),
            "MODELS_REPO": "memory",
            "STORAGE_REPO": "memory",
            "AUTH_REPO": "test",  # any Basic credential is the test client
            "EVENTS_REPO": "test",  # no Redis
            "EXPRESS_MORGAN_DIRECTORY": os.path.join(self.dir, "access"),
            "WINSTON_CONSOLE_LEVEL": "error",
            "SERVICE_AWAIT_UPDATES": "true",
        }
        self.launch([node(), LRS_MAIN], self.answers, timeout, cwd=self.dir, env=env)
        return self

    def answers(self) -> bool:
        try:
            self.get("about")
            return True
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers (an LRS that hangs)."""
        self.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused LRS could not take the SIGTERM
        super().stop()

    def get(self, path: str) -> dict:
        request = urllib.request.Request(f"{self.endpoint}{path}", headers=HEADERS)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def put(self, statement: dict) -> int:
        """PUT ``statement`` under its id; the status code (204 stored or already there, 409 conflict...)."""
        request = urllib.request.Request(
            f"{self.endpoint}statements?statementId={statement['id']}",
            data=json.dumps(statement).encode(),
            method="PUT",
            headers={**HEADERS, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def statements(self) -> list[dict]:
        """Every statement the LRS holds (all pages)."""
        found: list[dict] = []
        answer = self.get("statements?limit=100")
        while True:
            found += answer["statements"]
            more = answer.get("more")
            if not more:
                return found
            answer = self.get(more.split("/xAPI/", 1)[1])


def validate(statements: list[dict]) -> list[list[str]]:
    """Learning Locker's xapi-validation on each statement: its problems (empty lists when valid)."""
    done = subprocess.run(
        [node(), VALIDATOR],
        input=json.dumps(statements),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)
