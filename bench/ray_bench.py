"""Scale-out benchmark on a real multi-node Ray cluster on loopback (issue 4).

1. Gang start: submit an 8-worker job (4 nodes × 2 GPUs, one process per GPU) and time
   submit → placed (the "starting" event) → launched (the "running" event) → all 8 ranks
   running (each rank prints time.time() first thing; the last one counts).
2. Poll round: with many processes running across the nodes, how long one round of polling
   takes with the executor's batched ``poll_many`` (one concurrent round of agent calls)
   against polling the handles one by one (an executor-level measure, no server).
3. Node loss: a 2-GPU job with restart on-failure runs on one node; its raylet is SIGKILLed
   and we time kill → the server acting on it (the job's "node … lost; retry" event) → the
   job running again on another node.

Every node is a raylet of its own on this machine (see tests/ray_cluster.py), so the
figures include the 2-core machine's contention between the raylets, the server and the
client. Writes bench/results/ray.md and ray.json.

    .venv/bin/python bench/ray_bench.py [--gang-runs 5] [--losses 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

# Before anything imports Ray: this driver must stay on 127.0.0.1 like the cluster.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from _common import RESULTS, machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ray_cluster import LoopbackCluster, private_home, ray_available
from server_harness import Server, wait_for

RANK_PROBE = "import os, time; print('rank', os.environ['RANK'], repr(time.time()), flush=True)"


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _event(view: dict, phase: str, contains: str = "", after: float = 0.0) -> float:  # type: ignore[type-arg]
    for e in view["events"]:
        if e["phase"] == phase and contains in e["message"] and _at(e["at"]) >= after:
            return _at(e["at"])
    raise AssertionError(f"no {phase} event with {contains!r} in {view['events']}")


def _final(c: httpx.Client, job_id: str, timeout: float = 120) -> dict:  # type: ignore[type-arg]
    return wait_for(lambda: (v := c.get(f"/jobs/{job_id}").json())["phase"]
                    in ("succeeded", "failed", "cancelled") and v, timeout=timeout)


def gang_start(c: httpx.Client) -> dict[str, float]:
    submitted = time.time()
    r = c.post("/jobs", json={"command": [sys.executable, "-c", RANK_PROBE], "gpus": 2,
                              "nodes": 4, "procs_per_node": 2, "name": "gang8"})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    view = _final(c, job_id)
    assert view["phase"] == "succeeded", view
    log = c.get(f"/jobs/{job_id}/logs", params={"limit": 1 << 20}).json()["data"]
    starts = {int(x.split()[1]): float(x.split()[2]) for x in log.splitlines()
              if x.startswith("rank ")}
    assert sorted(starts) == list(range(8)), log
    return {
        "placed": _event(view, "starting") - submitted,
        "launched": _event(view, "running") - submitted,
        "all_running": max(starts.values()) - submitted,
    }


def node_loss(c: httpx.Client, cluster: LoopbackCluster, tmp: Path, i: int) -> dict[str, float]:
    marker = tmp / f"loss{i}"
    script = ("import os, time, pathlib\n"
              "if os.environ['GPUPOOL_ATTEMPT'] == '1':\n"
              f"    pathlib.Path({str(marker)!r}).write_text('x')\n"
              "    time.sleep(600)\n")
    r = c.post("/jobs", json={"command": [sys.executable, "-c", script], "gpus": 2,
                              "restart": "on-failure", "max_retries": 1, "name": f"loss{i}"})
    job_id = r.json()["id"]
    wait_for(marker.exists, timeout=60)
    node = c.get(f"/jobs/{job_id}").json()["placement"]["node"]
    killed = cluster.kill_node(node)
    view = _final(c, job_id)
    assert view["phase"] == "succeeded", view
    acted = _event(view, "pending", "lost", after=killed)
    return {"acted": acted - killed,
            "running_again": _event(view, "running", after=acted) - killed}


def poll_round(cluster: LoopbackCluster, tmp: Path, processes: int, rounds: int
               ) -> dict[str, float]:
    """Median seconds of one poll round over ``processes`` sleepers, batched vs one by one."""
    from gpupool.executors.base import LaunchSpec
    from gpupool.executors.ray_executor import RayPool, connect

    connect(cluster.address)
    runs = tmp / "pollruns"
    pool = RayPool(runs)
    nodes = [n.name for n in pool.inventory().nodes if n.name != "head"]
    handles = [pool.launch(LaunchSpec(
        job_id=str(i), attempt=1, command=["sleep", "120"], log_path=str(runs / f"{i}.log"),
        run_dir=str(runs / str(i) / "1"), node=nodes[i % len(nodes)]))
        for i in range(processes)]
    try:
        batched, single = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            assert all(o is None for o in pool.poll_many(handles))
            batched.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert all(pool.poll(h) is None for h in handles)
            single.append(time.perf_counter() - started)
    finally:
        for handle in handles:
            pool.kill(handle)
        import ray

        ray.shutdown()
    return {"processes": processes, "nodes": len(nodes),
            "batched": statistics.median(batched), "one_by_one": statistics.median(single)}


def _summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return (f"{statistics.median(ms):.0f} ms (min {ms[0]:.0f}, max {ms[-1]:.0f}, "
            f"n={len(ms)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gang-runs", type=int, default=5)
    parser.add_argument("--losses", type=int, default=3)
    parser.add_argument("--poll-processes", type=int, default=64)
    args = parser.parse_args()
    if (why := ray_available()) is not None:
        raise SystemExit(why)
    cluster = LoopbackCluster()
    gang: list[dict[str, float]] = []
    loss: list[dict[str, float]] = []
    polls: dict[str, float] = {}
    try:
        cluster.start_head()
        for n in range(4 + args.losses):
            cluster.add_node(f"n{n + 1}", "2xA100-80GB", f"rack=r{n // 4 + 1}")
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(Path(tmp) / "home", "", "", extra_args=("--ray", cluster.address),
                            extra_env=private_home(cluster.temp_dir))
            server.home.mkdir()
            server.start()
            try:
                with server.client() as c:
                    wait_for(lambda: len(c.get("/nodes").json()) == 5 + args.losses, 60)
                    for run in range(args.gang_runs):
                        gang.append(gang_start(c))
                        print(f"gang run {run + 1}: {gang[-1]}", flush=True)
                    polls = poll_round(cluster, Path(tmp), args.poll_processes, 10)
                    print(f"poll round: {polls}", flush=True)
                    for i in range(args.losses):
                        loss.append(node_loss(c, cluster, Path(tmp), i))
                        print(f"node loss {i + 1}: {loss[-1]}", flush=True)
            finally:
                server.stop()
    finally:
        cluster.stop()
    write(gang, loss, polls)


def write(gang: list[dict[str, float]], loss: list[dict[str, float]],
          polls: dict[str, float]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ray.json").write_text(
        json.dumps({"gang": gang, "loss": loss, "poll_round": polls}, indent=1) + "\n")
    lines = [
        "# Scale-out on Ray: gang start and node loss",
        "",
        f"Machine: {machine()}. A real Ray cluster on loopback: a head and "
        f"{4 + len(loss)} raylets on this one machine (each with 2 fake A100 and its own "
        "agent), `gpupool up --ray` on SQLite. Regenerate: `.venv/bin/python "
        "bench/ray_bench.py`.",
        "",
        "## 8-worker gang (4 nodes × 2 GPUs, one process per GPU): time from submit",
        "",
        "| step | median (min, max) |",
        "|---|---|",
        f"| placed (all 4 node ranks, one cycle) | {_summary([g['placed'] for g in gang])} |",
        f"| launched (8 processes started through 4 agents) | "
        f"{_summary([g['launched'] for g in gang])} |",
        f"| all 8 ranks running (last rank's first line) | "
        f"{_summary([g['all_running'] for g in gang])} |",
        "",
        f"## One poll round over {polls['processes']} running processes on {polls['nodes']} "
        "nodes (median of 10)",
        "",
        f"- batched (`poll_many`, one concurrent round of agent calls): "
        f"{polls['batched'] * 1000:.1f} ms",
        f"- one by one (`poll` per handle): {polls['one_by_one'] * 1000:.1f} ms",
        "",
        "## Node loss (raylet SIGKILLed under a running 2-GPU job): time from the kill",
        "",
        "| step | median (min, max) |",
        "|---|---|",
        f"| noticed and acted on (rank failed \"node … lost\", job requeued) | "
        f"{_summary([x['acted'] for x in loss])} |",
        f"| running again on another node | {_summary([x['running_again'] for x in loss])} |",
        "",
        "The server notices a loss from its agent: the next poll of the node's processes "
        "fails because the agent's worker died with its raylet. Ray's own health check "
        "(which marks the node dead in `ray.nodes()`) takes longer by default (about 15 s "
        "here) and is the fallback when the agent cannot be polled.",
    ]
    (RESULTS / "ray.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "ray.md").read_text())


if __name__ == "__main__":
    main()
