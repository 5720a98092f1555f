"""The study-time benchmarks: our server against bare Tornado and Node `ws`, in one run.

    python bench/run.py [--quick] [--scenarios=capacity,throughput,sweep,store,processes]

Each scenario prints one JSON line on stdout; a table of ours/baseline ratios
goes to stderr, and everything is also written to ``bench/results/``
(``latest-quick.json`` or ``latest-full.json``) for ``bench/plot.py`` and
``docs/performance.md``.

Every server is started by this script, in this run, pinned to the same core
(``taskset -c 1``); the Node load generators run on the other core. Load only
ever targets 127.0.0.1, from source addresses 127.0.0.2 and up. Every child
runs in its own process group and is stopped by its group id; generators also
stop by themselves after a bounded lifetime.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
RESULTS = os.path.join(BENCH, "results")
PYTHON = sys.executable
NODE = shutil.which("node") or "node"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
SERVER_CPU = "1"  # every server and baseline runs on this core when pinned ...
LOADGEN_CPU = "0"  # ... and the load generators on this one.
FERRETDB = os.path.expanduser("~/go/bin/ferretdb")

SERVERS = ("ours", "tornado", "node")
# Seconds a ramp may start new handshakes for; a server that opens slower
# reports fewer connections (and "not_opened") instead of hanging the run.
RAMP_DEADLINE = 90.0


@dataclass
class Profile:
    """How big each scenario is: ``--quick`` (about 5 minutes in all) or full."""

    capacity_stages: list[int]
    capacity_interval: float
    capacity_measure: float
    throughput_conns: int
    throughput_seconds: float
    throughput_repeat: int
    sweep_sessions: int
    processes_conns: int
    # Openings on FerretDB crawl (docs/performance.md): the quick run opens fewer there.
    store_mongodb_conns: int = 2000
    scenarios: tuple[str, ...] = ("capacity", "throughput", "sweep", "store", "processes")


QUICK = Profile(
    # 5,000 for memory per connection and the opening rate, 19,000 for the tail
    # (issue 24's goals, docs/performance.md).
    capacity_stages=[5000, 19000],
    capacity_interval=5.0,
    capacity_measure=10.0,
    throughput_conns=1000,
    throughput_seconds=5.0,
    throughput_repeat=3,
    sweep_sessions=100_000,
    processes_conns=4000,
    store_mongodb_conns=200,
    # Two servers with two processes each, and their ramps, take minutes: full run only.
    scenarios=("capacity", "throughput", "sweep", "store"),
)
FULL = Profile(
    capacity_stages=[1000, 2000, 5000, 10000, 19000],
    capacity_interval=5.0,
    capacity_measure=10.0,
    throughput_conns=1000,
    throughput_seconds=10.0,
    throughput_repeat=3,
    sweep_sessions=100_000,
    processes_conns=38000,
)


# --- processes ----------------------------------------------------------------------------------


def raise_nofile() -> None:
    """In the child: open files up to the hard limit (20,000 here; it cannot be raised)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpus: str | None, argv: Sequence[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


class Child:
    """A process we started, in its own process group, stopped by that group's id."""

    def __init__(self, argv: Sequence[str], *, log_path: str, env: dict | None = None, **kwargs: Any):
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(argv),
            stderr=self.log,
            stdout=kwargs.pop("stdout", self.log),
            start_new_session=True,
            preexec_fn=raise_nofile,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            **kwargs,
        )
        self.pid = self.proc.pid

    def pids(self) -> list[int]:
        """Every live process of this child's group (a server that forks has several)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) == self.pid:  # field 5, pgrp
                    found.append(int(entry))
        return found

    def usage(self) -> tuple[float, int]:
        """(CPU seconds used, RSS in KiB), summed over the group."""
        cpu, rss = 0.0, 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
            rss += int(fields[21]) * PAGE_KB
        return cpu, rss

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        # Children of a forking server may outlive their parent briefly.
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.log.close()


def wait_listening(child: Child, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"server exited with {child.proc.returncode}; see {child.log.name}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server not listening on {port} after {timeout}s; see {child.log.name}")


class Run:
    """One benchmark run: a scratch directory for logs and databases, and the options."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="study-time-bench-")
        self.pin = not args.no_pin
        # Bare Tornado opens 14,000 more in 15-25 s (the quick run's ramp to 19,000).
        self.ramp_deadline = 40.0 if args.quick else RAMP_DEADLINE
        self.servers = args.servers.split(",") if getattr(args, "servers", None) else list(SERVERS)
        self.mongodb_url: str | None = None
        # ours checkpoints every 5 s (server.py's default) unless --ours-arg says otherwise.
        self.flush_interval = 5.0
        for setting in getattr(args, "ours_arg", None) or []:
            if setting.startswith("--flush-interval="):
                self.flush_interval = float(setting.split("=", 1)[1])
        self.ferretdb: Child | None = None

    def start_server(
        self, kind: str, *, mode: str, processes: int = 1, store: str = "sqlite", cpus: str | None = None
    ) -> tuple[Child, int, str | None]:
        """Start ``kind`` on a free port; return it, the port and (ours) its store-stats prefix."""
        port = free_port()
        log_path = os.path.join(self.dir, f"{kind}-{port}.log")
        cpus = cpus if cpus is not None else (SERVER_CPU if self.pin else None)
        stats = None
        env: dict[str, str] = {}
        if kind == "ours":
            stats = os.path.join(self.dir, f"store-{port}")
            env["BENCH_STORE_STATS"] = stats
            if store == "sqlite":
                url = f"sqlite:///{self.dir}/ours-{port}.db"
            else:
                assert self.mongodb_url
                url = self.mongodb_url.rstrip("/") + f"/bench_{port}"
            argv = [PYTHON, os.path.join(BENCH, "ours.py"), f"--port={port}", f"--store={url}"]
            # A slow store must not hold every run's teardown for the default 5 s.
            argv.append("--shutdown-timeout=2")
            # Thousands of connections from a few loopback addresses: no per-address cap.
            argv.append("--max-connections-per-address=0")
            if mode == "hold":
                # Half the interval: a beat answered late must not make the next one too_frequent.
                argv += ["--heartbeat-interval=5", "--min-heartbeat-interval=2.5"]
            else:  # the closed loop: no minimum interval, no flood limit
                argv += ["--min-heartbeat-interval=0", "--flood-rate=0"]
            if processes != 1:
                argv.append(f"--processes={processes}")
            argv += getattr(self.args, "ours_arg", None) or []
        elif kind == "tornado":
            argv = [PYTHON, os.path.join(BENCH, "bare_tornado.py"), str(port), str(processes)]
        elif kind == "node":
            argv = [NODE, os.path.join(BENCH, "node_server.js"), str(port), str(processes)]
        else:
            raise ValueError(kind)
        child = Child(pinned(cpus, argv), log_path=log_path, env=env)
        try:
            wait_listening(child, port)
        except Exception:
            child.stop()
            raise
        return child, port, stats

    def start_ferretdb(self) -> str:
        port = free_port()
        data = os.path.join(self.dir, "ferretdb")
        os.makedirs(data)
        self.ferretdb = Child(
            [
                FERRETDB,
                "--handler=sqlite",
                f"--sqlite-url=file:{data}/",
                f"--state-dir={data}",
                f"--listen-addr=127.0.0.1:{port}",
                "--telemetry=disable",
                "--debug-addr=-",
                "--log-level=warn",
            ],
            log_path=os.path.join(self.dir, "ferretdb.log"),
        )
        wait_listening(self.ferretdb, port)
        return f"mongodb://127.0.0.1:{port}"

    def close(self) -> None:
        if self.ferretdb is not None:
            self.ferretdb.stop()
        if not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


