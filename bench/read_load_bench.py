"""Reads against writes: submit latency while clients loop ``GET /jobs?limit=10000``.

A real `gpupool up` process on SQLite with 10,000 jobs in its database. One client submits
jobs that do ``true`` (one at a time, into a queue without quota, so they stay pending);
meanwhile 0 or 4 other clients each loop ``GET /api/v1/jobs?limit=10000``. Reported: submit
p50/p99, ``/healthz`` p50/p99 under the same load, and the listings' own latency. Writes
bench/results/read_load.md and .json.

Each ``--tree LABEL=SRC`` runs the server from that source tree (``PYTHONPATH=SRC``), e.g.
a ``git worktree`` of the commit before the change for "before":

    git worktree add --detach /tmp/before HEAD
    .venv/bin/python bench/read_load_bench.py --tree before=/tmp/before/src --tree after=src
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _common import REPO, RESULTS, machine, parked_token

sys.path.insert(0, str(REPO / "tests"))
from server_harness import make_server, wait_for

LISTING = "/jobs?limit=10000"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def seed(server: Any, token: str, jobs: int) -> None:
    """``jobs`` ended jobs of the bench user: one submitted and cancelled through the API,
    copied in SQL (the server keeps running; SQLite's busy timeout covers the overlap)."""
    with server.client(token) as c:
        job_id = c.post("/jobs", json={"command": ["true"], "gpus": 1}).json()["id"]
        c.post(f"/jobs/{job_id}/cancel")
        wait_for(lambda: c.get(f"/jobs/{job_id}").json()["phase"] == "cancelled")
    conn = sqlite3.connect(server.home / "gpupool.db", timeout=60)
    try:
        conn.execute("PRAGMA busy_timeout=60000")
        cols = [r[1] for r in conn.execute("PRAGMA table_info(jobs)") if r[1] not in ("id",
                                                                                    "origin")]
        names = ", ".join(cols)
        with conn:
            conn.execute(
                f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                f"INSERT INTO jobs ({names}) SELECT {names} FROM jobs, n WHERE jobs.id = ?",
                (jobs - 1, int(job_id)),
            )
        count = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    finally:
        conn.close()
    assert count >= jobs, count


def phase(server: Any, token: str, readers: int, submits: int, max_s: float) -> dict[str, Any]:
    stop = threading.Event()
    listings: list[float] = []
    errors: list[str] = []

    def reader() -> None:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=300,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = c.get(LISTING)
                if r.status_code != 200:
                    errors.append(f"GET {LISTING}: {r.status_code} {r.text[:200]}")
                    return
                listings.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(readers)]
    for t in threads:
        t.start()
    if readers:
        wait_for(lambda: len(listings) >= readers, timeout=120)  # every reader is looping
    submit_ms: list[float] = []
    health_ms: list[float] = []
    started = time.perf_counter()
    with server.client(token) as c, httpx.Client(base_url=server.url, timeout=300) as h:
        c.timeout = httpx.Timeout(300)
        for _ in range(submits):
            if time.perf_counter() - started > max_s:
                break
            t0 = time.perf_counter()
            r = c.post("/jobs", json={"command": ["true"], "gpus": 1})
            submit_ms.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 201, r.text
        started = time.perf_counter()
        for _ in range(submits):
            if time.perf_counter() - started > max_s / 4:
                break
            t0 = time.perf_counter()
            assert h.get("/healthz").status_code == 200
            health_ms.append((time.perf_counter() - t0) * 1000)
    stop.set()
    for t in threads:
        t.join(300)
    assert not errors, errors
    wal = server.home / "gpupool.db-wal"
    return {
        "readers": readers,
        "submits": len(submit_ms),
        "submit_p50_ms": statistics.median(submit_ms),
        "submit_p99_ms": pct(submit_ms, 99),
        "healthz_samples": len(health_ms),
        "healthz_p50_ms": statistics.median(health_ms),
        "healthz_p99_ms": pct(health_ms, 99),
        "listings": len(listings),
        "listing_p50_s": statistics.median(listings) if listings else None,
        "wal_bytes_after": wal.stat().st_size if wal.exists() else 0,
    }


def run_tree(label: str, src: Path, jobs: int, submits: int, reader_counts: list[int],
             max_s: float) -> dict[str, Any]:
    env = {"PYTHONPATH": str(src)}
    where = subprocess.run(
        [sys.executable, "-c", "import gpupool; print(gpupool.__file__)"],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Path(where).resolve().is_relative_to(src.resolve()), (src, where)
    with tempfile.TemporaryDirectory() as tmp:
        gen = make_server("sqlite", Path(tmp), "1xA100-80GB", extra_env=env)
        server = next(gen)
        try:
            token = parked_token(server)
            seed(server, token, jobs)
            phase(server, token, 0, 20, max_s)  # warm-up
            results = []
            for readers in reader_counts:
                r = phase(server, token, readers, submits, max_s)
                print(label, json.dumps(r), flush=True)
                results.append(r)
        finally:
            for _ in gen:
                pass
    return {"src": str(src), "gpupool": where, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[],
                        help="LABEL=SRC: run the server from SRC (default: after=REPO/src)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--submits", type=int, default=200)
    parser.add_argument("--readers", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--max-seconds", type=float, default=120,
                        help="stop a phase's submits after this long (the slow 'before')")
    parser.add_argument("--out", default=str(RESULTS / "read_load.md"))
    args = parser.parse_args()
    trees = [t.split("=", 1) for t in args.tree] or [["after", str(REPO / "src")]]
    data: dict[str, Any] = {
        "machine": machine(), "jobs": args.jobs, "submits": args.submits,
        "max_seconds": args.max_seconds, "trees": {},
    }
    for label, src in trees:
        data["trees"][label] = run_tree(label, Path(src), args.jobs, args.submits,
                                        args.readers, args.max_seconds)
    rows = []
    for label, tree in data["trees"].items():
        for r in tree["results"]:
            listing = f"{r['listing_p50_s']:.2f}" if r["listing_p50_s"] is not None else "–"
            rows.append(
                f"| {label} | {r['readers']} | {r['submits']} | {r['submit_p50_ms']:,.1f} | "
                f"{r['submit_p99_ms']:,.1f} | {r['healthz_p50_ms']:,.1f} | "
                f"{r['healthz_p99_ms']:,.1f} | {r['listings']} | {listing} |"
            )
    lines = [
        "# Reads against writes",
        "",
        "Generated by `bench/read_load_bench.py`. A real `gpupool up` process on SQLite (fake",
        f"GPUs) on this machine ({machine()}); clients on loopback. The database holds",
        f"{args.jobs:,} ended jobs of the bench user. One client submits up to {args.submits}",
        "jobs that do `true`, one at a time, into a queue without quota (they stay pending);",
        "meanwhile N other clients each loop `GET /api/v1/jobs?limit=10000` (every listing",
        f"returns 10,000 jobs). A phase stops submitting after {args.max_seconds:.0f} s, so the",
        "slow rows have fewer samples. Then as many `/healthz` as submits, under the same load.",
        "",
        "| server | listing clients | submits | submit p50 (ms) | p99 (ms) | healthz p50 (ms) "
        "| p99 (ms) | listings done | listing p50 (s) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Servers: " + "; ".join(f"{label} = `{t['src']}`" for label, t in data["trees"].items()),
        "",
    ]
    out = Path(args.out)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"written to {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
