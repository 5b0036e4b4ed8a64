"""The differential test of the one-cycle promise: the same arrivals, cancels and ends, on
one injected clock, into the live server's loop (a real Controller over real SQLite with a
scripted executor) and into the simulator give the same placements, preemptions and
reservations, step by step."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gpupool.schemas.jobs import JobSpec
from pool_twin import TeamDef, Twin

SHAPES = [  # (gpus, nodes) of the jobs drawn
    (0.25, 1), (0.5, 1), (0.5, 1), (1, 1), (1, 1), (2, 1), (4, 1), (2, 2),
]


def spec(gpus: float, nodes: int, priority: int, limit: float | None) -> JobSpec:
    return JobSpec(command=["true"], gpus=gpus, nodes=nodes, priority=priority,
                   time_limit_s=limit, grace_period_s=1)


def run_twin(tmp_path: Path, seed: int, **settings: object) -> dict[str, int]:
    """Drive a random day of three teams through both sides; returns how many steps were
    compared and how many starts, preemptions and reservations they agreed on."""
    rng = np.random.default_rng(seed)
    teams = [TeamDef("a", 4, 8), TeamDef("b", 4, 8, weight=2.0), TeamDef("c", 0, 8)]
    twin = Twin(tmp_path, nodes=3, cards=4, teams=teams, **settings)
    arrivals: dict[float, list[tuple[str, JobSpec, float]]] = {}
    t = 0.0
    for _ in range(70):
        t += float(rng.choice([0.0, 5.0, 10.0, 20.0]))
        gpus, nodes = SHAPES[int(rng.integers(len(SHAPES)))]
        duration = float(rng.choice([15.0, 30.0, 60.0, 120.0]))
        limit = duration + 30.0 if rng.random() < 0.5 else None
        priority = int(rng.choice([0, 0, 5]))
        team = str(rng.choice(["a", "b", "c"]))
        arrivals.setdefault(t, []).append((team, spec(gpus, nodes, priority, limit), duration))
    ends: dict[float, list[int]] = {}
    cancels: dict[float, list[int]] = {}
    start = twin.clock.now
    seen = {"steps": 0, "started": 0, "preempted": 0, "reservations": 0, "backfilled": 0}
    for tick in range(0, 800, 5):
        now = float(tick)
        twin.clock.now = start + now
        for team, job_spec, duration in arrivals.get(now, []):
            job_id = twin.submit(team, job_spec)
            if rng.random() < 0.08:
                cancels.setdefault(now + float(rng.choice([5.0, 40.0])), []).append(job_id)
            twin.durations[job_id] = duration
        for job_id in ends.pop(now, []):
            if job_id in twin.sim.running and twin.sim.running[job_id].started_at == \
                    twin.clock.now - twin.durations[job_id]:
                twin.finish(job_id)
        for job_id in cancels.pop(now, []):
            if job_id in twin.sim.pending or job_id in twin.sim.running:
                twin.cancel(job_id)
        server, sim = twin.step()
        assert server == sim, f"step at t={now:g} s (seed {seed})"
        for job_id, _ in sim["started"]:
            ends.setdefault(now + twin.durations[job_id], []).append(job_id)
        seen["steps"] += 1
        for key in ("started", "preempted", "reservations", "backfilled"):
            seen[key] += len(sim[key])
    return seen


@pytest.mark.parametrize("seed", [1, 2])
def test_server_and_simulator_decide_alike_with_fair_share_and_backfill(
        tmp_path: Path, seed: int) -> None:
    seen = run_twin(tmp_path, seed, queue_order="fairshare", backfill=True,
                    reserve_after_s=30.0, default_run_limit_s=90.0)
    assert seen["steps"] == 160 and seen["started"] >= 60
    assert seen["preempted"] > 0 and seen["reservations"] > 0  # the run exercised both


def test_server_and_simulator_decide_alike_in_fifo_without_backfill(tmp_path: Path) -> None:
    seen = run_twin(tmp_path, 3, queue_order="fifo", backfill=False)
    assert seen["steps"] == 160 and seen["started"] >= 60 and seen["preempted"] > 0
    # without backfill the only reservations are the nodes kept for a preemptor
    assert seen["reservations"] > 0
