"""A server the tests start as a child process: its folder, its log, waiting until it answers, stopping it.

FerretDB (``ferretdb.py``) and the test LRS (``lrs.py``) are such servers:
each runs with its data in a temporary folder of its own, logs to a file
there (shown when it fails to start), and is stopped, and its folder
removed, when the tests are done with it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence


class ChildServer:
    """A server process with its data in a temporary folder; ``name`` says which in errors."""

    name = "the server"

    def __init__(self, prefix: str) -> None:
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.proc: subprocess.Popen | None = None
        self.log_path = f"{self.dir}/{prefix.rstrip('-')}.log"

    def launch(self, argv: Sequence[str], ready: Callable[[], bool], timeout: float, **popen) -> None:
        """Start ``argv`` (its output to the log) and wait until ``ready()``, at most ``timeout`` seconds.

        ``RuntimeError`` with the log's end if it exits or does not get ready (then it is stopped).
        """
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, **popen)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log()}")
            if ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        """Terminate it (kill it after 10 s) and remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        """The end of its log (what it said before failing)."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""
