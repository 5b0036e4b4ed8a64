"""GPU acceptance, MIG section: only where a card is already in MIG mode (this run never
changes a device's settings). The instances gpupool discovers through NVML
(``nvml_mig_instances``) are matched with ``nvidia-smi -L``; a real ``gpupool up`` with
``GPUPOOL_SHARING=mig`` must offer them, and a job asking for the smallest instance's share
must land on it (enforcement ``mig <profile> (<uuid>)``, ``CUDA_VISIBLE_DEVICES`` the
instance's uuid) and see the instance's memory from inside (bench/gpu_job_memory.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from typing import Any

from gpu_check_common import (
    Skip,
    cuda_why,
    held,
    inside_why,
    job_dir,
    pool,
    run_job,
    startup_text,
    tail,
)
from gpupool.executors.inventory import MigInstance, nvml_mig_instances

PROBE = "gpu_job_memory.py"
_SMI_MIG = re.compile(r"UUID:\s*(MIG-[^)\s]+)")


def smi_mig_uuids() -> list[str] | None:
    """The MIG device uuids ``nvidia-smi -L`` lists; None without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return None
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30,
                          check=False)
    return _SMI_MIG.findall(done.stdout)


def share_of(instance: MigInstance) -> dict[str, Any]:
    """The job fields that ask for exactly this instance's compute and memory."""
    milli = instance.slices * 1000 // max(instance.total_slices, 1)
    return {"gpus": milli / 1000, "gpu_memory": f"{instance.memory_mib}MiB"}


def run(fake_gpus: str) -> dict[str, Any]:
    if fake_gpus:
        raise Skip("fake GPUs have no MIG mode")
    mig = nvml_mig_instances()
    if not mig:
        raise Skip("no card is in MIG mode (or no NVML): this run never changes device "
                   "settings")
    instances = [i for card in mig.values() for i in card]
    if not instances:
        raise Skip(f"MIG is on for GPU {sorted(mig)} but no instance is created")
    smallest = min(instances, key=lambda i: (i.slices, i.memory_mib, i.uuid))
    found: dict[str, Any] = {"instances": [vars(i) for i in instances],
                             "smi_uuids": smi_mig_uuids(), "no_cuda": cuda_why(),
                             "asked": share_of(smallest), "smallest": vars(smallest)}
    code = job_dir(PROBE)
    with pool(fake_gpus, {"GPUPOOL_SHARING": "mig"}) as p:
        found["mechanisms"] = sorted({m for n in p.nodes() for m in n.get("mechanisms", [])})
        found["startup"] = startup_text(p)
        found["job"] = run_job(p.client, name="mig", workdir=str(code),
                               command=[sys.executable, PROBE, "--pass-mib", "1024"],
                               **found["asked"])
    found["job"]["output"] = tail(found["job"]["output"])
    found["checks"] = verdict(found)
    return found


def verdict(found: dict[str, Any]) -> dict[str, str]:
    """Per check: "held…", "failed: why" or "skipped: why" (see the module)."""
    ours = sorted(i["uuid"] for i in found["instances"])
    smi = found["smi_uuids"]
    out = {"instances match nvidia-smi -L": (
        "skipped: nvidia-smi not on PATH" if smi is None
        else held(ours == sorted(smi), f"gpupool {ours}, nvidia-smi {sorted(smi)}")),
        "offered by the server": held("mig" in found["mechanisms"],
                                      f"mechanisms {found['mechanisms']}")}
    job, want = found["job"], found["smallest"]
    res = job["result"] or {}
    visible = (res.get("env") or {}).get("CUDA_VISIBLE_DEVICES")
    out["the job lands on the smallest instance"] = held(
        str(job["enforcement"]).startswith("mig") and visible == want["uuid"],
        f"enforcement {job['enforcement']!r}, CUDA_VISIBLE_DEVICES={visible}, asked "
        f"{found['asked']}")
    why = inside_why(found["no_cuda"], [job["result"]])
    total = (res.get("seen") or {}).get("total_mib")
    out["the job sees the instance's memory"] = why or (
        held(total is not None and abs(total - want["memory_mib"]) <= max(64, total // 50),
             f"mem_get_info total {total} MiB, instance {want['memory_mib']} MiB, device "
             f"{res.get('device')}"))
    return out
