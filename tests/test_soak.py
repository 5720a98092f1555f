"""Soak: thousands of connections churning against a real server for minutes (opt-in).

``make soak`` runs it for 10 minutes; ``SOAK_SECONDS=120 make soak`` for less,
``SOAK_CONNECTIONS`` sets how many connections are kept churning at once
(default 2000). It is skipped by ``make test``.

Each connection opens a session, heartbeats (sometimes too often, sometimes
not at all) for a few seconds and ends one of the ways real ones do: a clean
close, a reset, a FIN without a close frame, a heartbeat timeout; a few are
refused (invalid ids). Every few seconds the server's RSS and open file
descriptors are sampled from /proc. The test asserts that neither grows once
warmed up, that every connection is released at the end, and that nothing
was logged at ERROR.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

import pytest

from tests.support.helpers import ROOT, wait_for
from tests.support.rawws import Closed, RawSocket, close_frame, text

SECONDS = float(os.environ.get("SOAK_SECONDS", "0"))
CONNECTIONS = int(os.environ.get("SOAK_CONNECTIONS", "2000"))
SAMPLE_EVERY = 5.0
#: Growth allowed between the first samples after warm-up and the last ones.
RSS_GROWTH_BYTES = 25 * 1024 * 1024
FD_SLACK = 20
SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]  # more port space than one address gives

pytestmark = pytest.mark.skipif(not SECONDS, reason="opt-in soak test: run `make soak` (SOAK_SECONDS=...)")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class SoakServer:
    """``server.py`` logging to a file: ServerProcess keeps every line in memory and
    needs the INFO "listening" line, while a soak logs at WARNING for minutes."""

    def __init__(self, tmp_path, args: tuple[str, ...]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.args = (f"--port={self.port}", *args)
        self.log_path = tmp_path / "server.log"

    def log(self) -> str:
        return self.log_path.read_text()

    def __enter__(self) -> SoakServer:
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "server.py", *self.args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                assert time.monotonic() < deadline and self.proc.poll() is None, self.log()
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Churn:
    def __init__(self, port: int, stop_at: float) -> None:
        self.port = port
        self.stop_at = stop_at
        self.counts: dict[str, int] = {}
        self.rng = random.Random(1)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    async def worker(self, n: int) -> None:
        source = SOURCES[n % len(SOURCES)]
        while time.monotonic() < self.stop_at:
            try:
                await self.one(source)
            except (Closed, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self.count(f"client_error:{type(exc).__name__}")
                await asyncio.sleep(0.5)

    async def one(self, source: str) -> None:
        rng = self.rng
        fate = rng.random()
        user = "bad user" if fate < 0.02 else f"soak-{rng.randrange(5000)}"
        conn = await RawSocket.upgraded(self.port, user, f"course-{rng.randrange(20)}", source=source)
        try:
            first = await conn.message(timeout=30)
            if first["type"] != "connected":
                self.count(first.get("code", first["type"]))
                return
            if fate < 0.10:  # silent until the server times it out
                code, _ = await conn.until_closed(timeout=30)
                self.count(f"closed:{code}")
                return
            hold = time.monotonic() + rng.uniform(2.0, 20.0)
            while time.monotonic() < hold:
                conn.send(text({"type": "heartbeat", "timestamp": "2026-01-01T00:00:00Z"}))
                reply = await conn.message(timeout=30)
                self.count(reply.get("code") or reply["status"])
                if reply["type"] == "error":  # ended by the server (4408 when it fell behind, 4409)
                    self.count(f"closed:{(await conn.until_closed(timeout=30))[0]}")
                    return
                await asyncio.sleep(rng.choice((0.2, 1.0, 1.0, 1.0)))
            ending = rng.random()
            if ending < 0.4:
                conn.send(close_frame())
                code, _ = await conn.until_closed(timeout=30)
                self.count(f"closed:{code}")
            elif ending < 0.8:
                self.count("reset")
            else:
                self.count("fin")
                conn.close()
        finally:
            conn.reset()


@pytest.mark.gen_test(timeout=SECONDS * 2 + 300)
async def test_soak_no_growth_in_memory_or_file_descriptors(tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the server inherits it
    args = (
        f"--store=sqlite:///{tmp_path}/study_time.db",
        "--log-format=json",
        "--log-level=WARNING",  # INFO would log two lines per session
        "--heartbeat-interval=1",
        "--heartbeat-timeout=5",
        "--min-heartbeat-interval=0.5",
        "--sweep-interval=0.5",
        "--flush-interval=1",
        "--checkpoint-interval=0",
        "--http-idle-timeout=2",
        # Thousands of learners from a few loopback addresses, as from a school's NAT.
        "--max-connections-per-address=0",
    )
    with SoakServer(tmp_path, args) as server:
        pid = server.proc.pid
        fds_at_start = fds(pid)
        started = time.monotonic()
        churn = Churn(server.port, started + SECONDS)
        workers = [asyncio.ensure_future(churn.worker(n)) for n in range(CONNECTIONS)]
        samples: list[tuple[float, int, int]] = []
        while time.monotonic() < churn.stop_at:
            await asyncio.sleep(SAMPLE_EVERY)
            samples.append((time.monotonic() - started, rss(pid), fds(pid)))
            elapsed, r, f = samples[-1]
            print(
                f"soak t={elapsed:.0f}s rss={r / 2**20:.1f}MB fds={f} {json.dumps(churn.counts)}", flush=True
            )
            assert server.proc.poll() is None, server.log()
        await asyncio.gather(*workers)
        await wait_for(
            lambda: fds(pid) <= fds_at_start + FD_SLACK, timeout=60, message="connections released"
        )
        fds_at_end = fds(pid)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0, server.log()

    errors = [e for e in map(json.loads, server.log().splitlines()) if e["level"] in ("ERROR", "CRITICAL")]
    assert errors == []
    # Compare the first fifth after warm-up (the first fifth of the run) with the last fifth.
    steady = samples[len(samples) // 5 :]
    fifth = max(1, len(steady) // 5)
    early_rss = statistics.median(r for _, r, _ in steady[:fifth])
    late_rss = statistics.median(r for _, r, _ in steady[-fifth:])
    early_fds = statistics.median(f for _, _, f in steady[:fifth])
    late_fds = statistics.median(f for _, _, f in steady[-fifth:])
    summary = {
        "seconds": SECONDS,
        "connections": CONNECTIONS,
        "sessions": sum(
            v for k, v in churn.counts.items() if k.startswith("closed") or k in ("reset", "fin")
        ),
        "counts": churn.counts,
        "rss_mb": {
            "early": early_rss / 2**20,
            "late": late_rss / 2**20,
            "max": max(r for _, r, _ in samples) / 2**20,
        },
        "fds": {"start": fds_at_start, "early": early_fds, "late": late_fds, "end": fds_at_end},
    }
    print("soak summary " + json.dumps(summary), flush=True)
    assert late_rss - early_rss <= RSS_GROWTH_BYTES, summary
    assert late_fds <= early_fds * 1.2 + FD_SLACK, summary
    assert churn.counts.get("success", 0) > 0, summary
