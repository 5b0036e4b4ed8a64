"""The metrics section of the GPU acceptance run (bench/gpu_metrics.py), dry: on fake GPUs
there is no NVML, so the section must find that the server says per-job figures were not
measured (no job series in /metrics, "not measured" in describe, a null gpu_seconds_used)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_metrics


def test_the_dry_run_reports_that_per_job_figures_could_not_be_measured(
        tmp_path: Path) -> None:
    found = gpu_metrics.run_section("1xH200-141GB", seconds=2)
    assert found["phase"] == "succeeded", found["log"]
    assert found["verdict"] == {"per-job NVML figures": "skipped: not measured on fake GPUs "
                                "(no NVML), as the server says"}
    assert found["usage_row"]["gpu_seconds"] > 0
    gpu_metrics.write(found, tmp_path)
    assert "| per-job NVML figures | skipped:" in (tmp_path / "gpu_metrics.md").read_text()
