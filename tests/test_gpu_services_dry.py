"""The services section of the GPU acceptance run (bench/gpu_services.py), dry: the same
steps against fake GPUs, where the model runs with numpy on the CPU; the two half replicas
share one card, the whole one has a card of its own, every request is answered and the
report says it was a dry run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_services


def test_the_dry_run_packs_two_halves_on_one_card_and_reports_both_shapes() -> None:
    found = gpu_services.run_section("1xH200-141GB", connections=2, seconds=0.5)
    assert found["half_on_one_card"] is True
    half, whole = found["half"], found["whole"]
    assert [share for _, _, share in half["placement"]] == [0.5, 0.5]
    assert [share for _, _, share in whole["placement"]] == [1.0]
    for shape in (half, whole):
        assert shape["device"] == "cpu"  # no CUDA here: said, not hidden
        assert shape["requests"] > 0 and shape["not_200"] == 0
    report = gpu_services.report(found)
    assert "a dry run" in report
    assert "| 2 × 0.5 GPU | cpu |" in report and "| 1 × 1 GPU | cpu |" in report
