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
