"""The live server's scheduling cycle, in memory: ordering, quota, reclaim, priority."""

from __future__ import annotations

import numpy as np

from gpupool.core.cluster import ClusterState, GpuSpec, NodeSpec
from gpupool.core.quota import QueueQuota, QuotaBook
from gpupool.core.request import Request
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import PolicyContext, build_profile
from gpupool.server.cycle import LiveJob, find_victims, run_cycle

A100 = GpuSpec("A100", 81920)


def setup(gpus: int = 2) -> tuple[Scheduler, QuotaBook]:
    state = ClusterState([NodeSpec("n0", 64000, 262144, (A100,) * gpus)])
    scheduler = Scheduler(state, build_profile("bestfit", state, PolicyContext()))
    quota = QuotaBook([QueueQuota("a", 1000, 1000), QueueQuota("b", 1000, 0)])
    return scheduler, quota


def job(i: int, queue: str, gpus: int = 1, priority: int = 0, milli: int = 1000) -> LiveJob:
    return LiveJob(
        i, queue, priority, float(i), Request(str(i), 0, 0, gpus, milli, priority=priority)
    )


def start(scheduler: Scheduler, quota: QuotaBook, live: LiveJob) -> LiveJob:
    out = run_cycle(scheduler, quota, [live], [])
    assert out.placed == [live]
    live.started_at = float(live.id)
    return live


def test_within_quota_work_goes_before_borrowing_work() -> None:
    scheduler, quota = setup(gpus=1)
    quota.add("a", 1000)  # queue a already uses its quota: its next job would borrow
    borrower = job(1, "a", priority=5)
    owner = job(2, "b")
    out = run_cycle(scheduler, quota, [borrower, owner], [])
    assert out.placed == [owner]
    assert out.reasons[1].startswith("needs 1 whole GPU")


def test_quota_refusal_names_the_queue_and_the_numbers() -> None:
    scheduler, quota = setup()
    quota.add("b", 1000)
    out = run_cycle(scheduler, quota, [job(1, "b")], [])
    assert out.placed == []
    assert out.reasons[1] == (
        "queue b would exceed its quota: it uses 1 of 1 guaranteed + 0 borrowable GPUs "
        "and this job needs 1"
    )


def test_reclaim_takes_back_only_borrowed_work_and_leaves_the_state_unchanged() -> None:
    scheduler, quota = setup(gpus=2)
    first = start(scheduler, quota, job(1, "a"))
    second = start(scheduler, quota, job(2, "a"))  # borrowed
    before = scheduler.state.gpu_left.copy()
    victims = find_victims(scheduler, quota, job(3, "b"), [first, second])
    assert victims == [second]  # newest borrowed job
    assert np.array_equal(scheduler.state.gpu_left, before)
    assert quota.usage["a"] == 2000


def test_priority_preemption_picks_the_lowest_priority_then_newest() -> None:
    scheduler, quota = setup(gpus=2)
    quota.queues["a"] = QueueQuota("a", 2000, 0)
    low_old = start(scheduler, quota, job(1, "a", priority=1))
    low_new = start(scheduler, quota, job(2, "a", priority=0))
    urgent = job(3, "a", priority=9)
    out = run_cycle(scheduler, quota, [urgent], [low_old, low_new])
    assert [(v.id, p.id) for v, p in out.preemptions] == [(2, 3)]
    assert low_new.stopping == "preempt" and urgent.nominated
    assert out.reasons[3].startswith("waiting for 1 preempted job(s) to stop")
    # no second round of preemption while a victim is still stopping
    again = run_cycle(scheduler, quota, [job(4, "a", priority=9)], [low_old, low_new])
    assert again.preemptions == []


def test_a_nominated_job_goes_first_once_capacity_frees() -> None:
    scheduler, quota = setup(gpus=1)
    early = job(1, "a", priority=5)
    nominated = job(2, "a")
    nominated.nominated = True
    out = run_cycle(scheduler, quota, [early, nominated], [])
    assert out.placed == [nominated]
    assert not nominated.nominated


def test_a_failed_shape_is_not_tried_again_in_the_same_cycle() -> None:
    scheduler, quota = setup(gpus=1)
    quota.queues["a"] = QueueQuota("a", 100_000, 0)
    pending = [job(i, "a", gpus=2) for i in range(500)]
    out = run_cycle(scheduler, quota, pending, [])
    assert out.placed == [] and out.evaluated == 500
    assert len(set(out.reasons.values())) == 1
