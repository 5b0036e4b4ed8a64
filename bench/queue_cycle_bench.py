"""The shared queue cycle's speed (issue 16): one cycle over 10,000 waiting jobs on 1,000 nodes
of 8 A100, for each queue policy, at steady state (the pool full: nothing fits, every job is
judged) and at a cold start (an empty pool: ~3,400 jobs placed). Running jobs are passed to
the cycle (they count for fair share and for reservations). In process, no database. Writes
bench/results/queue_cycle.md and .json.

The machine is shared (2 CPUs, other jobs at times): each figure comes with the load average
and a speed probe taken around the run, and with the cycle's CPU time next to its wall time
(CPU time is less sensitive to other processes, not immune: they share caches). To compare
with code before a change, run this with ``PYTHONPATH=<that code's src> ... --json X.json
--no-md`` first, then pass ``--before X.json``."""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

import gpupool
from _common import RESULTS, speed_probe
from gpupool.core.cluster import ClusterState, GpuSpec, NodeSpec
from gpupool.core.fairshare import FairShare
from gpupool.core.live import LiveJob
from gpupool.core.queue_cycle import run_cycle
from gpupool.core.queue_order import QueuePolicy
from gpupool.core.quota import QueueQuota, QuotaBook
from gpupool.core.request import Request
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import PolicyContext, build_profile

SHAPES = [(1, 1000), (1, 500), (1, 250), (2, 1000), (4, 1000), (8, 1000), (1, 810)]
POLICIES = {
    "fifo": QueuePolicy(order="fifo", backfill=False),
    "fairshare": QueuePolicy(order="fairshare", backfill=False),
    "fairshare + backfill": QueuePolicy(order="fairshare", backfill=True),
}
SCENARIOS = {"steady state (pool full)": True, "cold start (empty pool)": False}
GOAL_MS = 100


def pool(nodes: int, fill: bool, seed: int = 0) -> tuple[Scheduler, QuotaBook, list[LiveJob]]:
    specs = [NodeSpec(f"n{i:04d}", 128_000, 1_048_576, (GpuSpec("A100", 81920),) * 8)
             for i in range(nodes)]
    state = ClusterState(specs)
    scheduler = Scheduler(state, build_profile("gpupool", state, PolicyContext()))
    quota = QuotaBook([QueueQuota(f"team{t}", 2_000_000, 1_000_000) for t in range(10)])
    running: list[LiveJob] = []
    rng = np.random.default_rng(seed)
    i = 0
    while fill and i < nodes * 40:
        n, milli = SHAPES[int(rng.integers(len(SHAPES)))]
        job = LiveJob(-1 - i, f"team{i % 10}", 0, 0.0, Request(f"f{i}", 4000, 16384, n, milli),
                      started_at=float(rng.integers(0, 3600)), user=f"u{i % 37}")
        decision = scheduler.place(job.request, explain=False)
        if decision.placed:
            job.allocations = decision.allocations
            quota.add(job.queue, job.amount)
            running.append(job)
        i += 1
    return scheduler, quota, running


def waiting(pending: int, seed: int = 1) -> list[LiveJob]:
    rng = np.random.default_rng(seed)
    jobs = []
    for j in range(pending):
        n, milli = SHAPES[int(rng.integers(len(SHAPES)))]
        request = Request(str(j), 4000, 16384, n, milli, priority=int(rng.integers(3)))
        jobs.append(LiveJob(j, f"team{j % 10}", request.priority, float(j), request,
                            user=f"u{j % 37}"))
    return jobs


def measure(policy: QueuePolicy, nodes: int, pending: int, fill: bool,
            repeats: int) -> dict[str, Any]:
    """Wall and CPU ms of each of ``repeats`` cycles (a fresh pool and fresh jobs each
    time; garbage collected before each, so that the setup's garbage is not charged to the
    cycle), and jobs evaluated / placed / reserved (last run)."""
    wall: list[float] = []
    cpu: list[float] = []
    evaluated = placed = reserved = 0
    for _ in range(repeats):
        scheduler, quota, running = pool(nodes, fill)
        jobs = waiting(pending)
        shares = FairShare({f"team{t}": 1.0 + t % 3 for t in range(10)})
        gc.collect()
        started, started_cpu = time.perf_counter(), time.process_time()
        out = run_cycle(scheduler, quota, jobs, running, now=4000.0, policy=policy,
                        shares=shares)
        cpu.append((time.process_time() - started_cpu) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
        evaluated, placed, reserved = out.evaluated, len(out.placed), len(out.reservations)
    return {"wall_ms": wall, "cpu_ms": cpu, "evaluated": evaluated, "placed": placed,
            "reservations": reserved}


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "code": args.label or str(Path(gpupool.__file__).resolve().parent),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
        "nodes": args.nodes, "pending": args.pending, "repeats": args.repeats,
        "load_before": os.getloadavg()[0], "probe_ms_before": speed_probe(), "rows": [],
    }
    for name, policy in POLICIES.items():
        for scenario, fill in SCENARIOS.items():
            row = {"policy": name, "scenario": scenario,
                   **measure(policy, args.nodes, args.pending, fill, args.repeats)}
            result["rows"].append(row)
            print(f"{name} | {scenario} | wall {statistics.median(row['wall_ms']):,.0f} ms | "
                  f"CPU {statistics.median(row['cpu_ms']):,.0f} ms | "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    result["load_after"] = os.getloadavg()[0]
    result["probe_ms_after"] = speed_probe()
    return result


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f}"


