"""A real MongoDB-compatible server for the tests: FerretDB 1.24 on SQLite, or $STUDY_TIME_TEST_MONGODB_URL.

``scripts/ensure-ferretdb.sh`` (run by ``make test``) builds the binary once;
this module starts it on a free loopback port with its data in a temporary
folder, waits until it answers ``ping``, and stops it at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from pymongo import MongoClient

URL_ENV = "STUDY_TIME_TEST_MONGODB_URL"
HOW_TO_ENABLE = (
    "MongoDB store tests need FerretDB (run scripts/ensure-ferretdb.sh, which `make test` does;"
    " or set FERRETDB_BIN) or a MongoDB server (set STUDY_TIME_TEST_MONGODB_URL=mongodb://host:port)"
)


def find_binary() -> str | None:
    candidates = [
        os.environ.get("FERRETDB_BIN"),
        shutil.which("ferretdb"),
        os.path.join(go_path(), "bin", "ferretdb"),
    ]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    return None


def go_path() -> str:
    """Where ``scripts/ensure-ferretdb.sh`` puts the binary: ``$(go env GOPATH)``, else ~/go."""
    go = shutil.which("go")
    if go:
        try:
            out = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True, timeout=20).stdout
            if out.strip():
                return out.strip().split(os.pathsep)[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return os.path.expanduser("~/go")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers_ping(url: str, timeout: float = 1.0) -> bool:
    client = MongoClient(url, serverSelectionTimeoutMS=int(timeout * 1000), connectTimeoutMS=1000)
    try:
        client.admin.command("ping")
        return True
    except Exception:
        return False
    finally:
        client.close()


class FerretDB:
    """A FerretDB child process with its data in a temporary folder."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="ferretdb-")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.dir, "ferretdb.log")

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> FerretDB:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--handler=sqlite",
                    f"--sqlite-url=file:{self.dir}/",
                    f"--state-dir={self.dir}",
                    f"--listen-addr=127.0.0.1:{self.port}",
                    "--telemetry=disable",
                    "--debug-addr=-",
                    "--log-level=error",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"FerretDB exited at start:\n{self.log()}")
            if answers_ping(self.url):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"FerretDB did not answer ping within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


def drop_database(url: str, name: str) -> None:
    """Drop a test database (best effort: the server may already be gone)."""
    client = MongoClient(url, serverSelectionTimeoutMS=2000)
    try:
        client.drop_database(name)
    except Exception:  # cleanup only: the server may already be gone
        pass
    finally:
        client.close()
