"""Shared helpers of the benchmarks: where the traces are, writing results, and how fast the
machine is at the time."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DEFAULT_TRACES = REPO.parent / "shared" / "traces" / "alibaba-gpu-v2023"


def trace_dir(given: str | None) -> Path:
    path = Path(given) if given else DEFAULT_TRACES
    if not (path / "openb_node_list_gpu_node.csv").is_file():
        raise SystemExit(f"openb traces not found in {path}: pass --traces DIR")
    return path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def parked_token(server: Any) -> str:
    """A token of a user whose team has no quota, so its jobs wait and nothing runs (mapped to
    root explicitly: a bench leaves no Unix account behind)."""
    with server.client() as admin:
        admin.post("/teams", json={"name": "parked", "quota_gpus": 0})
        admin.post("/users", json={"name": "bench", "team": "parked", "unix_user": "root"})
        return str(admin.post("/tokens", json={"user": "bench"}).json()["token"])


def speed_probe(runs: int = 5) -> float:
    """Median ms of a fixed pure-Python loop in this process: how fast the machine is at the
    time (its speed varies over a day, shared as it is; the figures of two runs compare only
    with their probes in mind)."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)
