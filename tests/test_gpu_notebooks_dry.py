"""The notebooks section of the GPU acceptance run (bench/gpu_notebooks.py), dry: the same
steps against fake GPUs, where the slice check is skipped (no CUDA) and the rest holds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("jupyterlab", reason="the notebook extra is not installed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_notebooks


def test_the_dry_run_places_two_halves_reclaims_the_idle_one_and_writes_its_report(
        tmp_path: Path) -> None:
    found = gpu_notebooks.run_section("1xH200-141GB", idle_timeout_s=5)
    verdict = found["verdict"]
    assert verdict["one card, two halves"] == "held"
    assert verdict["idle one reclaimed, other kept"] == "held"
    assert verdict["kept sees its slice"].startswith("skipped")  # no CUDA here
    assert found["limit_mib"]["kept"] == 141 * 1024 // 2
    gpu_notebooks.write(found, tmp_path)
    report = (tmp_path / "gpu_notebooks.md").read_text()
    assert "| idle one reclaimed, other kept | held |" in report
    assert (tmp_path / "gpu_notebooks.json").is_file()
