"""Test helpers: a real WebSocket client, a real server process, fast settings.

Everything talks over loopback to a real server; nothing here mocks the
service. Waits are for events with bounded timeouts, never bare sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Intervals short enough to run the whole protocol in a fraction of a second.
FAST = dict(
    heartbeat_interval=0.4,
    heartbeat_timeout=0.8,
    min_heartbeat_interval=0.05,
    sweep_interval=0.05,
    flush_interval=0.1,
    checkpoint_interval=0.0,
    shutdown_timeout=3.0,
    flood_rate=0.0,
)


def fast_settings(**overrides) -> Settings:
    settings = replace(Settings(), **{**FAST, **overrides})
    settings.validate()
    return settings


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def heartbeat(timestamp: str | None = None) -> dict:
    return {"type": "heartbeat", "timestamp": timestamp or now_iso()}


class Client:
    """A WebSocket client that reads messages and the close with bounded waits."""

    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn

    @classmethod
    async def connect(
        cls,
        base_url: str,
        user: str | None = "u1",
        course: str | None = "c1",
        *,
        query: str | None = None,
        headers: dict | None = None,
        subprotocols: list[str] | None = None,
        timeout: float = 5.0,
        request_options: dict | None = None,
    ) -> Client:
        """Open the socket; ``request_options`` go to Tornado's ``HTTPRequest`` (e.g. ``validate_cert``)."""
        if query is None:
            parts = []
            if user is not None:
                parts.append(f"userId={user}")
            if course is not None:
                parts.append(f"courseId={course}")
            query = "&".join(parts)
        url = f"{base_url}/api/study-time" + (f"?{query}" if query else "")
        request = HTTPRequest(
            url,
            headers=headers or {},
            connect_timeout=timeout,
            request_timeout=timeout,
            **(request_options or {}),
        )
        conn = await asyncio.wait_for(websocket_connect(request, subprotocols=subprotocols), timeout)
        return cls(conn)

    async def recv(self, timeout: float = 5.0) -> dict | None:
        """The next message as a dict, or None once the connection has closed."""
        message = await asyncio.wait_for(self.conn.read_message(), timeout)
        return None if message is None else json.loads(message)

    async def expect(self, type_: str, timeout: float = 5.0) -> dict:
        message = await self.recv(timeout)
        assert message is not None, f"connection closed ({self.close_code}) while expecting {type_}"
        assert message["type"] == type_, message
        return message

    async def connected(self, timeout: float = 5.0) -> dict:
        return await self.expect("connected", timeout)

    def send(self, message: dict | str | bytes) -> None:
        if isinstance(message, dict):
            message = json.dumps(message)
        self.conn.write_message(message, binary=isinstance(message, bytes))

    async def heartbeat(self, timestamp: str | None = None, timeout: float = 5.0) -> dict:
        self.send(heartbeat(timestamp))
        return await self.expect("heartbeat_response", timeout)

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str | None, list[dict]]:
        """Read until the server closes; return (close code, reason, messages read)."""
        messages = []
        deadline = time.monotonic() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - time.monotonic()))
            if message is None:
                return self.conn.close_code, self.conn.close_reason, messages
            messages.append(message)

    async def close(self, code: int | None = 1000, timeout: float = 5.0, reason: str | None = None) -> None:
        """Close cleanly (a close frame, with no status code if ``code`` is None); wait for the answer."""
        self.conn.close(code, reason)
        await asyncio.wait_for(self._drain(), timeout)

    def drop(self) -> None:
        """Drop the TCP connection without a close frame (a lost network)."""
        self.conn.protocol.stream.close()  # type: ignore[union-attr]

    async def _drain(self) -> None:
        while await self.conn.read_message() is not None:
            pass

    @property
    def close_code(self) -> int | None:
        return self.conn.close_code


