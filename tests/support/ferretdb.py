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

from pymongo import MongoClient

from .child import ChildServer

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


class FerretDB(ChildServer):
    """A FerretDB child process with its data in a temporary folder."""

    name = "FerretDB"

    def __init__(self, binary: str) -> None:
        super().__init__("ferretdb-")
        self.binary = binary
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> FerretDB:
        argv = [
            self.binary,
            "--handler=sqlite",
            f"--sqlite-url=file:{self.dir}/",
            f"--state-dir={self.dir}",
            f"--listen-addr=127.0.0.1:{self.port}",
            "--telemetry=disable",
            "--debug-addr=-",
            "--log-level=error",
        ]
        self.launch(argv, lambda: answers_ping(self.url), timeout)
        return self


def drop_database(url: str, name: str) -> None:
    """Drop a test database (best effort: the server may already be gone)."""
    client = MongoClient(url, serverSelectionTimeoutMS=2000)
    try:
        client.drop_database(name)
    except Exception:  # cleanup only: the server may already be gone
        pass
    finally:
        client.close()
