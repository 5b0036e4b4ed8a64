"""The images section of the GPU acceptance run (bench/gpu_images.py), dry: against fake
GPUs a 1-GPU job runs in the locally built image; the device-node check is skipped, saying
why, as there are no /dev/nvidia* here, and never reported as held."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_images
import image_builder


@pytest.mark.skipif(image_builder.missing() is not None, reason=str(image_builder.missing()))
def test_the_dry_run_runs_a_job_in_the_image_and_skips_what_needs_a_gpu() -> None:
    found = gpu_images.run_section("1xH200-141GB")
    verdict = found["verdict"]
    assert verdict["the node runs images"].startswith("held")
    assert verdict["the job ran in the image"].startswith("held")
    assert verdict["only its own GPU's device node"].startswith("skipped: fake GPUs")
    assert "podman" in found["isolation"]


def test_the_device_check_fails_when_the_job_sees_another_card() -> None:
    found = {"images": "podman", "phase": "succeeded", "placement": {"gpus": [1]},
             "log": "nvidia0 nvidia1 nvidiactl\nNAME=\"gpupool test image\"\n"}
    assert gpu_images.verdict(found)["only its own GPU's device node"].startswith("failed")
    found["log"] = "nvidia1 nvidiactl\nNAME=\"gpupool test image\"\n"
    assert gpu_images.verdict(found)["only its own GPU's device node"].startswith("held")
