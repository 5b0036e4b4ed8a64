"""GPU acceptance, services section: two replicas of a small PyTorch model at 0.5 GPU each on
one real GPU vs one replica on the whole GPU, at the same load — requests/s and p99.

Against a real ``gpupool up`` on this machine (its real GPUs through NVML; ``--fake-gpus``
runs the same steps as a dry run, where the model runs with numpy on the CPU and the report
says so):

1. service ``half``: ``gpus: 0.5``, 2 replicas; both must land on one card (read back from
   the API); then ``--connections`` clients send ``GET /infer`` through the gateway back to
   back for ``--seconds``;
2. service ``whole``: ``gpus: 1``, 1 replica; the same load.

Each request is one forward pass of bench/gpu_service_app.py (an MLP, batch 8, fp16). The
replicas run with this interpreter (``sys.executable``): torch must be importable by it.

Run: ``.venv/bin/python bench/gpu_services.py [--fake-gpus 1xH200-141GB] [--out DIR]``;
writes ``gpu_services.md`` and ``.json`` in ``--out`` (default bench/results). The GPU
acceptance script (issue 21) calls :func:`run_section`.
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import RESULTS, machine
from server_harness import Server, job_reachable_dir, kill_leftover_jobs
from services_bench_http import Target, saturate

APP = Path(__file__).with_name("gpu_service_app.py")
SHAPES = {"half": (0.5, 2), "whole": (1, 1)}
"""Service name → (GPUs per replica, replicas)."""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _ready(api: httpx.Client, name: str, n: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = api.get(f"/services/{name}").json()
        if got["ready_replicas"] >= n:
            return dict(got)
        time.sleep(0.2)
    raise RuntimeError(f"service {name}: {n} replicas not ready within {timeout} s")


def _measure(api: httpx.Client, token: str, name: str, code: Path, connections: int,
             seconds: float) -> dict[str, Any]:
    gpus, replicas = SHAPES[name]
    spec = {"name": name, "command": [sys.executable, "app.py"], "workdir": str(code),
            "gpus": gpus, "replicas": {"min": replicas, "max": replicas},
            "readiness": {"path": "/healthz"}, "grace_period_s": 5}
    made = api.post("/services", json=spec)
    if made.status_code not in (200, 201):
        raise RuntimeError(f"deploy {name}: {made.status_code} {made.text}")
    svc = _ready(api, name, replicas, 180)
    url = httpx.URL(svc["url"])
    health = httpx.get(str(svc["url"]) + "healthz", trust_env=False, timeout=30,
                       headers={"Authorization": f"Bearer {token}"}).json()
    target = Target(name, url.path + "infer", url.host, url.port or 80,
                    headers={"Authorization": f"Bearer {token}"})
    saturate(target, connections, min(2.0, seconds))  # warm-up
    sat = saturate(target, connections, seconds)
    api.delete(f"/services/{name}")
    deadline = time.monotonic() + 60
    while api.get(f"/services/{name}").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    return {"gpus_per_replica": gpus, "replicas": replicas,
            "placement": [[r["node"], r["gpus"], r["gpu_share"]] for r in svc["replicas"]],
            "device": health.get("device"), "rps": sat.rps, "not_200": sat.not_200,
            "p50_ms": _pct(sat.latencies_ms, 0.5), "p99_ms": _pct(sat.latencies_ms, 0.99),
            "requests": len(sat.latencies_ms)}


def run_section(fake_gpus: str, connections: int = 8, seconds: float = 20.0) -> dict[str, Any]:
    """The section's steps against a new server (see the module); its findings."""
    home = Path(tempfile.mkdtemp(prefix="gpsvc-"))
    code = job_reachable_dir("gpsvc-app-")
    shutil.copy(APP, code / "app.py")
    server = Server(home / "home", "", fake_gpus)
    server.home.mkdir(parents=True)
    server.start()
    found: dict[str, Any] = {"fake_gpus": fake_gpus or None, "connections": connections,
                             "seconds": seconds}
    try:
        with httpx.Client(base_url=f"{server.url}/api/v1", timeout=60, trust_env=False,
                          headers={"Authorization": f"Bearer {server.token}"}) as api:
            found["card"] = api.get("/nodes").json()[0]["gpus"][0]
            for name in SHAPES:
                found[name] = _measure(api, server.token, name, code, connections, seconds)
        cards = {json.dumps(p[1]) for p in found["half"]["placement"]}
        found["half_on_one_card"] = len(cards) == 1
    finally:
        server.stop()
        kill_leftover_jobs(server.home)
        shutil.rmtree(server.work_dir, ignore_errors=True)
        shutil.rmtree(code, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    return found


def report(found: dict[str, Any]) -> str:
    dry = "cpu" in {found["half"]["device"], found["whole"]["device"]}
    lines = ["## Services: two half-GPU replicas vs one whole-GPU replica", "",
             f"On {machine()}; card: {found['card'].get('model')} "
             f"({'fake GPUs, a dry run: the model ran with numpy on the CPU' if dry else 'real'}"
             f"). {found['connections']} clients through the gateway, back to back, "
             f"{found['seconds']:.0f} s per shape after a warm-up; each request one forward "
             "pass (MLP 4×2048, batch 8, fp16).", "",
             "| shape | device | placement | req/s | p50 (ms) | p99 (ms) | not 200 |",
             "|---|---|---|---|---|---|---|"]
    for name in SHAPES:
        r = found[name]
        where = "; ".join(f"{n} {g} ×{s}" for n, g, s in r["placement"])
        lines.append(f"| {r['replicas']} × {r['gpus_per_replica']} GPU | {r['device']} | "
                     f"{where} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['not_200']} |")
    lines += ["", f"Both half replicas on one card: {found['half_on_one_card']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fake-gpus", default="",
                        help="a dry run on fake GPUs (e.g. 1xH200-141GB); default: the real ones")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    found = run_section(args.fake_gpus, args.connections, args.seconds)
    out = Path(args.out)
    (out / "gpu_services.json").write_text(json.dumps(found, indent=1) + "\n")
    (out / "gpu_services.md").write_text(report(found))
    print(report(found))


if __name__ == "__main__":
    main()
