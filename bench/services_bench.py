"""Inference services through gpupool's gateway, measured in one run on this machine
(writes bench/results/services.md and .json):

1. latency of one small request (``GET /work?ms=0`` of tests/service_app.py, a stdlib HTTP
   server) sent directly to the replica's port, to its front's Unix socket (the hop the
   gateway takes), through the gateway (with a token, as a client would), and through
   Debian's nginx as a plain reverse proxy to the replica's port (installed with apt when
   absent; skipped with the reason when it can't be);
2. requests/s at saturation (many kept-alive connections, one client process) for the same
   targets;
3. scale-up reaction: from the start of a load of 300 ms requests, when the service wants a
   second replica, when the second is ready, and when it serves its first request;
4. scale-from-zero cold start: a ``min: 0`` service with no replica, the first request through
   the gateway until its 200.

The server is a real ``gpupool up`` (fake GPUs, SQLite) with ``GPUPOOL_SANDBOX=none`` so that
the replica's port is reachable from the bench for the direct figure (with the sandbox, it
is not: that is the point of the per-replica network). Usage::

    .venv/bin/python bench/services_bench.py [--requests 2000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import RESULTS, machine, speed_probe
from server_harness import Server, job_reachable_dir, kill_leftover_jobs
from services_bench_http import (
    Connection,
    Target,
    latencies_ms,
    nginx_available,
    nginx_proxy,
    nginx_version,
    saturate,
)
from services_bench_report import write_report

APP = Path(__file__).resolve().parents[1] / "tests" / "service_app.py"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_for(what: Any, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(interval)
    raise RuntimeError(f"not within {timeout} s")


class Run:
    """One server, an admin API client, and the services deployed on it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds  # of saturation per target
        self.tmp = Path(tempfile.mkdtemp(prefix="gpsvcb"))
        self.code = job_reachable_dir("gpsvcb-app")
        shutil.copy(APP, self.code / "serve.py")
        self.server = Server(self.tmp / "home", "", "4xA100-80GB",
                             extra_env={"GPUPOOL_SANDBOX": "none"})
        self.server.home.mkdir(parents=True)

    def __enter__(self) -> Run:
        self.server.start()
        self.api = httpx.Client(base_url=self.server.url + "/api/v1", timeout=60,
                                trust_env=False,
                                headers={"Authorization": f"Bearer {self.server.token}"})
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.close()
        self.server.stop()
        kill_leftover_jobs(self.server.home)
        shutil.rmtree(self.server.work_dir, ignore_errors=True)
        shutil.rmtree(self.code, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def deploy(self, name: str, **over: Any) -> None:
        spec = {"name": name, "command": ["python3", "serve.py"], "workdir": str(self.code),
                "gpus": 0.25, "readiness": {"path": "/healthz"}, "grace_period_s": 5, **over}
        made = self.api.post("/services", json=spec)
        if made.status_code not in (200, 201):
            raise RuntimeError(f"deploy {name}: {made.status_code} {made.text}")

    def service(self, name: str) -> dict[str, Any]:
        return dict(self.api.get(f"/services/{name}").json())

    def endpoint(self, job_id: str) -> dict[str, Any]:
        with sqlite3.connect(self.server.home / "gpupool.db") as db:
            row = db.execute("SELECT endpoint FROM jobs WHERE id = ?",
                             (int(job_id),)).fetchone()
        return dict(json.loads(row[0]))

    def gateway_target(self, name: str, path: str) -> Target:
        url = httpx.URL(self.service(name)["url"])
        return Target("gateway", url.path + path, url.host, url.port or 80,
                      headers={"Authorization": f"Bearer {self.server.token}"})


def measure_latency(run: Run, requests: int, rounds: int) -> dict[str, Any]:
    run.deploy("lat", replicas={"min": 1, "max": 1})
    svc = wait_for(lambda: (lambda s: s if s["ready_replicas"] == 1 else None)(
        run.service("lat")), 120)
    end = run.endpoint(svc["replicas"][0]["id"])
    path = "work?ms=0"
    targets = [Target("direct", "/" + path, end["host"], int(end["port"])),
               Target("front (Unix socket)", "/" + path, uds=end["uds"]),
               run.gateway_target("lat", path)]
    why_not = nginx_available()
    out: dict[str, Any] = {"nginx": why_not or nginx_version(), "rows": {}}
    with nginx_proxy(f"{end['host']}:{end['port']}") if not why_not else _nothing() as port:
        if port:
            targets.append(Target("nginx", "/" + path, "127.0.0.1", port))
        samples: dict[str, list[float]] = {t.name: [] for t in targets}
        for _ in range(rounds):  # interleaved, so that a slow moment hits every target
            for t in targets:
                samples[t.name] += latencies_ms(t, requests // rounds)
        for t in targets:
            sat = saturate(t, 32, run.seconds)
            s = samples[t.name]
            out["rows"][t.name] = {"p50": pct(s, 0.5), "p90": pct(s, 0.9), "p99": pct(s, 0.99),
                                   "mean": statistics.fmean(s), "n": len(s),
                                   "rps": sat.rps, "not_200": sat.not_200, "closed": sat.closed,
                                   "p99_saturated": pct(sat.latencies_ms, 0.99)}
    run.api.delete("/services/lat")
    return out


class _nothing:
    def __enter__(self) -> int:
        return 0

    def __exit__(self, *exc: object) -> None:
        pass


def measure_scale_up(run: Run) -> dict[str, Any]:
    run.deploy("up", replicas={"min": 1, "max": 3},
               scaling={"target_inflight": 2, "cooldown_s": 5})
    first = wait_for(lambda: (lambda s: s if s["ready_replicas"] == 1 else None)(
        run.service("up")), 120)
    first_port = run.endpoint(first["replicas"][0]["id"])["port"]
    stop = threading.Event()
    target = run.gateway_target("up", "work?ms=300")
    t0 = time.monotonic()

    def load() -> None:
        conn = Connection(target)
        while not stop.is_set():
            conn.get()
        conn.close()

    threads = [threading.Thread(target=load, daemon=True) for _ in range(8)]
    marks: dict[str, float] = {}
    for t in threads:
        t.start()
    try:
        while time.monotonic() - t0 < 90 and "second serves" not in marks:
            s = run.service("up")
            now = time.monotonic() - t0
            if s["desired_replicas"] >= 2:
                marks.setdefault("wants a second replica", now)
            if s["ready_replicas"] >= 2:
                marks.setdefault("second replica ready", now)
                others = [r for r in s["replicas"]
                          if run.endpoint(r["id"]).get("port") != first_port
                          and r["state"] == "ready"]
                if others and int(others[0]["inflight"]) > 0:
                    marks.setdefault("second serves", now)
            time.sleep(0.05)
        peak = run.service("up")["ready_replicas"]
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    t1 = time.monotonic()
    wait_for(lambda: len(run.service("up")["replicas"]) == 1, 120, 0.1)
    marks_down = time.monotonic() - t1
    run.api.delete("/services/up")
    return {"marks": marks, "peak_ready": peak, "back_to_one_s": marks_down,
            "cooldown_s": 5}


def _watch_cold(run: Run, t0: float, marks: dict[str, float], done: threading.Event) -> None:
    """Until ``done``: when the replica appeared, ran, was ready (the API every 50 ms)."""
    while not done.is_set():
        for r in run.service("cold")["replicas"]:
            now = time.monotonic() - t0
            marks.setdefault("replica_submitted_s", now)
            if r["phase"] == "running":
                marks.setdefault("replica_running_s", now)
            if r["state"] == "ready":
                marks.setdefault("replica_ready_s", now)
        time.sleep(0.05)


def measure_cold_start(run: Run, tries: int) -> list[dict[str, float]]:
    run.deploy("cold", replicas={"min": 0, "max": 1},
               scaling={"target_inflight": 4, "cooldown_s": 2})
    client = httpx.Client(trust_env=False, timeout=120,
                          headers={"Authorization": f"Bearer {run.server.token}"})
    url = str(run.service("cold")["url"]) + "work?ms=0"
    out = []
    for _ in range(tries):
        wait_for(lambda: run.service("cold")["replicas"] == [], 120, 0.1)
        marks: dict[str, float] = {}
        done = threading.Event()
        t0 = time.monotonic()
        watcher = threading.Thread(target=_watch_cold, args=(run, t0, marks, done),
                                   daemon=True)
        watcher.start()
        answer = client.get(url)
        total = time.monotonic() - t0
        done.set()
        watcher.join(10)
        if answer.status_code != 200:
            raise RuntimeError(f"cold start: {answer.status_code} {answer.text}")
        again = time.monotonic()
        client.get(url)
        out.append({"first_request_s": total, **marks,
                    "next_request_ms": (time.monotonic() - again) * 1000})
    client.close()
    run.api.delete("/services/cold")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000,
                        help="latency samples per target (default 2000)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="seconds of saturation per target (default 5)")
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "services"),
                        help="path of the results without suffix")
    args = parser.parse_args()
    started = time.monotonic()
    probe = speed_probe()
    with Run(args.seconds) as run:
        print("latency and saturation ...", flush=True)
        latency = measure_latency(run, args.requests, 10)
        print("scale-up ...", flush=True)
        scale = measure_scale_up(run)
        print("cold starts ...", flush=True)
        cold = measure_cold_start(run, args.cold_starts)
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "speed_probe_ms": [probe, speed_probe()], "load": os.getloadavg()[0],
              "seconds": time.monotonic() - started, "latency": latency, "scale_up": scale,
              "cold_start": cold, "requests": args.requests, "saturate_s": args.seconds}
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    Path(args.out + ".md").write_text(write_report(result))
    print(f"wrote {args.out}.md and .json")


if __name__ == "__main__":
    main()
