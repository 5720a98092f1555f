"""Benchmark the heavy reports: a course leaderboard and a daily breakdown over many sessions.

Not part of ``make test``. Loads N sessions of one course spread over L
learners and D days into a fresh SQLite file and/or a fresh FerretDB
(started on loopback from ``~/go/bin/ferretdb``, or ``--mongodb-url``),
then times the reports through the same ``Reports`` service the HTTP
endpoints use. Prints one line per measurement; docs/reports.md records
the figures.

    .venv/bin/python bench/reports_bench.py --sessions=1000000 --learners=10000
    .venv/bin/python bench/reports_bench.py --stores=mongodb --sessions=100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from zoneinfo import ZoneInfo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from reports.figures import Reports  # noqa: E402
from reports.params import Window  # noqa: E402
from reports.source import Scope  # noqa: E402
from storage.backends import backend_for  # noqa: E402
from tracking.session import SessionRecord  # noqa: E402

START = 1_704_067_200.0  # 2024-01-01T00:00:00Z
COURSE = "course-1"


def sessions(n: int, learners: int, days: int, seed: int = 1):
    """N sessions of 5-120 minutes, at random times (some across midnight), 10% of them open."""
    rng = random.Random(seed)
    for i in range(n):
        start = START + rng.random() * days * 86400
        seconds = rng.uniform(300, 7200)
        still_open = i % 10 == 0
        yield SessionRecord(
            session_id=f"s{i:08d}",
            user_id=f"learner-{rng.randrange(learners):05d}",
            course_id=COURSE,
            started_at=start,
            credited_until=start + seconds,
            seconds=seconds,
            heartbeats=int(seconds // 30),
            rev=2,
            ended_at=None if still_open else start + seconds,
            end_reason=None if still_open else "client_closed",
        )


def batches(iterable, size):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def load(url: str, args) -> float:
    store = backend_for(url).store()
    await store.open()
    began = time.perf_counter()
    try:
        if url.startswith("mongodb"):
            from storage.mongodb.schema import SESSIONS, document_from_record

            collection = store.db[SESSIONS]
            for batch in batches(sessions(args.sessions, args.learners, args.days), 10_000):
                # Plain inserts of the store's own documents: loading, not the upsert path.
                await collection.insert_many(
                    [document_from_record(r, store.process_id) for r in batch], ordered=False
                )
        else:
            for batch in batches(sessions(args.sessions, args.learners, args.days), 50_000):
                await store.save(batch)
    finally:
        await store.close()
    return time.perf_counter() - began


async def measure(url: str, label: str, args) -> None:
    reports = Reports(backend_for(url).report_source())
    tz = ZoneInfo("Asia/Shanghai")
    month = Window(START + 30 * 86400, START + 60 * 86400)
    cases = [
        ("leaderboard, all time, top 100", lambda: reports.course_learners(COURSE, Window(), 100, 0)),
        ("leaderboard, one month, top 100", lambda: reports.course_learners(COURSE, month, 100, 0)),
        (
            "daily, course, all time, Asia/Shanghai",
            lambda: reports.daily(Scope(course_id=COURSE), Window(), tz),
        ),
        (
            "daily, course, one month, Asia/Shanghai",
            lambda: reports.daily(Scope(course_id=COURSE), month, tz),
        ),
        (
            "daily, one learner in the course, all time",
            lambda: reports.daily(Scope("learner-00042", COURSE), Window(), tz),
        ),
    ]
    try:
        for name, run in cases:
            times = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                await run()
                times.append(time.perf_counter() - began)
            print(f"{label}\t{name}\tbest {min(times):.3f}s\tworst {max(times):.3f}s", flush=True)
    finally:
        await reports.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ferretdb(folder: str) -> tuple[subprocess.Popen, str]:
    binary = os.path.expanduser("~/go/bin/ferretdb")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--handler=sqlite",
            f"--sqlite-url=file:{folder}/",
            f"--state-dir={folder}",
            f"--listen-addr=127.0.0.1:{port}",
            "--telemetry=disable",
            "--debug-addr=-",
            "--log-level=error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"mongodb://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("FerretDB did not start")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--learners", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default="sqlite,mongodb")
    parser.add_argument("--mongodb-url", help="a MongoDB server to use instead of starting FerretDB")
    args = parser.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()};"
        f" {args.sessions} sessions, {args.learners} learners, {args.days} days",
        flush=True,
    )
    folder = tempfile.mkdtemp(prefix="reports-bench-")
    try:
        for kind in args.stores.split(","):
            proc = None
            if kind == "sqlite":
                url = f"sqlite:///{folder}/bench.db"
            elif args.mongodb_url:
                url = f"{args.mongodb_url.rstrip('/')}/reports_bench_{os.getpid()}"
            else:
                os.makedirs(f"{folder}/ferretdb")
                proc, server = start_ferretdb(f"{folder}/ferretdb")
                url = f"{server}/reports_bench"
            try:
                print(f"{kind}\tload {args.sessions} sessions\t{await load(url, args):.1f}s", flush=True)
                await measure(url, kind, args)
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