def _conditions(r: dict[str, Any]) -> str:
    return (f"load average {r['load_before']:.2f} before, {r['load_after']:.2f} after; "
            f"speed probe (a 1,000,000-step Python loop) {r['probe_ms_before']:.0f} ms "
            f"before, {r['probe_ms_after']:.0f} ms after; median of {r['repeats']} runs")


def markdown(after: dict[str, Any], before: dict[str, Any] | None) -> str:
    old = {(r["policy"], r["scenario"]): r for r in (before or {}).get("rows", [])}
    head = "| queue policy | scenario |"
    rule = "|---|---|"
    if before:
        head += " before wall (ms) | before CPU (ms) |"
        rule += "---|---|"
    head += (" wall (ms) | CPU (ms) | fastest wall (ms) | jobs evaluated | jobs placed | "
             "reservations |")
    rule += "---|---|---|---|---|---|"
    rows = []
    for r in after["rows"]:
        cells = f"| {r['policy']} | {r['scenario']} |"
        if before:
            b = old.get((r["policy"], r["scenario"]))
            cells += (f" {_ms(b['wall_ms'])} | {_ms(b['cpu_ms'])} |" if b else " – | – |")
        cells += (f" {_ms(r['wall_ms'])} | {_ms(r['cpu_ms'])} | {min(r['wall_ms']):,.0f} | "
                  f"{r['evaluated']:,} | {r['placed']:,} | {r['reservations']} |")
        rows.append(cells)
    notes = [f"- after: {after['code']}; {_conditions(after)}."]
    if before:
        notes.insert(0, f"- before: {before['code']}; {_conditions(before)}.")
        notes.append("- The two runs were made one after the other on this shared machine: "
                     "compare them with their loads and speed probes in mind.")
    return "\n".join([
        "# The shared queue cycle: speed",
        "",
        f"Generated by `bench/queue_cycle_bench.py`: one `core.queue_cycle.run_cycle` over "
        f"{after['pending']:,} waiting jobs (7 shapes from 0.25 to 8 GPUs, 10 teams, 37 "
        f"users, 3 priorities) on {after['nodes']:,} nodes of 8 A100, placement policy "
        f"`gpupool`, on this machine ({after['machine']}). Each figure is the median of "
        f"{after['repeats']} cycles, each on a fresh pool and fresh jobs (the jobs' request "
        "shapes are computed in the cycle, as for jobs the server has just loaded), garbage "
        "collected before each. Wall time is what the goal is about; CPU time is the "
        "cycle's process time, less sensitive to the other processes of this shared machine "
        "(the load average and the speed probe below say how busy it was). Steady state: "
        "the pool was filled first with random jobs (passed as running: they count for fair "
        "share and reservations), so nothing fits and every waiting job is judged (a shape "
        "that failed is not tried again in the cycle). Cold start: an empty pool. Goal "
        f"(ARCHITECTURE.md, issue 16): steady state ≤ {GOAL_MS} ms.",
        "",
        head,
        rule,
        *rows,
        "",
        *notes,
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "queue_cycle.md"))
    parser.add_argument("--json", default=str(RESULTS / "queue_cycle.json"),
                        help="where to write the raw figures")
    parser.add_argument("--before", default=None,
                        help="the JSON of an earlier run (e.g. of the code before a change) "
                             "to show next to this one")
    parser.add_argument("--no-md", action="store_true", help="write only the JSON")
    parser.add_argument("--label", default=None,
                        help="what code this is, for the notes (default: its path)")
    args = parser.parse_args()
    result = run(args)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")
    if not args.no_md:
        before = json.loads(Path(args.before).read_text()) if args.before else None
        Path(args.out).write_text(markdown(result, before))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
