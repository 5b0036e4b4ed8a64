"""GPU acceptance, overhead section: the same training step (bench/gpu_train.py, ResNet-50,
synthetic data, batch 64 at 224×224, bf16 autocast) timed bare and under the interposer.

Configurations, each its own process run directly (not as a job: the interposer is the only
thing that differs), one after another, then ``bare`` again (how much the card drifted):

- ``bare``: no interposer;
- ``interposer, no limit``: loaded, with a share file, no limit (pass-through);
- ``interposer, 32 GiB limit``: every allocation checked against the job's ledger;
- ``limit + pacing at 1.0``: ``GPUPOOL_GPU_FRACTION=1.0`` besides; at a whole share the
  pacing clock never makes a launch wait, so this row is the launch hook's own cost;
- ``limit + pacing at 0.5``: for information, what pacing does to this step at half a card
  (it charges each launch a nominal cost; it aims at half the launch rate, not half the
  GPU time).

The figure is each configuration's best step time (the fastest of its timed windows: noise
only adds time), and its ratio to bare (throughput: bare / configuration). OrionX claims
≥ 98 %, Baidu "almost no loss". With no CUDA (a dry run) the same processes run a toy size
on the CPU to prove the plumbing, and the checks are skipped.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from gpu_check_common import Skip, cuda_why, held, run_script, torch_why
from gpu_check_interposer import interposer_library
from gpupool.interposer import job_env, sharefile

TRAIN = "gpu_train.py"
LIMIT_MIB = 32 * 1024
CONFIGS: tuple[tuple[str, bool, dict[str, str]], ...] = (
    ("bare", False, {}),
    ("interposer, no limit", True, {}),
    ("interposer, 32 GiB limit", True, {"GPUPOOL_GPU_MEMORY_LIMIT_MIB": str(LIMIT_MIB)}),
    ("limit + pacing at 1.0", True, {"GPUPOOL_GPU_MEMORY_LIMIT_MIB": str(LIMIT_MIB),
                                     "GPUPOOL_GPU_FRACTION": "1.0"}),
    ("limit + pacing at 0.5", True, {"GPUPOOL_GPU_MEMORY_LIMIT_MIB": str(LIMIT_MIB),
                                     "GPUPOOL_GPU_FRACTION": "0.5"}),
)
CHECKED = CONFIGS[1:4]
"""The configurations whose ratio is held to the claim; pacing at 0.5 is information."""
CLAIM = 0.98
REAL = ["--model", "resnet50", "--batch", "64", "--size", "224", "--warmup", "10",
        "--steps", "15", "--windows", "3"]
TOY = ["--model", "resnet50", "--batch", "2", "--size", "32", "--warmup", "1",
       "--steps", "1", "--windows", "1"]


def one(lib: str, preload: bool, extra: dict[str, str], sizes: list[str]) -> dict[str, Any]:
    """One process of gpu_train.py in this configuration; its ``GPUACC`` result or
    {"error": …}."""
    with tempfile.TemporaryDirectory(prefix="gpuacc-ovh-") as tmp:
        env = {**job_env(lib, sharefile.create(Path(tmp) / "gpushare")), **extra} if preload \
            else {}
        return run_script(TRAIN, sizes, env)


def run(fake_gpus: str) -> dict[str, Any]:
    lib = interposer_library()
    no_torch = torch_why()
    if no_torch:
        raise Skip(no_torch)
    no_cuda = cuda_why()
    sizes = TOY if no_cuda else REAL
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in CONFIGS}
    for label, preload, extra in (*CONFIGS, CONFIGS[0]):  # bare again last: the drift
        runs[label].append(one(lib, preload, extra, sizes))
    found: dict[str, Any] = {"fake_gpus": fake_gpus or None, "no_cuda": no_cuda,
                             "sizes": " ".join(sizes), "runs": runs, "limit_mib": LIMIT_MIB}
    found["best_ms"] = {label: best(rs) for label, rs in runs.items()}
    found["checks"] = verdict(found)
    found["markdown"] = table(found)
    return found


def best(results: list[dict[str, Any]]) -> float | None:
    """The fastest timed window's step time over the runs (noise only adds time)."""
    times = [ms for r in results for ms in r.get("windows_ms", [])]
    return min(times) if times else None


def ratio(found: dict[str, Any], label: str) -> float | None:
    base, mine = found["best_ms"]["bare"], found["best_ms"][label]
    return base / mine if base and mine else None


def verdict(found: dict[str, Any]) -> dict[str, str]:
    """Per configuration held to the claim: "held: …" when its throughput is ≥ 98 % of
    bare; "skipped: …" without CUDA; "failed: …" below, or when a run broke."""
    out: dict[str, str] = {}
    errors = {label: r["error"] for label, rs in found["runs"].items() for r in rs
              if "error" in r}
    for label, _, _ in CHECKED:
        name = f"{label}: ≥ 98 % of bare"
        if label in errors or "bare" in errors:
            out[name] = f"failed: {errors.get(label) or errors['bare']}"
        elif found["no_cuda"]:
            out[name] = f"skipped: {found['no_cuda']} (ran a toy size on the CPU)"
        else:
            r = ratio(found, label)
            out[name] = held(r is not None and r >= CLAIM, f"{(r or 0) * 100:.1f} % of bare")
    limited = [x for x in found["runs"]["interposer, 32 GiB limit"] if "mem" in x]
    if found["no_cuda"]:
        out["the limit was in effect"] = f"skipped: {found['no_cuda']}"
    elif limited:
        total = limited[-1]["mem"]["total_mib"]
        out["the limit was in effect"] = held(abs(total - LIMIT_MIB) <= 1,
                                              f"mem_get_info total {total} MiB")
    return out


def table(found: dict[str, Any]) -> str:
    lines = [f"Step: `gpu_train.py {found['sizes']}`; the fastest timed window of each "
             "configuration (bare: of its two runs, first and last).", "",
             "| configuration | best step (ms) | throughput vs bare |", "|---|---|---|"]
    for label, _, _ in CONFIGS:
        ms, r = found["best_ms"][label], ratio(found, label)
        lines.append(f"| {label} | {f'{ms:.2f}' if ms else 'n/a'} | "
                     f"{f'{r * 100:.1f} %' if r else 'n/a'} |")
    if found["no_cuda"]:
        lines += ["", f"No CUDA ({found['no_cuda']}): a toy size on the CPU, not a figure."]
    return "\n".join(lines)
