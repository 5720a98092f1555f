"""Plot heartbeat round trip against connection count from a bench/run.py results file.

python bench/plot.py [bench/results/latest-full.json] [docs/latency-vs-connections.png]
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display here
import matplotlib.pyplot as plt

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
LABELS = {"ours": "study-time (accounting + SQLite)", "tornado": "bare Tornado", "node": "Node ws"}
COLORS = {"ours": "tab:blue", "tornado": "tab:orange", "node": "tab:green"}


def plot(results_path: str, out_path: str) -> None:
    with open(results_path) as f:
        data = json.load(f)
    capacity = next(r for r in data["results"] if r["scenario"] == "capacity")
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    for kind, points in capacity["points"].items():
        xs = [p["connections"] for p in points]
        ax.plot(xs, [p["p99_ms"] for p in points], "o-", color=COLORS[kind], label=f"{LABELS[kind]} p99")
        ax.plot(
            xs,
            [p["p50_ms"] for p in points],
            "s--",
            color=COLORS[kind],
            alpha=0.6,
            label=f"{LABELS[kind]} p50",
        )
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":", label="target p99 50 ms")
    ax.set_yscale("log")
    ax.set_xlabel(
        "open connections (one process, heartbeat every {:g}s each)".format(capacity["heartbeat_interval_s"])
    )
    ax.set_ylabel("heartbeat round trip (ms, log scale)")
    machine = data["machine"]
    ax.set_title(
        f"Heartbeat round trip vs connections ({machine.get('nproc')} cores, {machine.get('cpu', '')})",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"wrote {os.path.relpath(out_path, ROOT)}")


if __name__ == "__main__":
    results = sys.argv[1] if len(sys.argv) > 1 else os.path.join(BENCH, "results", "latest-full.json")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "docs", "latency-vs-connections.png")
    plot(results, out)