# --- load generators ----------------------------------------------------------------------------


class Loadgens:
    """Several Node load-generator processes, driven in lock step."""

    def __init__(self, run: Run, port: int, *, mode: str, count: int, interval: float, lifetime: float):
        self.children: list[Child] = []
        self.ramp_deadline = run.ramp_deadline
        url = f"ws://127.0.0.1:{port}/api/study-time"
        cpus = LOADGEN_CPU if run.pin else None
        for g in range(count):
            # Eight source addresses per generator: 127.0.0.2-9, 127.0.0.10-17, ...
            sources = [f"127.0.0.{2 + g * 8 + i}" for i in range(8)]
            config = {
                "url": url,
                "mode": mode,
                "interval": interval,
                "sources": sources,
                "prefix": f"p{port}g{g}",
                "concurrency": 50,
                "maxSeconds": lifetime,
            }
            child = Child(
                pinned(cpus, [NODE, os.path.join(BENCH, "loadgen.js"), json.dumps(config)]),
                log_path=os.path.join(run.dir, f"loadgen-{port}-{g}.log"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
            self.children.append(child)
        for child in self.children:
            self._read(child)  # "ready"

    def _read(self, child: Child) -> dict:
        line = child.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"load generator {child.pid} exited; see {child.log.name}")
        return json.loads(line)

    def command(self, per_child: Callable[[int], dict]) -> list[dict]:
        for g, child in enumerate(self.children):
            child.proc.stdin.write(json.dumps(per_child(g)) + "\n")  # type: ignore[union-attr]
            child.proc.stdin.flush()  # type: ignore[union-attr]
        return [self._read(child) for child in self.children]

    def open(self, total: int, deadline: float | None = None) -> dict:
        n = len(self.children)
        deadline = self.ramp_deadline if deadline is None else deadline
        replies = self.command(
            lambda g: {"cmd": "open", "count": total // n + (g < total % n), "deadline": deadline}
        )
        return {
            "open": sum(r["open"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "opened": sum(r["opened"] for r in replies),
            "seconds": max(r["seconds"] for r in replies),
        }

    def measure(self, seconds: float, grace: float = 0.0) -> dict:
        replies = self.command(lambda g: {"cmd": "measure", "seconds": seconds, "grace": grace})
        rtts = sorted(x for r in replies for x in r["rtt_ms"])
        wall = max(r["seconds"] for r in replies)
        codes: dict[str, int] = {}
        for r in replies:
            for code, n in r["close_codes"].items():
                codes[code] = codes.get(code, 0) + n
        lo = min(r["per_conn_min"] for r in replies)
        hi = max(r["per_conn_max"] for r in replies)
        return {
            "seconds": wall,
            "open": sum(r["open"] for r in replies),
            "replies": sum(r["replies"] for r in replies),
            "error_replies": sum(r["error_replies"] for r in replies),
            "skipped": sum(r["skipped"] for r in replies),
            "per_conn_min": lo,
            "per_conn_max": hi,
            "fairness": round(hi / lo, 3) if lo else None,
            "loadgen_cpu": round(sum(r["cpu_seconds"] for r in replies) / wall, 3),
            "close_codes": codes,
            "p50_ms": percentile(rtts, 50),
            "p99_ms": percentile(rtts, 99),
            "samples": len(rtts),
        }

    def stop(self) -> None:
        for child in self.children:
            try:
                child.proc.stdin.write(json.dumps({"cmd": "stop"}) + "\n")  # type: ignore[union-attr]
                child.proc.stdin.flush()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError):
                pass
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(10)
            child.stop()


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return round(sorted_values[index], 2)


def store_stats(prefix: str | None) -> dict[int, dict]:
    """The store-write counters each process of ours has reported so far, by pid."""
    if prefix is None:
        return {}
    found = {}
    directory, base = os.path.split(prefix)
    for name in os.listdir(directory):
        if name.startswith(base + ".") and not name.endswith(".tmp"):
            with open(os.path.join(directory, name)) as f:
                found[int(name.rsplit(".", 1)[1])] = json.load(f)
    return found


def store_rate(prefix: str | None, since: float, until: float, flush_interval: float = 5.0) -> dict:
    """Store writes (records passed to ``Store.save``) during a window, from ours' counters.

    Checkpoints run every ``flush_interval``, so a window of a few seconds
    holds one or two: the rate is the records per checkpoint begun in the
    window divided by the flush interval, and ``max_batch`` (the most records
    in one checkpoint) shows the bound — at most one record per connection
    per flush — directly. A checkpoint may be several saves
    (``Store.save_slice``); ``save_max_s`` is the slowest single save.
    """
    stats = store_stats(prefix)
    checkpoints = [c for s in stats.values() for c in s.get("checkpoints", []) if since <= c[0] <= until]
    saves = [c for s in stats.values() for c in s["saves"] if since <= c[0] <= until]
    if not checkpoints:
        return {"store_writes_per_s": None, "store_max_batch": None, "store_save_max_s": None}
    # Several processes flush independently: per process, records per checkpoint / interval.
    per_process = len(stats) or 1
    records = sum(n for _, n, _ in checkpoints)
    return {
        "store_writes_per_s": round(records / len(checkpoints) * per_process / flush_interval, 1),
        "store_max_batch": max(n for _, n, _ in checkpoints),
        "store_save_max_s": round(max((took for _, _, took in saves), default=0.0), 3),
    }


# --- scenarios ----------------------------------------------------------------------------------


def hold_run(run: Run, kind: str, stages: Sequence[int], *, interval: float, measure: float, **server: Any):
    """Ramp to each stage's connection count and hold it with a heartbeat every ``interval``."""
    child, port, stats = run.start_server(kind, mode="hold", **server)
    gens = None
    try:
        time.sleep(1.0)
        _cpu0, rss0 = child.usage()
        # One generator process per ~10,000 connections (20,000 open files each at most).
        n_gens = max(2, -(-max(stages) // 10_000))
        lifetime = len(stages) * (interval + measure + RAMP_DEADLINE + 40) + 60
        gens = Loadgens(run, port, mode="hold", count=n_gens, interval=interval, lifetime=lifetime)
        points = []
        for target in stages:
            opened = gens.open(target)
            time.sleep(interval)  # every new connection is in its heartbeat rhythm
            cpu_a, _ = child.usage()
            since = time.time()
            m = gens.measure(measure, grace=2.0)
            cpu_b, rss = child.usage()
            points.append(
                {
                    "stage": target,
                    "window": [round(since, 3), round(since + m["seconds"], 3)],
                    "connections": m["open"],
                    "failed": opened["failed"],
                    "not_opened": max(0, target - m["open"]),
                    "conn_per_s": round(opened["opened"] / opened["seconds"], 1)
                    if opened["seconds"]
                    else None,
                    "rss_mb": round(rss / 1024, 1),
                    "rss_per_conn_kb": round((rss - rss0) / max(1, m["open"]), 2),
                    "server_cpu": round((cpu_b - cpu_a) / m["seconds"], 3),
                    "replies_per_s": round(m["replies"] / m["seconds"], 1),
                    **store_rate(stats, since, time.time(), run.flush_interval),
                    **{k: m[k] for k in ("p50_ms", "p99_ms", "fairness", "per_conn_min", "per_conn_max")},
                    **{k: m[k] for k in ("loadgen_cpu", "error_replies", "skipped", "close_codes")},
                }
            )
        return {"rss_idle_mb": round(rss0 / 1024, 1), "points": points}
    finally:
        if gens is not None:
            gens.stop()
        child.stop()


def loop_run(run: Run, kind: str, conns: int, seconds: float, **server: Any) -> dict:
    """``conns`` connections heartbeating in a closed loop for ``seconds``."""
    child, port, stats = run.start_server(kind, mode="loop", **server)
    gens = None
    try:
        n_gens = max(2, -(-conns // 10_000))
        gens = Loadgens(
            run, port, mode="loop", count=n_gens, interval=0, lifetime=seconds + RAMP_DEADLINE + 60
        )
        opened = gens.open(conns)
        gens.command(lambda g: {"cmd": "start"})
        time.sleep(1.0)  # warm up
        cpu_a, _ = child.usage()
        since = time.time()
        m = gens.measure(seconds)
        cpu_b, rss = child.usage()
        time.sleep(0.1)
        return {
            "connections": m["open"],
            "failed": opened["failed"],
            "not_opened": max(0, conns - m["open"]),
            "conn_per_s": round(opened["opened"] / opened["seconds"], 1) if opened["seconds"] else None,
            "replies_per_s": round(m["replies"] / m["seconds"], 1),
            "server_cpu": round((cpu_b - cpu_a) / m["seconds"], 3),
            "rss_mb": round(rss / 1024, 1),
            **store_rate(stats, since, time.time(), run.flush_interval),
            **{k: m[k] for k in ("p50_ms", "p99_ms", "fairness", "per_conn_min", "per_conn_max")},
            **{k: m[k] for k in ("loadgen_cpu", "error_replies", "close_codes")},
        }
    finally:
        if gens is not None:
            gens.stop()
        child.stop()


def ratio(ours: float | None, base: float | None) -> float | None:
    """ours / baseline to three significant digits (None when either is missing)."""
    return float(f"{ours / base:.3g}") if ours is not None and base else None


def scenario_capacity(run: Run, p: Profile) -> dict:
    runs = {
        kind: hold_run(run, kind, p.capacity_stages, interval=p.capacity_interval, measure=p.capacity_measure)
        for kind in run.servers
    }
    last = {kind: r["points"][-1] for kind, r in runs.items()}
    ours = last["ours"]
    result: dict[str, Any] = {
        "scenario": "capacity",
        "connections": ours["connections"],
        "heartbeat_interval_s": p.capacity_interval,
        "ours": {k: v for k, v in ours.items() if k != "close_codes"},
        "ratio": {},
        "targets": {
            "p99_under_50ms": ours["p99_ms"] is not None and ours["p99_ms"] < 50,
            "fairness_under_1.5": ours["fairness"] is not None and ours["fairness"] < 1.5,
        },
        "points": {kind: r["points"] for kind, r in runs.items()},
        "rss_idle_mb": {kind: r["rss_idle_mb"] for kind, r in runs.items()},
    }
    for base in ("tornado", "node"):
        result["ratio"][base] = {
            k: ratio(ours[k], last.get(base, {}).get(k))
            for k in ("rss_per_conn_kb", "server_cpu", "conn_per_s", "p50_ms", "p99_ms", "fairness")
        }
    result["targets"]["rss_per_conn_at_most_1.2x_tornado"] = (
        result["ratio"]["tornado"]["rss_per_conn_kb"] or 9
    ) <= 1.2
    return result


def scenario_throughput(run: Run, p: Profile) -> dict:
    """Closed loop; with repeats the servers alternate, and medians are reported with the spread."""
    samples: dict[str, list[dict]] = {kind: [] for kind in run.servers}
    for _ in range(p.throughput_repeat):
        for kind in run.servers:
            samples[kind].append(loop_run(run, kind, p.throughput_conns, p.throughput_seconds))
    med = {kind: median_run(rs) for kind, rs in samples.items()}
    ours = med["ours"]
    # Each run of ours against the bare Tornado run right after it (they alternate).
    pairs = [
        ratio(o["replies_per_s"], t["replies_per_s"])
        for o, t in zip(samples["ours"], samples.get("tornado", []), strict=False)
    ]
    return {
        "scenario": "throughput",
        "connections": p.throughput_conns,
        "seconds": p.throughput_seconds,
        "repeats": p.throughput_repeat,
        "median": med,
        "spread_replies_per_s": {kind: [r["replies_per_s"] for r in rs] for kind, rs in samples.items()},
        "pair_ratios_tornado": pairs,
        "median_pair_ratio_tornado": statistics.median(x for x in pairs if x is not None)
        if any(pairs)
        else None,
        "ratio": {
            base: {
                k: ratio(ours[k], med.get(base, {}).get(k))
                for k in ("replies_per_s", "p50_ms", "p99_ms", "fairness", "server_cpu")
            }
            for base in ("tornado", "node")
        },
        "targets": {
            "throughput_at_least_1.0x_tornado": ours["replies_per_s"]
            >= med.get("tornado", {}).get("replies_per_s", float("inf")),
            "store_writes_at_most_conns_per_flush_interval": (ours["store_writes_per_s"] or 0)
            <= p.throughput_conns / 5.0,
        },
    }


def median_run(runs: list[dict]) -> dict:
    """The run with the median replies/s (its other figures kept together)."""
    ordered = sorted(runs, key=lambda r: r["replies_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def scenario_sweep(run: Run, p: Profile) -> dict:
    """The tracker's timeout sweep over many sessions, in-process, against a full scan."""
    sys.path.insert(0, ROOT)
    from tracking.tracker import Tracker

    n = p.sweep_sessions
    timeout = 60.0

    def populate(expiring: int) -> Tracker:
        tracker = Tracker(timeout, 0.0)
        for i in range(n):
            # The first `expiring` sessions last heard at t=0, the others at t=30.
            now = 0.0 if i < expiring else 30.0
            tracker.open(f"u{i}", "c", now, session_id=f"s{i}")
        return tracker

    def naive(tracker: Tracker, now: float) -> int:
        """The baseline: a sweep that scans every live session."""
        cutoff = now - timeout
        return sum(1 for s in list(tracker._by_key.values()) if s.credited_until <= cutoff)

    def timed(fn: Callable[[], object], repeat: int) -> float:
        best = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            best.append(time.perf_counter() - t)
        return statistics.median(best)

    tracker = populate(0)
    none_ours = timed(lambda: tracker.expire(61.0), 200)
    none_naive = timed(lambda: naive(tracker, 61.0), 5)
    expire10 = []
    for _ in range(3):
        t10 = populate(n // 10)
        start = time.perf_counter()
        expired = t10.expire(61.0)
        expire10.append(time.perf_counter() - start)
        assert len(expired) == n // 10 and len(t10) == n - n // 10
    naive10 = timed(lambda: naive(populate(n // 10), 61.0), 1)
    small = Tracker(timeout, 0.0)
    for i in range(n // 100):
        small.open(f"u{i}", "c", 30.0, session_id=f"s{i}")
    none_small = timed(lambda: small.expire(61.0), 200)
    ours10 = statistics.median(expire10)
    return {
        "scenario": "sweep",
        "sessions": n,
        "ours": {
            "nothing_expiring_us": round(none_ours * 1e6, 2),
            "nothing_expiring_us_at_1pct_sessions": round(none_small * 1e6, 2),
            "ten_percent_expiring_ms": round(ours10 * 1e3, 2),
            "per_expired_session_us": round(ours10 / (n // 10) * 1e6, 3),
        },
        "full_scan": {
            "nothing_expiring_us": round(none_naive * 1e6, 2),
            "ten_percent_expiring_ms": round(naive10 * 1e3, 2),
        },
        "ratio": {"full_scan": {"nothing_expiring": ratio(none_ours, none_naive)}},
        "targets": {
            # Touching only expiring sessions: the idle sweep does not grow with the live count.
            "sweep_touches_only_expiring": none_ours < 10 * max(none_small, 1e-6)
        },
    }


def mongodb_ready(run: Run) -> str | None:
    """Why the MongoDB scenarios cannot run, or None once a MongoDB URL is ready."""
    if run.mongodb_url:
        return None
    if not os.path.exists(os.path.join(ROOT, "storage", "mongodb", "store.py")):
        return "the MongoDB store (issue 4, storage/mongodb/store.py) is not on this branch yet"
    if run.args.mongodb:
        run.mongodb_url = run.args.mongodb
        return None
    if not os.access(FERRETDB, os.X_OK):
        return f"no FerretDB at {FERRETDB} (make ferretdb builds it)"
    run.mongodb_url = run.start_ferretdb()
    return None


def scenario_store(run: Run, p: Profile, throughput: dict | None) -> dict:
    result: dict[str, Any] = {"scenario": "store", "connections": p.throughput_conns, "flush_interval_s": 5.0}
    bound = p.throughput_conns / 5.0
    if throughput is None:  # run on its own: measure SQLite here
        sqlite = loop_run(run, "ours", p.throughput_conns, p.throughput_seconds)
        tornado = loop_run(run, "tornado", p.throughput_conns, p.throughput_seconds)
    else:  # the throughput scenario's run of ours is the SQLite one
        sqlite, tornado = throughput["median"]["ours"], throughput["median"].get("tornado", {})
    keys = ("connections", "not_opened", "conn_per_s", "replies_per_s", "p50_ms", "p99_ms")
    keys += ("store_writes_per_s", "store_max_batch", "store_save_max_s")
    result["sqlite"] = pick(sqlite, *keys)
    why = mongodb_ready(run)
    if why:
        result["mongodb"] = {"skipped": why}
    else:
        mongo = loop_run(run, "ours", p.store_mongodb_conns, p.throughput_seconds, store="mongodb")
        result["mongodb"] = pick(mongo, *keys)
    result["bound_writes_per_s"] = bound
    result["ratio"] = {
        "tornado": {
            store: ratio(result[store].get("replies_per_s"), tornado.get("replies_per_s"))
            for store in ("sqlite", "mongodb")
        },
        "writes_per_heartbeat": {
            store: ratio(result[store].get("store_writes_per_s"), result[store].get("replies_per_s"))
            for store in ("sqlite", "mongodb")
        },
    }
    result["targets"] = {
        store: result[store]["store_writes_per_s"] <= bound
        for store in ("sqlite", "mongodb")
        if result[store].get("store_writes_per_s") is not None  # None: no save finished in the window
    }
    return result


def pick(d: dict, *keys: str) -> dict:
    return {k: d.get(k) for k in keys}


def scenario_processes(run: Run, p: Profile) -> dict:
    result: dict[str, Any] = {"scenario": "processes", "processes": 2}
    why = mongodb_ready(run)
    if why is None:
        helptext = subprocess.run(
            [PYTHON, "server.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout
        if "--processes" not in helptext:
            why = "server.py has no --processes setting yet (issue 4)"
    if why:
        result["skipped"] = why
        return result
    # Two server processes need both cores: nothing is pinned here.
    runs: dict[str, Any] = {}
    for kind in ("ours", "tornado"):
        store = {"store": "mongodb"} if kind == "ours" else {}
        capacity = hold_run(
            run,
            kind,
            [p.processes_conns],
            interval=p.capacity_interval,
            measure=p.capacity_measure,
            processes=2,
            cpus="0,1",
            **store,
        )["points"][-1]
        throughput = loop_run(
            run, kind, p.throughput_conns, p.throughput_seconds, processes=2, cpus="0,1", **store
        )
        runs[kind] = {"capacity": capacity, "throughput": throughput}
    result["connections"] = runs["ours"]["capacity"]["connections"]
    result["ours"] = runs["ours"]
    result["tornado"] = runs["tornado"]
    result["ratio"] = {
        "tornado": {
            "capacity_p99_ms": ratio(
                runs["ours"]["capacity"]["p99_ms"], runs["tornado"]["capacity"]["p99_ms"]
            ),
            "rss_per_conn_kb": ratio(
                runs["ours"]["capacity"]["rss_per_conn_kb"], runs["tornado"]["capacity"]["rss_per_conn_kb"]
            ),
            "replies_per_s": ratio(
                runs["ours"]["throughput"]["replies_per_s"], runs["tornado"]["throughput"]["replies_per_s"]
            ),
        }
    }
    return result


# --- main ---------------------------------------------------------------------------------------


def machine() -> dict:
    info = {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/meminfo") as f:
            info["memory_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, StopIteration):
        pass
    info["node"] = subprocess.run(
        [NODE, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    import tornado

    info["tornado"] = tornado.version
    info["open_files_hard_limit"] = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    info["loadavg_at_start"] = os.getloadavg()
    return info


#: The capacity stage memory per connection and the opening rate are judged at (issue 24).
GOAL_STAGE = 5000
#: The goals of issue 24 against bare Tornado (docs/performance.md): (label, goal text, test).
GOALS = (
    ("closed-loop replies/s (median of paired runs)", ">= 1.5x", lambda x: x >= 1.5),
    ("RSS per held connection at 5,000", "<= 1.0x", lambda x: x <= 1.0),
    ("opening rate while ramping to 5,000", ">= 1.0x", lambda x: x >= 1.0),
    ("p99 round trip at the last capacity stage", "< 10 ms", lambda x: x < 10),
)


def goals(results: list[dict]) -> list[tuple[str, str, str, bool | None]]:
    """The four figures against bare Tornado from this run: (figure, value, goal, met)."""
    by_name = {r["scenario"]: r for r in results if "skipped" not in r}
    capacity, throughput = by_name.get("capacity"), by_name.get("throughput")
    values: list[tuple[float | None, str]] = [(None, "not run")] * 4
    if throughput is not None:
        x = throughput.get("median_pair_ratio_tornado")
        pairs = ", ".join(f"{r}" for r in throughput.get("pair_ratios_tornado", []))
        med = throughput["median"]
        ours, bare = (med.get(k, {}).get("replies_per_s", 0) for k in ("ours", "tornado"))
        # Per CPU second too: on a shared machine a server does not always get its whole core.
        per_cpu = ratio(
            ours / (med["ours"].get("server_cpu") or 1),
            bare / (med.get("tornado", {}).get("server_cpu") or 1),
        )
        values[0] = (
            x,
            f"{x}x ({pairs}; {ours:.0f} vs {bare:.0f} /s at {throughput['connections']};"
            f" per CPU second x{per_cpu})",
        )
    if capacity is not None:
        points = capacity["points"]
        # Memory and openings at the 5,000 stage (the last one if the run had none),
        # the tail at the last stage.
        at = next((i for i, x in enumerate(points["ours"]) if x.get("stage") == GOAL_STAGE), -1)
        o, t = points["ours"][at], (points.get("tornado") or [{}] * len(points["ours"]))[at]
        rss, rate = (
            ratio(o["rss_per_conn_kb"], t.get("rss_per_conn_kb")),
            ratio(o["conn_per_s"], t.get("conn_per_s")),
        )
        values[1] = (
            rss,
            f"{rss}x ({o['rss_per_conn_kb']} vs {t.get('rss_per_conn_kb')} KiB at {o['connections']})",
        )
        values[2] = (
            rate,
            f"{rate}x ({o['conn_per_s']} vs {t.get('conn_per_s')} /s, ramp to {o['connections']})",
        )
        o, t = capacity["ours"], (points.get("tornado") or [{}])[-1]
        checkpoints = (
            f"checkpoints in the window: {o['store_writes_per_s']} records/s,"
            f" up to {o['store_max_batch']} a flush"
            if o.get("store_max_batch")
            else "no checkpoint in the window"
        )
        values[3] = (
            o["p99_ms"],
            f"{o['p99_ms']} ms at {o['connections']} (bare Tornado {t.get('p99_ms')} ms; {checkpoints})",
        )
    return [
        (label, text, goal, None if value is None else bool(test(value)))
        for (label, goal, test), (value, text) in zip(GOALS, values, strict=True)
    ]


def goals_table(results: list[dict]) -> str:
    lines = ["", "against bare Tornado, this run (goals: docs/performance.md)"]
    for label, text, goal, met in goals(results):
        verdict = "n/a" if met is None else ("met" if met else "MISSED")
        lines.append(f"  {label:<46} {text:<58} goal {goal:<8} {verdict}")
    return "\n".join(lines)


def summary(results: list[dict]) -> str:
    lines = ["", "study-time benchmark: ours / baseline (bare Tornado; Node ws)"]
    for r in results:
        name = r["scenario"]
        if "skipped" in r:
            lines.append(f"  {name:<11} skipped: {r['skipped']}")
            continue
        if name == "capacity":
            o, t, n = r["ours"], r["ratio"]["tornado"], r["ratio"]["node"]
            lines.append(
                f"  capacity    {o['connections']} conns: p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms"
                f" (x{t['p99_ms']} tornado, x{n['p99_ms']} node), fairness {o['fairness']},"
                f" RSS/conn {o['rss_per_conn_kb']} KiB (x{t['rss_per_conn_kb']} tornado,"
                f" x{n['rss_per_conn_kb']} node), cpu {o['server_cpu']}, {o['conn_per_s']} conn/s"
            )
        elif name == "throughput":
            m = r["median"]
            lines.append(
                f"  throughput  {m['ours']['replies_per_s']:.0f} replies/s"
                f" (x{r['ratio']['tornado']['replies_per_s']} tornado {m['tornado']['replies_per_s']:.0f},"
                f" x{r['ratio']['node']['replies_per_s']} node {m['node']['replies_per_s']:.0f}),"
                f" p99 {m['ours']['p99_ms']} ms (tornado {m['tornado']['p99_ms']}), fairness"
                f" {m['ours']['fairness']} (tornado {m['tornado']['fairness']}); loadgen cpu"
                f" {m['ours']['loadgen_cpu']}/{m['tornado']['loadgen_cpu']}/{m['node']['loadgen_cpu']}"
            )
        elif name == "sweep":
            o = r["ours"]
            lines.append(
                f"  sweep       {r['sessions']} sessions: {o['nothing_expiring_us']} us with nothing expiring"
                f" (full scan x{r['ratio']['full_scan']['nothing_expiring']}),"
                f" {o['ten_percent_expiring_ms']} ms with 10% expiring"
            )
        elif name == "store":
            parts = []
            for store in ("sqlite", "mongodb"):
                s = r[store]
                if "skipped" in s:
                    parts.append(f"{store} skipped")
                elif s["store_writes_per_s"] is None:
                    parts.append(
                        f"{store}: no save finished in the window ({s['connections']} connections opened,"
                        f" {s['replies_per_s']:.0f} replies/s)"
                    )
                else:
                    parts.append(
                        f"{store} {s['store_writes_per_s']} writes/s at {s['replies_per_s']:.0f} replies/s"
                    )
            lines.append(f"  store       {'; '.join(parts)} (bound {r['bound_writes_per_s']:.0f}/s)")
        elif name == "processes":
            lines.append(f"  processes   {json.dumps(r['ratio'])}")
        if r.get("targets"):
            missed = [k for k, ok in r["targets"].items() if not ok]
            lines.append(
                f"              targets: {'all met' if not missed else 'MISSED ' + ', '.join(missed)}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, about 5 minutes in all")
    parser.add_argument("--scenarios", help="comma-separated; default all (the quick run skips processes)")
    parser.add_argument("--servers", help="only these of ours,tornado,node (ratios need all three)")
    parser.add_argument("--stages", help="capacity stages, e.g. 1000,19000 (overrides the profile)")
    parser.add_argument("--mongodb", help="mongodb:// URL to use instead of starting FerretDB")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and generators to cores")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, databases)")
    parser.add_argument("--output", help="results file (default bench/results/latest-{quick,full}.json)")
    parser.add_argument(
        "--ours-arg",
        action="append",
        default=[],
        metavar="SETTING",
        help="an extra server.py setting for ours, e.g. --ours-arg=--flush-interval=60 (repeatable)",
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.stages:
        profile.capacity_stages = [int(x) for x in args.stages.split(",")]
    wanted = args.scenarios.split(",") if args.scenarios else list(profile.scenarios)
    run = Run(args)
    results: list[dict] = []
    started = time.time()
    try:
        for name in ("capacity", "throughput", "sweep", "store", "processes"):
            if name not in wanted:
                continue
            t = time.monotonic()
            if name == "capacity":
                r = scenario_capacity(run, profile)
            elif name == "throughput":
                r = scenario_throughput(run, profile)
            elif name == "sweep":
                r = scenario_sweep(run, profile)
            elif name == "store":
                tp = next((x for x in results if x["scenario"] == "throughput"), None)
                r = scenario_store(run, profile, tp)
            else:
                r = scenario_processes(run, profile)
            r["elapsed_s"] = round(time.monotonic() - t, 1)
            results.append(r)
            print(json.dumps(r), flush=True)
    finally:
        run.close()
    os.makedirs(RESULTS, exist_ok=True)
    out = args.output or os.path.join(RESULTS, f"latest-{'quick' if args.quick else 'full'}.json")
    with open(out, "w") as f:
        json.dump(
            {
                "started": started,
                "profile": "quick" if args.quick else "full",
                "machine": machine(),
                "results": results,
            },
            f,
            indent=1,
        )
    try:
        print(summary(results), file=sys.stderr)
    except KeyError:
        print("(no ratio table: it needs all three servers)", file=sys.stderr)
    try:
        print(goals_table(results), file=sys.stderr)
    except KeyError:
        print("(no goals table: it needs ours and bare Tornado)", file=sys.stderr)
    print(f"results written to {os.path.relpath(out)} ({time.time() - started:.0f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
