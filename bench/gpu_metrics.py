"""GPU acceptance, metrics section: a real PyTorch job's GPU utilisation and memory appear in
``/metrics`` (``gpupool_job_gpu_*``), in ``gpupool describe`` and in ``gpupool usage``.

Against a real ``gpupool up`` on this machine (its GPUs through NVML, sampled every second):

1. one job on a whole GPU runs matmuls of two 8192² float32 matrices in a loop for
   ``seconds`` (default 20), holding a few GiB;
2. while it runs, ``/metrics`` is scraped every second: the job's utilisation and memory
   series (with its team) and its card's ``gpupool_gpu_utilization_ratio``;
3. once it ended, ``describe`` (API and CLI) gives its mean and peak utilisation, peak
   memory and GPU-hours, and ``gpupool usage --by job --json`` its ``gpu_seconds_used``.

With ``--fake-gpus`` (a dry run: no NVML, no CUDA; the job sleeps instead) the section checks
that the server says per-job NVML figures could not be measured: no job series, ``describe``
says "not measured", ``gpu_seconds_used`` is null.

Run: ``.venv/bin/python bench/gpu_metrics.py [--fake-gpus 1xH200-141GB] [--seconds 20]
[--out DIR]``; writes ``gpu_metrics.md`` and ``.json`` in ``--out`` (default bench/results).
The GPU acceptance script calls :func:`run_section`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from _common import RESULTS, machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from server_harness import Server, kill_leftover_jobs

TORCH_LOOP = """
import sys, time
seconds = float(sys.argv[1])
try:
    import torch
    assert torch.cuda.is_available(), "CUDA is not available"
except Exception as exc:
    print(f"skipped={type(exc).__name__}: {exc}", flush=True)
    time.sleep(seconds)
    sys.exit(0)
a = torch.randn(8192, 8192, device="cuda")
b = torch.randn(8192, 8192, device="cuda")
end, n = time.time() + seconds, 0
while time.time() < end:
    c = a @ b
    n += 1
    if n % 20 == 0:
        torch.cuda.synchronize()
torch.cuda.synchronize()
print(f"matmuls={n} held={torch.cuda.max_memory_allocated()}", flush=True)
"""
DONE = ("succeeded", "failed", "cancelled")


def run_section(fake_gpus: str, seconds: float = 20.0) -> dict[str, Any]:
    """The section's steps against a new server (see the module); its findings."""
    home = Path(tempfile.mkdtemp(prefix="gpmet-"))
    server = Server(home / "home", "", fake_gpus,
                    extra_args=("--gpu-sample-interval", "1", "--gpu-idle-after", "10m"))
    server.home.mkdir(parents=True)
    server.start()
    found: dict[str, Any] = {"fake_gpus": fake_gpus or None, "seconds": seconds}
    try:
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=60, trust_env=False,
                          headers={"Authorization": f"Bearer {server.token}"}) as api:
            node = api.get("/nodes").json()[0]
            found["source"] = node["source"]
            found["card"] = node["gpus"][0] if node["gpus"] else None
            made = api.post("/jobs", json={"name": "matmul", "gpus": 1, "command": [
                "python", "-c", TORCH_LOOP, str(seconds)]})
            assert made.status_code == 201, made.text
            job = str(made.json()["id"])
            found["job"] = job
            found["scrapes"] = _watch(server, api, job, seconds)
            view = api.get(f"/jobs/{job}").json()
            found["phase"] = view["phase"]
            found["placement"] = view["placement"]
            found["gpu_usage"] = view["gpu_usage"]
            found["gpu_memory_limit_mib"] = view["gpu_memory_limit_mib"]
            found["log"] = api.get(f"/jobs/{job}/logs").json()["data"][-400:]
        found["describe"] = [line for line in _cli(server, "describe", job).splitlines()
                             if line.lstrip().startswith("GPU")]
        rows = json.loads(_cli(server, "usage", "--by", "job", "--json"))
        found["usage_row"] = next((r for r in rows if r["key"] == job), None)
    finally:
        server.stop()
        kill_leftover_jobs(server.home)
        shutil.rmtree(server.work_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    found["verdict"] = verdict(found)
    return found


def _watch(server: Server, api: httpx.Client, job: str,
           seconds: float) -> dict[str, Any]:
    """Scrape every second until the job ended: the highest job and GPU figures seen."""
    seen: dict[str, Any] = {"job_util_max": None, "job_memory_max": None, "gpu_util_max": None,
                            "team": None, "scrapes": 0}
    deadline = time.monotonic() + seconds + 300
    while time.monotonic() < deadline:
        if api.get(f"/jobs/{job}").json()["phase"] in DONE:
            break
        answer = httpx.get(f"{server.url}/metrics", timeout=30, trust_env=False,
                           headers={"Authorization": f"Bearer {server.token}"})
        seen["scrapes"] += 1
        for family in text_string_to_metric_families(answer.text):
            for s in family.samples:
                key = {"gpupool_job_gpu_utilization_ratio": "job_util_max",
                       "gpupool_job_gpu_memory_used_bytes": "job_memory_max",
                       "gpupool_gpu_utilization_ratio": "gpu_util_max"}.get(s.name)
                if key is None or (key != "gpu_util_max" and s.labels.get("job") != job):
                    continue
                seen[key] = max(seen[key] or 0.0, s.value)
                if key != "gpu_util_max":
                    seen["team"] = s.labels.get("team")
        time.sleep(1.0)
    return seen


def _cli(server: Server, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gpupool.cli.main", *args, "--url",
                           server.url, "--token", server.token], capture_output=True,
                          text=True, timeout=120, check=False, env={**server.env,
                                                                    "COLUMNS": "200"})
    return done.stdout if done.returncode == 0 else f"exit {done.returncode}: {done.stderr}"


