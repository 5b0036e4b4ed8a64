"""A job of the GPU acceptance run: what the job sees of its GPU memory share, read from
inside (standard library + torch only; it runs as a gpupool job, or directly).

    python gpu_job_memory.py [--limit-mib N]

Prints one line ``GPUACC {json}`` with: the share variables gpupool set
(``GPUPOOL_GPU_MEMORY_LIMIT_MIB``, ``CUDA_MPS_*``, whether ``LD_PRELOAD`` holds the
interposer), then, when torch sees CUDA: the device's name and SM count,
``torch.cuda.mem_get_info()`` (total and free, MiB), and with ``--limit-mib N`` (the share's
limit) four allocations:

1. ``hold``: 3/4 of N, kept;
2. ``child``: a second process of the job (it inherits the job's environment, hence its
   ledger) asks for 1/2 of N: over the share while ``hold`` is kept, so it must fail;
3. ``over``: this process asks for 1/2 of N more: must fail with CUDA OOM, caught here;
4. ``after``: 1/8 of N still fits: it must succeed (the share is not refused wholesale).

Without ``--limit-mib``, ``pass_mib`` (default 5,120) is allocated once and must succeed: a
pass-through check. Without torch or CUDA the line says why (``skipped``) and the exit code
is 0 either way: an allocation refused is a finding, not a crash.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

MIB = 1 << 20
MARK = "GPUACC "
ENV = ("CUDA_VISIBLE_DEVICES", "GPUPOOL_GPU_FRACTION", "GPUPOOL_GPU_MEMORY_LIMIT_MIB",
       "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
       "CUDA_MPS_PIPE_DIRECTORY")


def _alloc(torch: Any, mib: int, keep: list[Any]) -> dict[str, Any]:
    """Allocate ``mib`` MiB on the GPU; {"ok": True} or {"ok": False, "error": …}."""
    try:
        keep.append(torch.empty(mib * MIB, dtype=torch.uint8, device="cuda"))
        torch.cuda.synchronize()
        return {"mib": mib, "ok": True}
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
        return {"mib": mib, "ok": False, "error": type(exc).__name__,
                "message": str(exc).splitlines()[0][:200]}


def _mem(torch: Any) -> dict[str, int]:
    free, total = torch.cuda.mem_get_info()
    return {"total_mib": total // MIB, "free_mib": free // MIB}


def child(mib: int) -> dict[str, Any]:
    """The second process: its view of the share, then one allocation of ``mib``."""
    import torch

    seen = _mem(torch)
    return {**seen, "alloc": _alloc(torch, mib, [])}


def probe(limit_mib: int, pass_mib: int) -> dict[str, Any]:
    found: dict[str, Any] = {"env": {k: os.environ.get(k) for k in ENV},
                             "interposer": "libgpushare" in os.environ.get("LD_PRELOAD", "")}
    try:
        import torch
    except Exception as exc:
        return {**found, "skipped": f"torch not importable: {exc}"}
    found["torch"] = torch.__version__
    if not torch.cuda.is_available():
        return {**found, "skipped": f"torch {torch.__version__}: CUDA not available"}
    props = torch.cuda.get_device_properties(0)
    found.update(device=props.name, sm_count=props.multi_processor_count,
                 device_total_mib=props.total_memory // MIB, seen=_mem(torch))
    keep: list[Any] = []
    if not limit_mib:
        found["pass"] = _alloc(torch, pass_mib, keep)
        return found
    found["hold"] = _alloc(torch, limit_mib * 3 // 4, keep)
    done = subprocess.run([sys.executable, __file__, "--child", str(limit_mib // 2)],
                          capture_output=True, text=True, timeout=120, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARK)]
    found["child"] = (json.loads(lines[-1][len(MARK):]) if lines else
                      {"exit": done.returncode, "stderr": done.stderr[-400:]})
    found["over"] = _alloc(torch, limit_mib // 2, keep)
    found["after"] = _alloc(torch, limit_mib // 8, keep)
    found["seen_holding"] = _mem(torch)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mib", type=int, default=0)
    parser.add_argument("--pass-mib", type=int, default=5 * 1024)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    found = child(args.child) if args.child else probe(args.limit_mib, args.pass_mib)
    print(MARK + json.dumps(found), flush=True)


if __name__ == "__main__":
    main()
