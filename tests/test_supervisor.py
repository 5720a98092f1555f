"""``--processes=2``: the supervisor and its workers as real processes, on a FerretDB store.

A worker never outlives its supervisor, and a worker the supervisor restarts
after a SIGHUP verifies with what the reload read, not with what the
supervisor read at start.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys

import jwt

from tests.support.auth_helpers import bearer, claims, public_pem, rsa_key
from tests.support.helpers import (
    FAST,
    ROOT,
    ServerProcess,
    alive,
    children,
    descendants,
    parse_metrics,
    wait_until,
)

STARTED = re.compile(r"started 2 server processes: (\d+) (\d+)")


def server_args(url: str) -> list[str]:
    settings = {**FAST, "heartbeat_interval": 2.0, "heartbeat_timeout": 4.0}
    return [f"--store={url}", *(f"--{k.replace('_', '-')}={v}" for k, v in settings.items())]


def started(server: ServerProcess) -> list[int]:
    """The workers' pids, once both serve."""
    wait_until(lambda: server.log.count("listening on") == 2, 20, "both workers listening")
    return [int(pid) for pid in wait_until(lambda: STARTED.search(server.log), 5, "the pids").groups()]


def test_workers_exit_within_seconds_of_the_supervisor_being_killed(mongo_url):
    server = ServerProcess("--processes=2", *server_args(mongo_url)).start()
    try:
        workers = started(server)
        assert sorted(workers) == sorted(children(server.proc.pid))
        assert server.kill() == -signal.SIGKILL  # the supervisor only: nothing forwards anything
        wait_until(lambda: not any(alive(pid) for pid in workers), 5, "the workers to exit")
        # PR_SET_PDEATHSIG sends them SIGTERM: each shut down gracefully.
        wait_until(lambda: server.log.count("stopped") == 2, 5, "both workers stopped")
        assert "Traceback" not in server.log
    finally:
        server.__exit__()


def signed(key, sub: str = "u1") -> str:
    return jwt.encode(claims(sub), key, algorithm="RS256")


def whoami(conn: http.client.HTTPConnection, token: str) -> int:
    conn.request("GET", "/api/reports/whoami", headers=bearer(token))
    response = conn.getresponse()
    response.read()
    return response.status


def answered_by(conn: http.client.HTTPConnection) -> int:
    """The pid of the worker holding this keep-alive connection (its /metrics says)."""
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    samples = parse_metrics(response.read().decode())
    (info,) = [key for key in samples if key.startswith("study_time_process_info{")]
    return int(re.search(r'pid="(\d+)"', info).group(1))


def test_a_worker_restarted_after_a_reload_verifies_with_the_reloaded_key(mongo_url, tmp_path):
    old, new = rsa_key(), rsa_key()
    keyfile = tmp_path / "jwt-public.pem"
    keyfile.write_bytes(public_pem(old))
    server = ServerProcess(
        "--processes=2",
        *server_args(mongo_url),
        "--auth=jwt",
        "--jwt-algorithms=RS256",
        f"--jwt-public-key-file={keyfile}",
    ).start()
    try:
        victim, survivor = started(server)
        # The key is rotated and every worker reloads it.
        (tmp_path / "next.pem").write_bytes(public_pem(new))
        os.replace(tmp_path / "next.pem", keyfile)
        server.signal(signal.SIGHUP)
        wait_until(lambda: server.log.count("reloaded on SIGHUP") == 2, 10, "both reloads")
        # One worker crashes; the supervisor starts another in its place.
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: server.log.count("listening on") == 3, 20, "the restarted worker")
        workers = set(children(server.proc.pid))
        assert survivor in workers and victim not in workers and len(workers) == 2
        # Each worker, the new one included: the new key works, the old one is refused.
        checked: set[int] = set()
        for _ in range(400):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                pid = answered_by(conn)
                if pid not in checked:
                    assert (whoami(conn, signed(new)), whoami(conn, signed(old))) == (200, 401), pid
                    checked.add(pid)
            finally:
                conn.close()
            if checked == workers:
                break
        assert checked == workers
        server.signal(signal.SIGTERM)
        assert server.wait() == 1  # a worker was lost on the way (docs/operations.md, exit status)
    finally:
        server.__exit__()


WATCHER = """
import asyncio, os, subprocess, sys
if sys.argv[1] == "parent":
    # The stand-in supervisor: starts the watcher, then waits to be killed.
    subprocess.Popen([sys.executable, "-c", sys.argv[2], "worker", str(os.getpid()), sys.argv[2]])
    import time
    time.sleep(60)
else:
    # The stand-in worker, without PR_SET_PDEATHSIG: only the parent-pid check can notice.
    import server

    async def main():
        stop = asyncio.Event()
        print("watching", flush=True)
        await server.watch_supervisor(int(sys.argv[2]), stop)
        print("stopped", flush=True)

    asyncio.run(main())
"""


def test_a_worker_without_pdeathsig_notices_its_supervisor_is_gone_within_seconds(tmp_path):
    """The fallback of supervisor.die_with_parent: server.watch_supervisor polls the parent's pid."""
    out = tmp_path / "out"
    with open(out, "w") as sink:
        parent = subprocess.Popen(
            [sys.executable, "-c", WATCHER, "parent", WATCHER],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "watching" in out.read_text(), 20, "the watcher")
        (watcher,) = descendants(parent.pid)
        parent.kill()
        parent.wait()
        wait_until(lambda: not alive(watcher), 5, "the watcher to exit")
        lines = out.read_text().splitlines()
        assert lines[0] == "watching" and lines[-1] == "stopped", lines
        assert f"the supervisor (pid {parent.pid}) is gone: shutting down" in lines[1]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
