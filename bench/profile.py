"""Profile our server under load with py-spy: where does the time go?

    python bench/profile.py --mode=loop --conns=2000 --seconds=10 [--out=profile.txt]
    python bench/profile.py --mode=open --conns=5000

Starts ours (pinned like in bench/run.py) with the Node load generators, and
records it with ``py-spy record --format raw`` (collapsed stacks); prints the
functions with the most own and cumulative samples. ``--mode=open`` records
the openings themselves (the ramp to ``--conns``) instead of the heartbeats.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as bench  # the harness's process and generator helpers


def record(pid: int, raw: str, seconds: float) -> subprocess.Popen:
    """Start py-spy on ``pid`` for ``seconds``, writing collapsed stacks to ``raw``."""
    return subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--format",
            "raw",
            "--output",
            raw,
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("loop", "hold", "open"), default="loop")
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--kind", default="ours", choices=bench.SERVERS[:2])
    parser.add_argument("--out", default=os.path.join(bench.RESULTS, "profile.txt"))
    args = parser.parse_args()
    run = bench.Run(argparse.Namespace(no_pin=False, keep=False, mongodb=None, quick=False))
    opening = args.mode == "open"
    child, port, _ = run.start_server(args.kind, mode="hold" if opening else args.mode)
    gens = None
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    raw = args.out + ".raw"
    try:
        gens = bench.Loadgens(
            run,
            port,
            mode="hold" if opening else args.mode,
            count=2,
            interval=5.0,
            lifetime=args.seconds + 120,
        )
        if opening:
            spy = record(child.pid, raw, 600)  # stopped below, once every connection is open
            time.sleep(1.0)  # py-spy attached
            opened = gens.open(args.conns)
            spy.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            spy.wait(60)
            print(
                {k: opened[k] for k in ("open", "failed", "seconds")},
                f"{opened['opened'] / opened['seconds']:.0f}/s",
            )
        else:
            gens.open(args.conns)
            gens.command(lambda g: {"cmd": "start"})
            time.sleep(5.0 if args.mode == "hold" else 1.0)
            spy = record(child.pid, raw, args.seconds)
            m = gens.measure(args.seconds)
            spy.wait(60)
            print({k: m[k] for k in ("replies", "p50_ms", "p99_ms", "fairness", "loadgen_cpu")})
    finally:
        if gens is not None:
            gens.stop()
        child.stop()
        run.close()
    own: collections.Counter[str] = collections.Counter()
    cumulative: collections.Counter[str] = collections.Counter()
    total = 0
    with open(raw) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = stack.split(";")
            n = int(count)
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                cumulative[frame] += n
    with open(args.out, "w") as out:
        for title, counter in (("own", own), ("cumulative", cumulative)):
            out.write(f"== {title} ({total} samples)\n")
            for frame, n in counter.most_common(45):
                out.write(f"{100 * n / total:5.1f}%  {frame}\n")
    with open(args.out) as f:
        print(f.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
