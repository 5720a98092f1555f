"""Smoke test of the benchmark harness's pure parts (the benchmarks themselves are `make bench`)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from tests.support.helpers import ROOT


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_run", os.path.join(ROOT, "bench", "run.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_sweep_scenario_runs_and_touches_only_expiring_sessions():
    bench = load_bench()
    profile = bench.Profile(
        capacity_stages=[1],
        capacity_interval=5.0,
        capacity_measure=1.0,
        throughput_conns=1,
        throughput_seconds=1.0,
        throughput_repeat=1,
        sweep_sessions=2000,
        processes_conns=1,
    )
    run = argparse.Namespace()  # the sweep runs in-process: no servers, no generators
    result = bench.scenario_sweep(run, profile)
    assert result["scenario"] == "sweep"
    assert result["ours"]["ten_percent_expiring_ms"] > 0
    assert result["targets"]["sweep_touches_only_expiring"]


def test_percentiles_and_ratios():
    bench = load_bench()
    values = sorted(float(x) for x in range(1, 101))
    assert bench.percentile(values, 50) == 50.0
    assert bench.percentile(values, 99) == 99.0
    assert bench.percentile([], 99) is None
    assert bench.ratio(3.0, 2.0) == 1.5
    assert bench.ratio(1.0, None) is None


def test_the_goals_table_shows_the_four_figures_against_bare_tornado():
    bench = load_bench()
    # Memory and openings are judged at 5,000 connections, the tail at the last stage (19,000).
    bare = [
        {"stage": 5000, "connections": 5000, "rss_per_conn_kb": 15.0, "conn_per_s": 1200.0, "p99_ms": 2.0},
        {"stage": 19000, "connections": 19000, "rss_per_conn_kb": 15.5, "conn_per_s": 700.0, "p99_ms": 40.0},
    ]
    ours = [
        dict(bare[0], rss_per_conn_kb=14.0, conn_per_s=600.0, p99_ms=3.0),
        dict(
            bare[1],
            rss_per_conn_kb=16.0,
            conn_per_s=900.0,
            p99_ms=12.0,
            store_writes_per_s=316.7,
            store_max_batch=1650,
        ),
    ]
    capacity = {
        "scenario": "capacity",
        "ours": ours[-1],
        "points": {"ours": ours, "tornado": bare},
        "ratio": {"tornado": {"rss_per_conn_kb": 1.03, "conn_per_s": 1.29, "p99_ms": 0.3}},
    }
    throughput = {
        "scenario": "throughput",
        "connections": 1000,
        "median": {
            "ours": {"replies_per_s": 16000.0, "server_cpu": 0.8},
            "tornado": {"replies_per_s": 10000.0, "server_cpu": 1.0},
        },
        "pair_ratios_tornado": [1.4, 1.6, 1.7],
        "median_pair_ratio_tornado": 1.6,
    }
    rows = bench.goals([capacity, throughput])
    assert [met for *_, met in rows] == [True, True, False, False]
    assert "1.6x (1.4, 1.6, 1.7; 16000 vs 10000 /s at 1000; per CPU second x2.0)" in rows[0][1]
    assert "0.933x (14.0 vs 15.0 KiB at 5000)" in rows[1][1]
    assert "0.5x (600.0 vs 1200.0 /s, ramp to 5000)" in rows[2][1]
    assert (
        "12.0 ms at 19000 (bare Tornado 40.0 ms; checkpoints in the window: 316.7 records/s, up to 1650"
        in rows[3][1]
    )
    assert bench.goals([])[0][3] is None  # a scenario not run is not a goal missed
    table = bench.goals_table([capacity, throughput])
    assert table.count("MISSED") == 2 and table.count(" met") == 2
