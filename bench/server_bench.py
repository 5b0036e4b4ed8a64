"""Control-plane benchmark: submit throughput, submit-to-running latency (SQLite and
PostgreSQL, a real `gpupool up` process), and one scheduling cycle with 10,000 pending jobs
over 1,000 fake nodes (in process). Writes bench/results/server.md.

    .venv/bin/python bench/server_bench.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from _common import RESULTS, machine, parked_token

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gpupool.core.cluster import ClusterState, GpuSpec, NodeSpec
from gpupool.core.quota import QueueQuota, QuotaBook
from gpupool.core.request import Request
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import PolicyContext, build_profile
from gpupool.server.cycle import LiveJob, run_cycle
from server_harness import make_server, postgres_available


def measure_server(backend: str, submits: int, threads: int, latency_samples: int) -> dict:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as tmp:
        gen = make_server(backend, Path(tmp), "1xA100-80GB")
        server = next(gen)
        try:
            token = parked_token(server)
            with server.client() as admin:
                # Throughput: jobs that wait (their queue has no quota), so nothing runs.
                counter = iter(range(submits))
                lock = threading.Lock()

                def submitter() -> None:
                    with server.client(token) as c:
                        while True:
                            with lock:
                                if next(counter, None) is None:
                                    return
                            r = c.post("/jobs", json={"command": ["true"], "gpus": 1})
                            assert r.status_code == 201, r.text

                workers = [threading.Thread(target=submitter) for _ in range(threads)]
                started = time.perf_counter()
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                rate = submits / (time.perf_counter() - started)
                # Latency: one CPU job at a time, from before the POST to its "running" event.
                latencies = []
                for _ in range(latency_samples):
                    t0 = time.time()
                    job_id = admin.post("/jobs", json={"command": ["true"]}).json()["id"]
                    while True:
                        events = admin.get(f"/jobs/{job_id}").json()["events"]
                        running = [e for e in events if e["phase"] == "running"]
                        if running:
                            at = datetime.fromisoformat(running[0]["at"]).timestamp()
                            latencies.append((at - t0) * 1000)
                            break
                        time.sleep(0.002)
            return {
                "submits_per_s": rate,
                "p50_ms": statistics.median(latencies),
                "p99_ms": float(np.percentile(latencies, 99)),
            }
        finally:
            for _ in gen:
                pass


def measure_cycle(
    nodes: int, pending: int, fill: float, policy: str = "gpupool"
) -> tuple[float, int, int]:
    """Seconds of one cycle, jobs evaluated, jobs placed; the cluster pre-filled to ``fill``."""
    specs = [
        NodeSpec(f"n{i:04d}", 128_000, 1_048_576, tuple(GpuSpec("A100", 81920) for _ in range(8)))
        for i in range(nodes)
    ]
    state = ClusterState(specs)
    scheduler = Scheduler(state, build_profile(policy, state, PolicyContext()))
    rng = np.random.default_rng(0)
    shapes = [(1, 1000), (1, 500), (1, 250), (2, 1000), (4, 1000), (8, 1000), (1, 810)]
    quota = QuotaBook([QueueQuota(f"team{t}", 2_000_000, 1_000_000) for t in range(10)])
    target = fill * nodes * 8000
    used = 0
    i = 0
    while used < target:
        n, milli = shapes[int(rng.integers(len(shapes)))]
        d = scheduler.place(Request(f"f{i}", 4000, 16384, n, milli))
        if d.placed:
            used += n * milli
        i += 1
        if i > nodes * 40:
            break
    jobs = []
    for j in range(pending):
        n, milli = shapes[int(rng.integers(len(shapes)))]
        request = Request(str(j), 4000, 16384, n, milli, priority=int(rng.integers(3)))
        jobs.append(LiveJob(j, f"team{j % 10}", request.priority, float(j), request))
    started = time.perf_counter()
    outcome = run_cycle(scheduler, quota, jobs, [], budget_s=None)
    return time.perf_counter() - started, outcome.evaluated, len(outcome.placed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--out", default=str(RESULTS / "server.md"))
    args = parser.parse_args()
    rows = []
    for backend in ("sqlite", "postgres"):
        if backend == "postgres" and (why := postgres_available()):
            rows.append(f"| {backend} | skipped: {why} | | | |")
            continue
        m = measure_server(backend, args.submits, args.threads, args.latency_samples)
        rows.append(
            f"| {backend} | {m['submits_per_s']:,.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} |"
        )
        print(rows[-1], flush=True)
    cycles = []
    for policy in ("gpupool", "bestfit"):
        for fill, label in ((0.97, "steady state: 97 % full"), (0.0, "cold start: empty")):
            seconds, evaluated, placed = measure_cycle(1000, 10_000, fill, policy)
            cycles.append(
                f"| {policy} | {label} | {seconds * 1000:,.0f} | {evaluated:,} | {placed:,} |"
            )
            print(cycles[-1], flush=True)
    lines = [
        "# Control-plane benchmark",
        "",
        "Generated by `bench/server_bench.py`. A real `gpupool up` process (fake GPUs) on this",
        f"machine ({machine()}); clients on loopback.",
        "",
        f"Submit throughput: {args.submits} submissions from {args.threads} threads (HTTP",
        "keep-alive), into a queue without quota so nothing starts. Latency: one CPU job at a",
        f"time ({args.latency_samples} samples), from before the POST to the job's `running`",
        "event (process launched). Targets: p50 ≤ 50 ms, ≥ 500 submits/s.",
        "",
        "| database | submits / s | submit→running p50 (ms) | p99 (ms) |",
        "|---|---|---|---|",
        *rows,
        "",
        "One scheduling cycle (`server/cycle.py`, quota checks on; gpupool is the server's",
        "default policy, bestfit for comparison) with 10,000",
        "pending jobs of 7 shapes over 1,000 nodes × 8 A100. Target: ≤ 100 ms. In the cold",
        "start every job fits until the cluster is full; the server then also caps a cycle at",
        "0.25 s and continues on the next tick.",
        "",
        "| policy | scenario | cycle (ms) | jobs evaluated | jobs placed |",
        "|---|---|---|---|---|",
        *cycles,
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
