"""Reservations and backfill in the shared cycle: a 4-GPU job waiting behind a stream of
half-GPU jobs in the same queue starts within a bound, while small jobs go on around it."""

from __future__ import annotations

import numpy as np

from gpupool.core.cluster import ClusterState, GpuSpec, NodeSpec
from gpupool.core.live import LiveJob
from gpupool.core.queue_cycle import run_cycle
from gpupool.core.queue_order import QueuePolicy
from gpupool.core.quota import QueueQuota, QuotaBook
from gpupool.core.request import Request
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import PolicyContext, build_profile
from gpupool.sim.team_queues import TeamQueue
from gpupool.sim.team_timed import run_team_timed
from gpupool.sim.workload import WorkloadJob

A100 = GpuSpec("A100", 81920)
NODES = [NodeSpec(f"n{i}", 64000, 262144, (A100,) * 4) for i in range(2)]
RUN_S = 100.0
TEAM = [TeamQueue("t", 8, 8)]  # quota never binds here: capacity does


def stream(limit: float | None = None, until: float = 3000.0) -> list[WorkloadJob]:
    """Half-GPU jobs of 100 s, one every 6.25 s (16 slots / 100 s: the pool stays full),
    and at t=50 one job that needs a whole node (4 GPUs)."""
    jobs = [WorkloadJob(f"s{i}", "t", "u", i * 6.25, RUN_S, 1, 500, 0, 0, "", 0, limit)
            for i in range(int(until / 6.25))]
    jobs.append(WorkloadJob("big", "t", "u", 50.0, RUN_S, 4, 1000, 0, 0, "", 0, None))
    return sorted(jobs, key=lambda j: j.submit_time)


def start_of(backfill: bool, jobs: list[WorkloadJob]) -> tuple[float | None, int]:
    run = run_team_timed(NODES, jobs, TEAM, "bestfit", order="fifo", backfill=backfill)
    big = next(r for r in run.records if r.job_id == "big")
    small_started = sum(1 for r in run.records if r.job_id != "big" and r.start is not None
                        and big.start is not None and 50.0 < r.start <= big.start)
    return big.start, small_started


def test_without_backfill_the_big_job_starves_while_small_jobs_keep_arriving() -> None:
    start, _ = start_of(False, stream())
    assert start is None or start >= 3000.0  # only once the stream has stopped


def test_a_reservation_starts_the_big_job_within_one_run_time() -> None:
    """Bound: the reservation is made by the first cycle that reconsiders every waiting job
    (here when the first running job ends, t=100); the jobs on the reserved node then all
    end within one run time, and no job without a time limit may start there. So the big
    job starts by t=100+100 (here at 143.75, when the last of them ends)."""
    start, small_started = start_of(True, stream())
    assert start is not None and 50.0 < start <= 100.0 + RUN_S
    assert small_started > 0  # small jobs started on the other node while it waited


def test_small_jobs_with_a_short_time_limit_backfill_onto_the_reserved_node() -> None:
    """Small jobs limited to 120 s end before the reservation's estimated start (one hour
    for running jobs without a limit): they may use the reserved node meanwhile, so the big
    job may wait up to one more limit, and no longer."""
    jobs = [j if j.job_id == "big" else
            WorkloadJob(j.job_id, j.team, j.user, j.submit_time, j.duration, j.num_gpu,
                        j.gpu_milli, 0, 0, "", 0, 120.0) for j in stream()]
    run = run_team_timed(NODES, jobs, TEAM, "bestfit", order="fifo", backfill=True,
                         queue_policy=QueuePolicy(order="fifo", backfill=True,
                                                  default_run_s=600.0))
    big = next(r for r in run.records if r.job_id == "big")
    assert big.start is not None and big.start <= 100.0 + RUN_S + 120.0


def test_the_pending_reasons_say_reserved_for_and_the_state_is_unchanged() -> None:
    state = ClusterState(NODES[:1])
    scheduler = Scheduler(state, build_profile("bestfit", state, PolicyContext()))
    quota = QuotaBook([QueueQuota("t", 8000, 8000)])
    running = []
    for i in range(8):  # eight half-GPU jobs fill the node, each started at t=i
        job = LiveJob(i, "t", 0, float(i), Request(str(i), num_gpus=1, gpu_milli=500))
        out = run_cycle(scheduler, quota, [job], running, now=float(i))
        job.started_at = float(i)
        running.extend(out.placed)
    free_before = state.gpu_left.copy()
    big = LiveJob(10, "t", 0, 10.0, Request("10", num_gpus=4, gpu_milli=1000))
    policy = QueuePolicy(backfill=True, default_run_s=100.0)
    out = run_cycle(scheduler, quota, [big], running, now=10.0, policy=policy)
    assert big.reservation is not None and big.reservation.start_at == 107.0
    assert "1 node(s) reserved for it, expected to start in about 2 min" in out.reasons[10]
    assert np.array_equal(state.gpu_left, free_before)
    # one GPU's half frees; a small job without a time limit may not take it
    scheduler.release(running[0].allocations[0])
    quota.remove("t", 500)
    running = running[1:]
    small = LiveJob(11, "t", 0, 11.0, Request("11", num_gpus=1, gpu_milli=500))
    out = run_cycle(scheduler, quota, [small], running, now=12.0, policy=policy,
                    holders=[big], complete=False)
    assert out.placed == []
    assert out.reasons[11].startswith("the free capacity that fits it is reserved for job 10")
    # with a time limit that ends before the reservation's start, it backfills
    small.time_limit_s = 60.0
    out = run_cycle(scheduler, quota, [small], running, now=12.0, policy=policy,
                    holders=[big], complete=False)
    assert out.placed == [small]
    assert out.backfilled == {11: (10, 72.0)}  # on job 10's node until its limit ends
