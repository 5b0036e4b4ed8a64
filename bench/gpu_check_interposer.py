"""GPU acceptance, interposer section: a job's GPU memory share held by the interposer, seen
from inside the job with PyTorch (bench/gpu_job_memory.py).

Against a real ``gpupool up`` with ``GPUPOOL_SHARING=interposer`` (so MPS, where the machine
has it, does not take the job):

1. job ``limited`` at ``gpu_memory: 4GiB``: placed with ``gpu_memory_limit_mib`` 4096 and
   enforcement ``interposer``; inside, ``torch.cuda.mem_get_info()`` says 4 GiB total; it
   holds 3 GiB, a second process of the job is refused 2 GiB (the two share the 4 GiB), the
   job itself is refused 2 GiB more with CUDA OOM (caught, printed: the job succeeds), and
   0.5 GiB still fits;
2. job ``whole`` at ``gpus: 1``: a whole card, no interposer, sees the whole card;
3. pass-through: the same probe run directly under the interposer with no limit sees the
   whole card and allocates 5 GiB.

Without torch or CUDA (a dry run) the checks made inside the job are skipped with the reason;
placement, enforcement and the job's environment are still checked.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from gpu_check_common import (
    LIB_DIR,
    Skip,
    cuda_why,
    held,
    inside_why,
    job_dir,
    pool,
    run_job,
    run_script,
    tail,
)
from gpupool.interposer import build, job_env, sharefile

LIMIT_MIB = 4096
PROBE = "gpu_job_memory.py"


def interposer_library() -> str:
    """The interposer's path (built here if needed); Skip saying why it cannot be built."""
    ok, where = build.available(LIB_DIR)
    if not ok:
        raise Skip(f"the interposer cannot be built here: {where}")
    return where


def direct(lib: str, limit_mib: int = 0) -> dict[str, Any]:
    """The probe run directly (not as a job) under the interposer: no limit (pass-through) or
    ``limit_mib``. Its ``GPUACC`` result, or {"error": …}."""
    with tempfile.TemporaryDirectory(prefix="gpuacc-direct-") as tmp:
        env = job_env(lib, sharefile.create(Path(tmp) / "gpushare"))
        if limit_mib:
            env["GPUPOOL_GPU_MEMORY_LIMIT_MIB"] = str(limit_mib)
        return run_script(PROBE, ["--limit-mib", str(limit_mib)] if limit_mib else [], env)


def run(fake_gpus: str) -> dict[str, Any]:
    lib = interposer_library()
    no_cuda = cuda_why()
    code = job_dir(PROBE)
    found: dict[str, Any] = {"fake_gpus": fake_gpus or None, "limit_mib": LIMIT_MIB,
                             "library": lib, "no_cuda": no_cuda}
    with pool(fake_gpus, {"GPUPOOL_SHARING": "interposer"}) as p:
        found["card"] = p.card()
        found["limited"] = run_job(p.client, name="limited", workdir=str(code),
                                   gpu_memory="4GiB",
                                   command=[sys.executable, PROBE, "--limit-mib",
                                            str(LIMIT_MIB)])
        found["whole"] = run_job(p.client, name="whole", workdir=str(code), gpus=1,
                                 command=[sys.executable, PROBE])
    found["pass_through"] = direct(lib)
    for name in ("limited", "whole"):
        found[name]["output"] = tail(found[name]["output"])
    found["checks"] = verdict(found)
    return found


def verdict(found: dict[str, Any]) -> dict[str, str]:
    """Per check: "held…", "failed: why" or "skipped: why" (see the module)."""
    lim, whole = found["limited"], found["whole"]
    res, wres = lim["result"] or {}, whole["result"] or {}
    env_limit = (res.get("env") or {}).get("GPUPOOL_GPU_MEMORY_LIMIT_MIB")
    out = {
        "placed with a 4 GiB limit": held(
            lim["gpu_memory_limit_mib"] == LIMIT_MIB and bool((lim["placement"] or {})
                                                             .get("gpus")),
            f"limit {lim['gpu_memory_limit_mib']} MiB, placement {lim['placement']}"),
        "enforced by the interposer": held(str(lim["enforcement"]).startswith("interposer"),
                                           f"enforcement {lim['enforcement']!r}"),
        "the job's processes get the limit": held(
            res.get("interposer") is True and env_limit == str(LIMIT_MIB),
            f"LD_PRELOAD has the interposer: {res.get('interposer')}, "
            f"GPUPOOL_GPU_MEMORY_LIMIT_MIB={env_limit}"),
        "the job ended well": held(lim["phase"] == "succeeded" and lim["exit_code"] == 0,
                                   f"phase {lim['phase']}, exit {lim['exit_code']}"),
        "a whole card: no interposer": held(
            whole["enforcement"] == "whole GPU" and wres.get("interposer") is False,
            f"enforcement {whole['enforcement']!r}, interposer loaded: "
            f"{wres.get('interposer')}"),
    }
    return out | inside(found)


def inside(found: dict[str, Any]) -> dict[str, str]:
    """The checks made with torch inside the jobs (skipped without CUDA here)."""
    names = ("sees 4 GiB total", "CUDA OOM past the limit, caught in the job",
             "two processes of the job share the 4 GiB", "0.5 GiB more still fits",
             "a whole-card job sees the card", "pass-through: no limit, the whole card")
    why = inside_why(found["no_cuda"], [found["limited"]["result"], found["whole"]["result"],
                                        found["pass_through"]])
    if why:
        return dict.fromkeys(names, why)
    res = found["limited"]["result"]
    seen, child = res.get("seen", {}), res.get("child", {})
    over, after = res.get("over", {}), res.get("after", {})
    card = res.get("device_total_mib", 0)
    wseen = (found["whole"]["result"] or {}).get("seen", {})
    pt = found["pass_through"]
    return {
        names[0]: held(abs(seen.get("total_mib", 0) - LIMIT_MIB) <= 1,
                       f"mem_get_info total {seen.get('total_mib')} MiB, free "
                       f"{seen.get('free_mib')} MiB (card {card} MiB)"),
        names[1]: held(res.get("hold", {}).get("ok") is True and over.get("ok") is False
                       and "OutOfMemory" in str(over.get("error")),
                       f"holding 3 GiB, 2 GiB more: {over.get('error')} "
                       f"({over.get('message', 'allocated')})"),
        names[2]: held((child.get("alloc") or {}).get("ok") is False,
                       f"second process saw {child.get('total_mib')} MiB total / "
                       f"{child.get('free_mib')} MiB free, its 2 GiB: "
                       f"{(child.get('alloc') or {}).get('error', child.get('alloc'))}"),
        names[3]: held(after.get("ok") is True, f"0.5 GiB: {after}"),
        names[4]: held(abs(wseen.get("total_mib", 0) - card) <= max(1, card // 50),
                       f"whole-card job saw {wseen.get('total_mib')} MiB total, card {card}"),
        names[5]: held(pt.get("interposer") is True
                       and abs(pt.get("seen", {}).get("total_mib", 0) - card) <= max(1, card // 50)
                       and (pt.get("pass") or {}).get("ok") is True,
                       f"interposer loaded: {pt.get('interposer')}, total "
                       f"{pt.get('seen', {}).get('total_mib')} MiB, 5 GiB: {pt.get('pass')}"),
    }
