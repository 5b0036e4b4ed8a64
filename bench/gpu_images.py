"""GPU acceptance, images section (issue 20): a job in a container image sees the GPU it was
given and no other.

Against a real ``gpupool up`` on this machine (its real GPUs through NVML; ``--fake-gpus``
for a dry run, where the device nodes are the machine's own or absent): a busybox image is
built here (tests/image_builder.py: no registry), a 1-GPU job runs in it and lists
``/dev/nvidia*``. Skipped, saying what the machine had, without root, podman, runc or
busybox-static. A busybox image has no C library, so ``nvidia-smi`` (bound in from the host
without CDI) cannot run in it: that check needs an image with glibc and is reported skipped.

Run: ``.venv/bin/python bench/gpu_images.py [--fake-gpus 1xH200-141GB]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import image_builder
from gpu_check_common import Skip, held
from server_harness import Server, kill_leftover_jobs

PROBE = "ls /dev | grep nvidia | sort | tr '\\n' ' '; echo; cat /etc/os-release | head -1"


def run_section(fake_gpus: str) -> dict[str, Any]:
    """The section's steps against a new server (see the module); its findings, with a
    ``verdict`` per check."""
    why = image_builder.missing()
    if why is not None:
        raise Skip(why)
    home = Path(tempfile.mkdtemp(prefix="gpimg-acc-"))
    image_builder.build(home)
    server = Server(home / "home", "", fake_gpus, isolated=True, extra_env={
        "GPUPOOL_IMAGE_PULL": "never", "GPUPOOL_IMAGE_NETWORK": "none"})
    server.home.mkdir(parents=True)
    server.start()
    found: dict[str, Any] = {"fake_gpus": fake_gpus or None}
    try:
        with server.client() as api:
            node = api.get("/nodes").json()[0]
            found["images"] = node["labels"].get("gpupool.io/images", "no")
            made = api.post("/jobs", json={"command": ["sh", "-c", PROBE], "gpus": 1,
                                           "image": image_builder.IMAGE})
            made.raise_for_status()
            job = made.json()["id"]
            deadline = time.monotonic() + 90
            while (view := api.get(f"/jobs/{job}").json())["phase"] not in (
                    "succeeded", "failed", "cancelled") and time.monotonic() < deadline:
                time.sleep(0.2)
            found["phase"] = view["phase"]
            found["placement"] = view.get("placement")
            found["isolation"] = view.get("isolation")
            found["log"] = api.get(f"/jobs/{job}/logs").json()["data"]
    finally:
        server.stop()
        kill_leftover_jobs(server.home)
        shutil.rmtree(server.work_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    found["verdict"] = verdict(found)
    return found


def verdict(found: dict[str, Any]) -> dict[str, str]:
    lines = str(found.get("log", "")).splitlines()
    seen = lines[0].split() if lines else []
    gpus = (found.get("placement") or {}).get("gpus") or []
    cards = sorted(d for d in seen if d.removeprefix("nvidia").isdigit())
    out = {"the node runs images": held(found.get("images") == "podman",
                                        f"IMAGES {found.get('images')}"),
           "the job ran in the image": held(found.get("phase") == "succeeded" and any(
               "gpupool test image" in line for line in lines), f"phase {found.get('phase')}")}
    if found.get("fake_gpus") and not cards:
        out["only its own GPU's device node"] = ("skipped: fake GPUs and no /dev/nvidia* "
                                                 "on this machine")
    else:
        out["only its own GPU's device node"] = held(
            len(gpus) == 1 and cards == [f"nvidia{gpus[0]}"],
            f"placed on GPU {gpus}, sees {' '.join(seen) or 'no device'}")
    out["nvidia-smi in the image"] = ("skipped: the busybox test image has no C library; "
                                      "it needs an image with glibc (none can be pulled here)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fake-gpus", default="")
    args = parser.parse_args()
    try:
        found = run_section(args.fake_gpus)
    except Skip as exc:
        print(f"skipped: {exc}")
        return
    print(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