def verdict(found: dict[str, Any]) -> dict[str, str]:
    """Per check: "held", "failed: why" or "skipped: why"."""
    out: dict[str, str] = {}
    seen, usage, row = found["scrapes"], found["gpu_usage"], found["usage_row"] or {}
    described = " ".join(found["describe"])
    if found["fake_gpus"]:
        unmeasured = (seen["job_util_max"] is None and seen["job_memory_max"] is None
                      and usage is None and "not measured" in described
                      and row.get("gpu_seconds_used", 0) is None)
        out["per-job NVML figures"] = (
            "skipped: not measured on fake GPUs (no NVML), as the server says" if unmeasured
            else f"failed: a dry run reported figures: {seen}, {usage}, {described!r}")
        return out
    if "skipped=" in found["log"]:
        out["PyTorch job"] = f"skipped: {found['log'].split('skipped=', 1)[1].strip()}"
    util, memory = seen["job_util_max"], seen["job_memory_max"]
    out["job utilisation in /metrics"] = (
        "held" if util is not None and util >= 0.3 else f"failed: highest {util}")
    out["job memory in /metrics"] = (
        "held" if memory is not None and memory >= 1 << 30 else f"failed: highest {memory}")
    out["GPU utilisation in /metrics"] = (
        "held" if (seen["gpu_util_max"] or 0) >= 0.3 else f"failed: {seen['gpu_util_max']}")
    out["describe shows the figures"] = (
        "held" if usage and usage["peak_memory_mib"] and "mean" in described
        else f"failed: {usage}, {described!r}")
    out["usage has gpu_seconds_used"] = (
        "held" if row.get("gpu_seconds_used") else f"failed: {row}")
    return out


def write(found: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_metrics.json").write_text(json.dumps(found, indent=2) + "\n")
    card = found["card"] or {}
    lines = ["# GPU acceptance: metrics (NVML per job)", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {machine()}; GPUs: "
             f"{found['fake_gpus'] or 'real (NVML)'}; card {card.get('model')} "
             f"{card.get('memory_mib')} MiB; a {found['seconds']:g} s matmul job on one GPU.",
             "", "| check | result |", "|---|---|"]
    lines += [f"| {check} | {result} |" for check, result in found["verdict"].items()]
    seen = found["scrapes"]
    lines += ["", f"Highest in /metrics: job utilisation {seen['job_util_max']}, job memory "
              f"{seen['job_memory_max']} bytes, GPU utilisation {seen['gpu_util_max']} "
              f"({seen['scrapes']} scrapes)."]
    lines += ["", "describe:", "", *[f"    {line.strip()}" for line in found["describe"]]]
    (out / "gpu_metrics.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fake-gpus", default="",
                        help="declare fake GPUs (a dry run), e.g. 1xH200-141GB; default: "
                        "this machine's real GPUs")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="how long the job runs its matmuls (default 20)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    found = run_section(args.fake_gpus, args.seconds)
    write(found, args.out)
    for check, result in found["verdict"].items():
        print(f"{check}: {result}")


if __name__ == "__main__":
    main()
