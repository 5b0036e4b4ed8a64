"""GPU acceptance, MPS section: two jobs at ``gpus: 0.5`` and ``gpu_memory: 8GiB`` each on one
card, shared through the real CUDA MPS control daemon, with the SM percentage and the pinned
memory limit read back from inside each job (bench/gpu_job_memory.py).

Against a real ``gpupool up`` with ``GPUPOOL_SHARING=mps``; needs real GPUs and
``nvidia-cuda-mps-control`` (skipped otherwise, saying which is missing; with fake GPUs only
when ``GPUPOOL_MPS_CONTROL`` names a stand-in). Checks: both jobs
on one card, enforcement ``mps…`` (not a fallback), each job's environment carries
``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50`` and ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=8192M``
and the daemon's pipe; inside, the SM count torch reports is at most about half the card's,
``mem_get_info`` says 8 GiB total and allocating past it fails with CUDA OOM (caught).
(Under MPS a client's ``multiProcessorCount`` is reported reduced by its active thread
percentage; the card's own count is read by the same probe run outside MPS.)
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gpu_check_common import (
    Skip,
    cuda_why,
    finish,
    held,
    inside_why,
    job_dir,
    mps_control_why,
    pool,
    run_script,
    startup_text,
    submit,
    tail,
)

LIMIT_MIB = 8192
PROBE = "gpu_job_memory.py"
MPS_ENV = ("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
           "CUDA_MPS_PIPE_DIRECTORY")


def run(fake_gpus: str) -> dict[str, Any]:
    """The section (see the module). ``GPUPOOL_MPS_CONTROL`` in the environment names another
    control binary (a stand-in: how the dry-run tests drive this section on fake GPUs)."""
    standin = os.environ.get("GPUPOOL_MPS_CONTROL", "")
    if fake_gpus and not standin:
        raise Skip("fake GPUs: MPS needs the real daemon on real GPUs")
    why = None if standin else mps_control_why()
    if why:
        raise Skip(why)
    no_cuda = cuda_why()
    code = job_dir(PROBE)
    found: dict[str, Any] = {"limit_mib": LIMIT_MIB, "no_cuda": no_cuda,
                             "bare": run_script(PROBE, []) if not no_cuda else {}}
    with pool(fake_gpus, {"GPUPOOL_SHARING": "mps"}) as p:
        found["card"] = p.card()
        ids = [submit(p.client, name=f"mps-{i}", workdir=str(code), gpus=0.5,
                      gpu_memory="8GiB", command=[sys.executable, PROBE, "--limit-mib",
                                                  str(LIMIT_MIB)])
               for i in (1, 2)]
        found["jobs"] = [finish(p.client, job_id) for job_id in ids]
        found["startup"] = startup_text(p)
    for job in found["jobs"]:
        job["output"] = tail(job["output"])
    found["checks"] = verdict(found)
    return found


def verdict(found: dict[str, Any]) -> dict[str, str]:
    """Per check: "held…", "failed: why" or "skipped: why" (see the module)."""
    jobs = found["jobs"]
    cards = {(j["placement"] or {}).get("node", "") + str((j["placement"] or {}).get("gpus"))
             for j in jobs}
    out = {"both on one card": held(len(cards) == 1, f"placements {sorted(cards)}"),
           "enforced by MPS": held(all(str(j["enforcement"]).startswith("mps") for j in jobs),
                                   f"enforcement {[j['enforcement'] for j in jobs]}")}
    results = [j["result"] or {} for j in jobs]
    envs = [r.get("env") or {} for r in results]
    shown = [{k: e.get(k) for k in MPS_ENV} for e in envs]
    out["MPS limits in the jobs' environment"] = held(
        all(e.get(MPS_ENV[0]) == "50" and e.get(MPS_ENV[1]) == f"0={LIMIT_MIB}M"
            and e.get(MPS_ENV[2]) for e in envs), f"{shown}")
    why = inside_why(found["no_cuda"], [j["result"] for j in jobs])
    if why:
        return out | dict.fromkeys(("SM percentage in effect", "pinned memory limit in effect",
                                    "CUDA OOM past the limit, caught"), why)
    full = found["bare"].get("sm_count") or 0
    sms = [r.get("sm_count") for r in results]
    out["SM percentage in effect"] = held(
        bool(full) and all(s is not None and s <= full * 0.55 for s in sms),
        f"SMs reported inside {sms}, outside MPS {full or found['bare']}")
    totals = [r.get("seen", {}).get("total_mib") for r in results]
    out["pinned memory limit in effect"] = held(
        all(t is not None and abs(t - LIMIT_MIB) <= 1 for t in totals),
        f"mem_get_info totals {totals} MiB")
    overs = [r.get("over", {}) for r in results]
    out["CUDA OOM past the limit, caught"] = held(
        all(o.get("ok") is False and "OutOfMemory" in str(o.get("error")) for o in overs)
        and all(j["exit_code"] == 0 for j in jobs),
        f"{[o.get('error') for o in overs]}, exits {[j['exit_code'] for j in jobs]}")
    return out
