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


# ---------------------------------------------------------------- multi-node jobs (gangs)


def cluster(nodes: int, gpus: int = 2) -> tuple[Scheduler, QuotaBook]:
    state = ClusterState([NodeSpec(f"n{i}", 64000, 262144, (A100,) * gpus)
                          for i in range(nodes)])
    scheduler = Scheduler(state, build_profile("gpupool", state, PolicyContext()))
    return scheduler, QuotaBook([QueueQuota("a", 8000, 0), QueueQuota("b", 2000, 8000)])


def gang(i: int, queue: str, nodes: int, gpus: int = 2, priority: int = 0) -> LiveJob:
    live = job(i, queue, gpus=gpus, priority=priority)
    live.nodes = nodes
    return live


def test_a_gang_takes_one_node_per_rank_and_counts_every_rank_in_its_quota() -> None:
    scheduler, quota = cluster(3)
    g = gang(1, "a", nodes=3)
    out = run_cycle(scheduler, quota, [g], [])
    assert out.placed == [g]
    assert sorted(a.node for a in g.allocations) == [0, 1, 2]
    assert quota.usage["a"] == 6000 and g.amount == 6000


def test_a_gang_that_does_not_fit_waits_whole_with_its_reason() -> None:
    scheduler, quota = cluster(2)
    start(scheduler, quota, job(1, "a", gpus=1))
    before = scheduler.state.gpu_left.copy()
    out = run_cycle(scheduler, quota, [gang(2, "a", nodes=2)], [])
    assert out.placed == []
    assert np.array_equal(scheduler.state.gpu_left, before)  # nothing half-placed
    assert "gang 2 (2 tasks) cannot be placed together" in out.reasons[2]


def test_a_gang_that_would_pass_its_quota_is_refused_naming_it() -> None:
    scheduler, quota = cluster(3)
    quota.queues["a"] = QueueQuota("a", 4000, 0)
    out = run_cycle(scheduler, quota, [gang(1, "a", nodes=3)], [])
    assert out.placed == []
    assert "queue a would exceed its quota" in out.reasons[1]
    assert "this job needs 6" in out.reasons[1]


def test_reclaim_for_a_gang_stops_enough_borrowed_work_on_distinct_nodes() -> None:
    scheduler, quota = cluster(2)
    quota.queues["b"] = QueueQuota("b", 0, 8000)  # everything b runs is borrowed
    borrowed = [start(scheduler, quota, job(i, "b", gpus=2)) for i in (1, 2)]
    assert quota.borrowed("b") == 4000
    g = gang(3, "a", nodes=2)
    out = run_cycle(scheduler, quota, [g], borrowed)
    assert sorted(v.id for v, _ in out.preemptions) == [1, 2]  # one node each is not enough
    assert g.nominated
    # Once the victims are gone the gang is placed first, on both nodes.
    for victim in borrowed:
        for allocation in victim.allocations:
            scheduler.release(allocation)
        quota.remove(victim.queue, victim.amount)
    out = run_cycle(scheduler, quota, [job(4, "a", gpus=2), g], [])
    assert out.placed[0] is g and sorted(a.node for a in g.allocations) == [0, 1]


def test_the_free_capacity_a_preemptor_counts_on_is_kept_for_it() -> None:
    """Kubernetes' nominated node: victims free part of what the job needs; the rest is free
    now and must not go to a job ordered after it while the victims stop."""
    scheduler, quota = setup(gpus=2)
    quota.queues["b"] = QueueQuota("b", 2000, 0)
    quota.queues["a"] = QueueQuota("a", 0, 2000)
    borrowed = start(scheduler, quota, job(1, "a"))  # a borrows one GPU; one GPU is free
    big = job(2, "b", gpus=2, priority=5)
    small = job(3, "b", gpus=1)
    out = run_cycle(scheduler, quota, [big, small], [borrowed], now=100.0)
    assert [(v.id, p.id) for v, p in out.preemptions] == [(1, 2)]
    assert out.placed == []  # the small job may not take the GPU the big one counts on
    assert big.reservation is not None and big.reservation.nodes.tolist() == [True]
    assert out.reasons[3].startswith("the free capacity that fits it is reserved for job 2")
