"""bench/notebook_bench.py and its modules (bench/notebook_bench_*.py) without a server: its
percentiles, its process bookkeeping and its report, on made-up figures."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import notebook_bench
import notebook_bench_procs as procs
import notebook_bench_report as report
import notebook_bench_server as server
import notebook_bench_stats as stats


def test_percentiles_interpolate_between_ranks_as_numpy_does() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert stats.percentile(values, 50) == 3.0
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 5.0
    assert stats.percentile(values, 95) == pytest.approx(4.8)
    assert stats.percentile([7.0], 99) == 7.0
    assert math.isnan(stats.percentile([], 50))
    s = stats.summary([float(i) for i in range(1, 101)])
    assert (s["n"], s["min"], s["max"]) == (100, 1.0, 100.0)
    assert s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01)


def test_descendants_follow_the_parent_links_only() -> None:
    table = {1: (0, ["init"]), 10: (1, ["shim"]), 11: (10, ["bwrap"]), 12: (11, ["py"]),
             13: (12, ["kernel"]), 20: (1, ["other"]), 21: (20, ["child"])}
    assert procs.descendants({10}, table) == {10, 11, 12, 13}
    assert procs.descendants({99}, table) == {99}


def test_this_process_is_in_the_table_and_measurable() -> None:
    table = procs.process_table()
    assert table[os.getpid()][0] == os.getppid()
    memory = procs.memory_of([os.getpid()])
    assert memory["count"] == 1 and memory["rss_mib"] > 1
    assert 0 < memory["pss_anon_mib"] <= memory["pss_mib"] <= memory["rss_mib"]
    assert procs.memory_used_mib() > 0
    assert server.gateway_of("http://127.0.0.1:4321/nb/7/lab") == "http://127.0.0.1:4321"


def _stats(p50: float, spread: float = 1.5) -> dict[str, float]:
    return {"n": 8, "min": p50 * 0.9, "p50": p50, "p95": p50 * spread, "p99": p50 * spread,
            "max": p50 * spread * 1.1}


def _side(gateway: float, direct: float) -> dict[str, object]:
    gw, dr = _stats(gateway), _stats(direct)
    return {"gateway": gw, "direct": dr,
            "added": {q: gw[q] - dr[q] for q in ("p50", "p95", "p99")}}


def fake_data(kept_gateway: float = 45.0) -> dict[str, object]:
    return {
        "date": "2026-12-03", "quick": False, "duration_s": 301.0, "fake_gpus": "4xA100-80GB",
        "machine": "x86_64, 2 CPUs", "versions": {"jupyterlab": "4.6.6"}, "sandbox": "bwrap",
        "isolation": "bwrap as gp-admin", "probe_ms_before": 55.0, "probe_ms_after": 60.0,
        "load_before": 0.5, "load_after": 3.0, "notes": ["a note"],
        "single": {"cold": {"ready_s": 6.1, "url_s": 6.0}, "posted": _stats(12),
                   "running": _stats(70), "url": _stats(4300), "ready": _stats(5200)},
        "class": {"size": 32, "users": 32, "team": "class", "gpus": 4, "all_posted_s": 1.2,
                  "all_ready_s": 61.0, "url_from_own_post_s": _stats(40.0),
                  "post_answered_s": _stats(0.5),
                  "ready_from_own_post_s": _stats(41.0), "ready_from_start_s": _stats(41.5),
                  "per_gpu": {"0": 8, "1": 8, "2": 8, "3": 8}, "share_milli": [125],
                  "memory": {"jupyter": {"count": 32, "rss_mib": 2700.0, "pss_mib": 2200.0,
                                         "pss_anon_mib": 1600.0},
                             "trees": {"count": 160, "rss_mib": 3500.0, "pss_mib": 2500.0,
                                       "pss_anon_mib": 1800.0},
                             "kernels": {"count": 0, "rss_mib": 0.0, "pss_mib": 0.0},
                             "server_children": {"count": 0, "rss_mib": 0.0,
                                                 "pss_mib": 0.0}},
                  "before": {"server_rss_mib": 120.0, "machine_used_mib": 2000.0},
                  "after": {"server_rss_mib": 130.0, "server_hwm_mib": 140.0,
                            "machine_used_mib": 5000.0},
                  "server_cpu_s": 9.5},
        "overhead": {"http_requests": 300, "fresh_requests": 50, "kernel_round_trips": 200,
                     "http": _side(kept_gateway, 0.8), "http_fresh": _side(1.9, 1.0),
                     "kernel": _side(48.9, 48.0)},
    }


def test_the_report_has_every_table_and_the_limits() -> None:
    text = report.render(fake_data())
    assert "| **first 200 through the gateway** | 5,200 | 7,800 |" in text
    assert "**All 32 answered 61.0 s after the first POST.**" in text
    assert "GPU 0: 8, GPU 1: 8, GPU 2: 8, GPU 3: 8 (32 shares of 125 milli-GPU)" in text
    assert "| `GET api/status`, kept-alive connection | 0.80 |" in text
    assert "+44.20" in text
    assert "## What this does not show" in text and "fake" in text
    assert "| JupyterLab servers | 32 | 2,700 | 2,200 | 1,600 | 68.8, 50.0 |" in text
    assert "- a note" in text
    assert "## Earlier runs" in text


def test_the_nagle_reading_shows_only_while_the_figures_do() -> None:
    """Kept-alive requests much slower through the gateway than new connections: explained;
    once they are not, the explanation goes."""
    assert any("Nagle" in n for n in report.readings(fake_data()))
    assert not any("Nagle" in n for n in report.readings(fake_data(kept_gateway=1.5)))


def test_render_only_rewrites_the_report_from_the_json(tmp_path: Path) -> None:
    data = fake_data()
    (tmp_path / "notebooks.json").write_text(json.dumps(data))
    notebook_bench.main(["--render-only", "--out", str(tmp_path)])
    assert (tmp_path / "notebooks.md").read_text() == report.render(data)
