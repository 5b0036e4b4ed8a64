"""bench/metrics_bench.py at a tiny size: its setup makes the books it says (jobs of every
phase, real allocations), and its scrape over loopback answers one allocation sample per
GPU, workload counts that match the database, and every team."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import metrics_bench
import metrics_bench_report

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from inprocess_api import InProcessServer


def test_the_bench_setup_scrapes_every_gpu_and_job(tmp_path: Path) -> None:
    srv = InProcessServer(tmp_path, nodes=3, cards=8, cpu_milli=256_000,
                          memory_mib=2_097_152)
    made = metrics_bench.populate(srv, jobs=40, teams=2)
    phases = made["by_phase_kind"]
    assert made["jobs_in_db"] == 40
    assert phases["succeeded job"] == 12
    assert phases.get("running job", 0) + phases.get("running notebook", 0) > 0
    assert phases.get("pending job", 0) >= 8  # the last 20 % wait for quota
    held = metrics_bench.allocation(srv)
    assert held["gpus"] == 24 and held["allocated_gpus"] > 0

    got = metrics_bench.measure(srv, scrapes=2, warmup=0)
    assert got["samples_by_family"]["gpupool_gpu_allocated_ratio"] == 3 * 8
    assert got["samples_by_family"]["gpupool_team_quota_gpus"] == 3  # default + 2
    live = sum(n for key, n in phases.items() if not key.startswith("succeeded"))
    assert got["live_jobs_scraped"] == live
    assert len(got["ms"]["http"]) == 2 and got["bytes"] > 0
    summary = metrics_bench_report.derived({"summary": {k: metrics_bench.summary(v)
                                                 for k, v in got["ms"].items()}})
    assert summary["http"] > 0
