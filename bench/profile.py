"""Profile our server under load with py-spy: where does the time go?

    python bench/profile.py --mode=loop --conns=2000 --seconds=10 [--out=profile.txt]

Starts ours (pinned like in bench/run.py) with the Node load generators, and
records it with ``py-spy record --format raw`` (collapsed stacks); prints the
functions with the most own and cumulative samples.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as bench  # the harness's process and generator helpers


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("loop", "hold"), default="loop")
    parser.add_argument("--conns", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--kind", default="ours", choices=bench.SERVERS[:2])
    parser.add_argument("--out", default=os.path.join(bench.RESULTS, "profile.txt"))
    args = parser.parse_args()
    run = bench.Run(argparse.Namespace(no_pin=False, keep=False, mongodb=None, quick=False))
    child, port, _ = run.start_server(args.kind, mode=args.mode)
    gens = None
    try:
        gens = bench.Loadgens(run, port, mode=args.mode, count=2, interval=5.0, lifetime=args.seconds + 120)
        gens.open(args.conns)
        gens.command(lambda g: {"cmd": "start"})
        time.sleep(5.0 if args.mode == "hold" else 1.0)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        raw = args.out + ".raw"
        spy = subprocess.Popen(
            [
                os.path.join(os.path.dirname(sys.executable), "py-spy"),
                "record",
                "--pid",
                str(child.pid),
                "--duration",
                str(int(args.seconds)),
                "--format",
                "raw",
                "--output",
                raw,
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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