async def wait_for(predicate, timeout: float = 5.0, interval: float = 0.01, message: str = "condition"):
    """Poll ``predicate`` (sync or async) until it returns a truthy value, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> tuple[int | None, dict[str, str], bytes]:
    """Send ``data`` as it is (bytes no client library would write) and read the answer.

    Returns the status (None if the server closed without answering), the
    headers (names lower-cased) and the body: read until the server closes,
    the body its Content-Length announces has come, or a 101 head has.
    """
    import socket

    def parse(received: bytes) -> tuple[int, dict[str, str], bytes, bool]:
        head, _, body = received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
        status = int(status_line.split()[1])
        complete = status == 101 or len(body) >= int(headers.get("content-length", "-1"))
        return status, headers, body, complete

    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        while chunk := sock.recv(65536):
            received += chunk
            if b"\r\n\r\n" in received and parse(received)[3]:
                break
    if not received:
        return None, {}, b""
    return parse(received)[:3]


def run_server(
    *args: str, env: dict | None = None, timeout: float = 60, text: bool = True
) -> subprocess.CompletedProcess:
    """Run ``python server.py ARGS`` to completion (start-up errors, CLI subcommands).

    ``text=False`` gives the output as bytes, line ends untranslated (CSV's CRLF).
    """
    return subprocess.run(
        [sys.executable, "server.py", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=text,
        timeout=timeout,
    )


class ServerProcess:
    """``python server.py`` in a real child process, for signal and crash tests."""

    LISTENING = re.compile(r"listening on http://([\d.]+):(\d+)")

    def __init__(
        self,
        *args: str,
        env: dict | None = None,
        umask: int = -1,
        command: list[str] | None = None,
        cwd: str | os.PathLike = ROOT,
    ) -> None:
        """``command`` runs instead of ``python server.py`` (e.g. the installed study-time), in ``cwd``."""
        self.args = args
        self.command = command or [sys.executable, "server.py"]
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.umask = umask  # -1: the test runner's
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 15.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [*self.command, "--port=0", *self.args],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            umask=self.umask,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            self.output.append(line)
            match = self.LISTENING.search(line)
            if match:
                self.port = int(match.group(2))
                self._pump()
                return self
        self.proc.kill()
        raise AssertionError("server did not start:\n" + "".join(self.output) + self._rest())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)  # type: ignore[union-attr]

    def wait(self, timeout: float = 15.0) -> int:
        code = self.proc.wait(timeout)  # type: ignore[union-attr]
        self._reader.join(timeout)
        return code

    def terminate(self, timeout: float = 15.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> int:
        self.signal(signal.SIGKILL)
        return self.wait()

    @property
    def log(self) -> str:
        return "".join(self.output)

    def _pump(self) -> None:
        # Keep reading the output so the child never blocks on a full pipe.
        import threading

        def read() -> None:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                self.output.append(line)

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()

    def _rest(self) -> str:
        try:
            out, _ = self.proc.communicate(timeout=5)  # type: ignore[union-attr]
            return out or ""
        except subprocess.TimeoutExpired:
            return ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        """Kill the server if it still runs, and with ``--processes`` its workers too.

        The workers are found before the supervisor is killed (afterwards they
        are no longer its children); every one is killed and waited for.
        """
        if self.proc is not None and self.proc.poll() is None:
            left = descendants(self.proc.pid)
            self.proc.kill()
            self.proc.wait()
            kill_and_wait(left)


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` in /proc (``Z`` a zombie), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: only its parent has yet to collect it)."""
    return process_state(pid) not in (None, "Z")


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as file:
                found.extend(int(child) for child in file.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: its children, theirs, and so on."""
    found, todo = [], children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children(child))
    return found


def kill_and_wait(pids: list[int], timeout: float = 10.0) -> None:
    """SIGKILL ``pids`` and wait until none of them runs."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout, f"processes {pids} to exit")


def wait_until(predicate, timeout: float = 10.0, message: str = "condition", interval: float = 0.02):
    """:func:`wait_for` for synchronous code: poll ``predicate`` until truthy, within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def scrape(service) -> dict[str, float]:
    """Every sample of /metrics as ``name{label="value"}`` -> value."""
    response = await AsyncHTTPClient().fetch(f"{service.http_url}/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(response.body.decode())


def parse_metrics(text: str) -> dict[str, float]:
    """Every sample of a Prometheus text exposition as ``name{label="value"}`` -> value."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
