"""What one held connection costs in memory, ours against bare Tornado, object by object.

    python bench/conn_memory.py [--conns=2000] [--servers=ours,tornado] [--top=25] [--json=PATH]

Starts each server (not pinned) under ``tracemalloc``, opens a few hundred
connections to warm it up (first-use caches, Tornado's lazy set-up), takes a
snapshot, opens ``--conns`` more with the Node load generator (heartbeating
every 5 s, as the capacity benchmark does), waits until each has heartbeated,
and takes a second snapshot. The difference, divided by the connections
opened in between, is printed three ways:

- bytes per connection by allocation site (tracemalloc, the innermost frame
  in the project or in Tornado/asyncio, so a site reads as "who asked");
- objects and bytes per connection by type (``gc.get_objects``, which sees
  container objects only; str, bytes, int and float are in the sites);
- the process's RSS per connection over the same interval (what
  ``bench/run.py`` reports; tracemalloc's own bookkeeping is not in the
  traced bytes but is in this RSS, so compare RSS across servers only).

The server runs in this same script (``--serve=KIND``), which takes a
snapshot on SIGUSR1 and writes it next to the scratch directory's marker.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import signal
import sys
import time
import tracemalloc
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)

import run as bench  # noqa: E402 - the harness's process and generator helpers

WARM_UP = 300
#: Frames kept per allocation: enough to walk out of the stdlib to whoever asked.
FRAMES = 8


# --- the server side ----------------------------------------------------------------------------


def type_census() -> dict[str, list[int]]:
    """Objects the collector tracks, by type: [count, bytes (sys.getsizeof)]."""
    census: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for obj in gc.get_objects():
        t = type(obj)
        entry = census[f"{t.__module__}.{t.__qualname__}"]
        entry[0] += 1
        entry[1] += sys.getsizeof(obj)
    return dict(census)


def serve(kind: str, out_dir: str, argv: list[str]) -> int:
    taken = [0]

    def snapshot(signum: int, frame: object) -> None:
        taken[0] += 1
        if not tracemalloc.is_tracing():
            # Traced from the first snapshot on: the warm-up runs at full speed, and the
            # second snapshot holds what was allocated since and is still alive.
            tracemalloc.start(FRAMES)
        base = os.path.join(out_dir, f"{kind}-{taken[0]}")
        tracemalloc.take_snapshot().dump(base + ".snapshot")
        with open(base + ".types.tmp", "w") as f:
            json.dump(type_census(), f)
        os.replace(base + ".types.tmp", base + ".types")

    signal.signal(signal.SIGUSR1, snapshot)
    if kind == "ours":
        sys.path.insert(0, ROOT)
        import server

        return server.main(argv)
    import bare_tornado

    sys.argv = ["bare_tornado.py", *argv]
    bare_tornado.main()
    return 0


# --- the driver ---------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * bench.PAGE_KB


def take(child: bench.Child, out_dir: str, kind: str, n: int) -> tuple[tracemalloc.Snapshot, dict, int]:
    rss = rss_kib(child.pid)
    os.kill(child.pid, signal.SIGUSR1)
    base = os.path.join(out_dir, f"{kind}-{n}")
    deadline = time.monotonic() + 120
    while not os.path.exists(base + ".types"):
        if time.monotonic() > deadline or child.proc.poll() is not None:
            raise RuntimeError(f"no snapshot from {kind}; see {child.log.name}")
        time.sleep(0.2)
    with open(base + ".types") as f:
        types = json.load(f)
    return tracemalloc.Snapshot.load(base + ".snapshot"), types, rss


def site(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame that is the project's, Tornado's or asyncio's (else the innermost)."""
    for frame in reversed(traceback):  # a Traceback is oldest first
        name = frame.filename
        if name.startswith(ROOT) and "/.venv/" not in name:
            return f"{os.path.relpath(name, ROOT)}:{frame.lineno}"
        if "/tornado/" in name or "/asyncio/" in name:
            return f"{name[name.rindex('/', 0, name.rindex('/')) + 1 :]}:{frame.lineno}"
    frame = traceback[-1]
    return f"{os.path.basename(frame.filename)}:{frame.lineno}"


def measure(run: bench.Run, kind: str, conns: int, out_dir: str) -> dict[str, Any]:
    port = bench.free_port()
    argv = [str(port)]
    if kind == "ours":
        argv = [
            f"--port={port}",
            f"--store=sqlite:///{run.dir}/ours-{port}.db",
            "--max-connections-per-address=0",
            "--heartbeat-interval=5",
            "--min-heartbeat-interval=2.5",
            "--shutdown-timeout=2",
        ]
    child = bench.Child(
        [bench.PYTHON, os.path.abspath(__file__), f"--serve={kind}", f"--out-dir={out_dir}", "--", *argv],
        log_path=os.path.join(run.dir, f"{kind}-{port}.log"),
    )
    gens = None
    try:
        bench.wait_listening(child, port)
        gens = bench.Loadgens(run, port, mode="hold", count=1, interval=5.0, lifetime=600)
        warm = gens.open(WARM_UP, deadline=120)
        time.sleep(6.0)  # every warm-up connection has heartbeated
        before, types_before, rss_before = take(child, out_dir, kind, 1)
        opened = gens.open(WARM_UP + conns, deadline=300)
        time.sleep(6.0)
        after, types_after, rss_after = take(child, out_dir, kind, 2)
        n = opened["open"] - warm["open"]
    finally:
        if gens is not None:
            gens.stop()
        child.stop()
    sites: collections.Counter[str] = collections.Counter()
    for stat in after.compare_to(before, "traceback"):
        sites[site(stat.traceback)] += stat.size_diff
    by_type = {}
    for name, (count, size) in types_after.items():
        c0, s0 = types_before.get(name, (0, 0))
        if count - c0 > 0.5 * n:  # at least one per two connections
            by_type[name] = {"per_conn": round((count - c0) / n, 2), "bytes": round((size - s0) / n)}
    traced = sum(sites.values())
    return {
        "server": kind,
        "connections": n,
        "traced_bytes_per_conn": round(traced / n),
        "rss_kib_per_conn": round((rss_after - rss_before) / n, 2),
        "sites": {k: round(v / n) for k, v in sites.most_common() if abs(v) / n >= 8},
        "types": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["bytes"])),
    }


def report(results: list[dict], top: int) -> str:
    lines = []
    for r in results:
        lines.append(
            f"\n== {r['server']}: {r['connections']} connections, {r['traced_bytes_per_conn']} traced bytes"
            f" and {r['rss_kib_per_conn']} KiB RSS per connection"
        )
        lines.append("  bytes/conn  allocation site")
        for name, size in list(r["sites"].items())[:top]:
            lines.append(f"  {size:10d}  {name}")
        lines.append("  objs/conn  bytes/conn  type (containers the collector tracks)")
        for name, t in list(r["types"].items())[:top]:
            lines.append(f"  {t['per_conn']:9.2f}  {t['bytes']:10d}  {name}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--servers", default="ours,tornado")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.serve:
        return serve(args.serve, args.out_dir, [a for a in rest if a != "--"])
    run = bench.Run(argparse.Namespace(no_pin=True, keep=False, mongodb=None, quick=False))
    try:
        results = [measure(run, kind, args.conns, run.dir) for kind in args.servers.split(",")]
    finally:
        run.close()
    print(report(results, args.top))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
