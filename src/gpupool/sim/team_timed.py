"""Replay a multi-team workload through the shared queue cycle (``gpupool sim --mode timed
--workload``): the same cycle, quota tree, fair share, reservations and backfill as the live
server, on simulated time.

Rules of the replay:

* events are processed in batches of equal time: ends first (a job runs for its duration,
  or until its time limit if that comes first, and is then stopped, as the server does),
  then arrivals, then one cycle;
* a preempted job stops ``PREEMPT_STOP_S`` after the cycle that chose it (its grace period,
  short in the simulator) and waits again; it restarts from the beginning;
* ``whole_gpus`` rounds every share of a GPU up to a whole GPU (the no-sharing baseline).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from gpupool.core.cluster import NodeSpec
from gpupool.core.live import LiveJob
from gpupool.core.queue_order import QueuePolicy
from gpupool.core.quota import QueueQuota
from gpupool.core.request import MILLI_PER_GPU, Request
from gpupool.sim.team_metrics import JobRecord
from gpupool.sim.team_queues import TeamQueue
from gpupool.sim.team_sim import PoolSimulation
from gpupool.sim.workload import WorkloadJob

PREEMPT_STOP_S = 1.0

_END, _ARRIVE, _STEP = 0, 1, 2


@dataclass
class TeamRun:
    """What one replay produced: one record per job, the preemptions, the wall time."""

    records: list[JobRecord] = field(default_factory=list)
    preemptions: int = 0
    seconds: float = 0.0
    cycles: int = 0


def quota_of(team: TeamQueue) -> QueueQuota:
    lend = None if team.lend_limit_gpus is None else round(team.lend_limit_gpus * 1000)
    return QueueQuota(team.name, round(team.quota_gpus * 1000),
                      round(team.borrow_limit_gpus * 1000), team.cohort, lend)


def to_live(index: int, job: WorkloadJob, whole_gpus: bool) -> LiveJob:
    """The cycle's view of a workload job (``index`` is its id)."""
    milli = job.gpu_milli if job.num_gpu else 0
    if whole_gpus and 0 < milli < MILLI_PER_GPU:
        milli = MILLI_PER_GPU
    request = Request(job.job_id, job.cpu_milli, job.memory_mib, job.num_gpu, milli,
                      gpu_models=tuple(job.gpu_spec.split("|")) if job.gpu_spec else (),
                      priority=job.priority, queue=job.team)
    return LiveJob(index, job.team, job.priority, job.submit_time, request, grace_s=0.0,
                   nodes=job.nodes, user=job.user, time_limit_s=job.time_limit)


def run_team_timed(nodes: list[NodeSpec], jobs: list[WorkloadJob], teams: list[TeamQueue],
                   policy: str, order: str = "fairshare", backfill: bool = True,
                   whole_gpus: bool = False, seed: int = 0,
                   queue_policy: QueuePolicy | None = None) -> TeamRun:
    """Replay ``jobs`` on ``nodes`` (see the module's rules). ``queue_policy`` overrides
    ``order``/``backfill`` with a full policy; the teams' own default run limits are added
    to it. ``seed`` is kept for the run's label: the
    server's scheduler is seeded with 0 and so is this one, so that both decide alike."""
    started = time.perf_counter()
    qp = queue_policy or QueuePolicy(order=order, backfill=backfill)
    run_limits = {t.name: t.default_run_limit for t in teams if t.default_run_limit is not None}
    if run_limits:
        qp = replace(qp, run_s_by_queue={**qp.run_s_by_queue, **run_limits})
    sim = PoolSimulation(nodes, [quota_of(t) for t in teams], policy, qp,
                         {t.name: t.weight for t in teams})
    live = [to_live(i, job, whole_gpus) for i, job in enumerate(jobs)]
    runs = [job.duration if job.time_limit is None else min(job.duration, job.time_limit)
            for job in jobs]
    first_start: dict[int, float] = {}
    preempted: dict[int, int] = {}
    ends: dict[int, float] = {}
    events: list[tuple[float, int, int]] = [(j.submit_time, _ARRIVE, i)
                                            for i, j in enumerate(jobs)]
    heapq.heapify(events)
    end_at: dict[int, float] = {}  # the end event that counts, per running job
    out = TeamRun()
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, kind, index = heapq.heappop(events)
            if kind == _END and end_at.get(index) == now and index in sim.running:
                how = "preempted" if sim.running[index].stopping == "preempt" else "done"
                del end_at[index]
                sim.end(index, now, how)
                if how == "preempted":
                    preempted[index] = preempted.get(index, 0) + 1
                else:
                    ends[index] = now
            elif kind == _ARRIVE:
                sim.submit(live[index])
        outcome = sim.step(now)
        out.cycles += 1
        for placed in outcome.placed:
            first_start.setdefault(placed.id, now)
            end_at[placed.id] = now + max(runs[placed.id], 1e-9)
            heapq.heappush(events, (end_at[placed.id], _END, placed.id))
        for victim, _ in outcome.preemptions:
            stop = now + PREEMPT_STOP_S
            if end_at.get(victim.id, math.inf) > stop:
                end_at[victim.id] = stop
                heapq.heappush(events, (stop, _END, victim.id))
    out.preemptions = sim.preemptions
    runs_of: dict[int, list[tuple[float, float]]] = {}
    for attempt in sim.attempts:
        if attempt.end is not None:
            runs_of.setdefault(attempt.job_id, []).append((attempt.start, attempt.end))
    for i, job in enumerate(jobs):
        gpus = live[i].amount / 1000
        out.records.append(JobRecord(job.job_id, job.team, job.user, job.submit_time,
                                     first_start.get(i), ends.get(i), gpus,
                                     preempted.get(i, 0), tuple(runs_of.get(i, ()))))
    out.seconds = time.perf_counter() - started
    return out


def capacity_gpus(nodes: Sequence[NodeSpec]) -> float:
    """Whole GPUs in the pool."""
    return float(sum(len(n.gpus) for n in nodes))
