"""Quota holds (issue 16, the starved job of a queue limited by its own quota): the first job
of a queue that its quota refuses holds that quota, so later, smaller jobs of the queue do not
take each share of quota it frees; a later job starts only if its time limit ends before the
holder is expected to be admitted. On the shared cycle (core) and through the simulator."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gpupool.core.cluster import ClusterState, GpuSpec, NodeSpec
from gpupool.core.live import LiveJob
from gpupool.core.queue_cycle import run_cycle
from gpupool.core.queue_order import GREEDY_FIFO, QueuePolicy
from gpupool.core.quota import QueueQuota, QuotaBook
from gpupool.core.request import Request
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import PolicyContext, build_profile
from gpupool.sim.team_queues import TeamQueue
from gpupool.sim.team_timed import run_team_timed
from gpupool.sim.workload import WorkloadJob

A100 = GpuSpec("A100", 81920)
NODES = [NodeSpec(f"n{i}", 64000, 262144, (A100,) * 4) for i in range(2)]  # 8 GPUs: room
BACKFILL = QueuePolicy(order="fifo", backfill=True)


def job(job_id: int, gpus: int, created: float, limit: float | None = None) -> LiveJob:
    return LiveJob(job_id, "t", 0, created, Request(f"j{job_id}", 1000, 1024, gpus, 1000),
                   grace_s=0.0, time_limit_s=limit)


def pool() -> tuple[Scheduler, QuotaBook, list[LiveJob]]:
    """Team t (quota 4 GPUs, borrows none) runs two 1-GPU jobs without a time limit since
    0 s; the cluster has 8 GPUs, so only the quota binds."""
    state = ClusterState(NODES)
    scheduler = Scheduler(state, build_profile("bestfit", state, PolicyContext()))
    book = QuotaBook([QueueQuota("t", 4000, 0)])
    running = [job(-1, 1, 0.0), job(-2, 1, 0.0)]
    out = run_cycle(scheduler, book, running, [], policy=GREEDY_FIFO)
    assert len(out.placed) == 2
    for r in running:
        r.started_at = 0.0
    return scheduler, book, running


def test_the_first_refused_job_holds_its_queues_quota() -> None:
    scheduler, book, running = pool()
    big, small, short = job(1, 4, 10.0), job(2, 1, 20.0), job(3, 1, 30.0, limit=600.0)
    out = run_cycle(scheduler, book, [big, small, short], running, now=100.0, policy=BACKFILL)
    assert out.quota_holds == {1: 3600.0}  # both running jobs assumed to run the default 1 h
    assert big.quota_hold == 3600.0
    assert "its queue's quota is held for it, expected to be admitted in about 58 min" in (
        out.reasons[1])
    assert out.reasons[2] == ("its queue's quota is held for job 1, expected to be admitted "
                              "in about 58 min; a time limit under about 58 min would let "
                              "it start now")
    assert [j.id for j in out.placed] == [3]  # ends before the holder is admitted: starts


def test_without_backfill_the_small_job_takes_the_quota_as_before() -> None:
    scheduler, book, running = pool()
    big, small = job(1, 4, 10.0), job(2, 1, 20.0)
    out = run_cycle(scheduler, book, [big, small], running, now=100.0, policy=GREEDY_FIFO)
    assert out.quota_holds == {} and big.quota_hold is None
    assert [j.id for j in out.placed] == [2]


def test_a_job_its_queue_can_never_admit_holds_nothing() -> None:
    scheduler, book, running = pool()
    huge, small = job(1, 5, 10.0), job(2, 1, 20.0)  # over the quota even with the queue idle
    out = run_cycle(scheduler, book, [huge, small], running, now=100.0, policy=BACKFILL)
    assert out.quota_holds == {}
    assert [j.id for j in out.placed] == [2]


def test_the_hold_is_kept_and_the_holder_goes_first_until_admitted() -> None:
    scheduler, book, running = pool()
    small, big, later = job(2, 1, 5.0), job(1, 4, 10.0), job(3, 1, 150.0)
    out = run_cycle(scheduler, book, [small], running, now=100.0, policy=BACKFILL)
    assert [j.id for j in out.placed] == [2]  # the queue's first job fits: 3 GPUs of 4
    small.started_at = 100.0
    running.append(small)
    # The order tries `later` first (it fits the quota); the queue's head is `big`, refused
    # before anything is placed: it holds the quota, and `later` waits.
    out = run_cycle(scheduler, book, [later, big], running, now=200.0, policy=BACKFILL)
    assert out.placed == [] and big.quota_hold == 3700.0  # all three must end: the last at 3700
    assert out.reasons[3].startswith("its queue's quota is held for job 1")
    # A cycle of new jobs only (nothing ended): the hold stands through `holders`.
    newer = job(4, 1, 300.0)
    out = run_cycle(scheduler, book, [newer], running, now=300.0, policy=BACKFILL,
                    holders=[big], complete=False)
    assert out.placed == [] and out.reasons[4].startswith("its queue's quota is held for job 1")
    assert big.quota_hold == 3700.0  # not tried: kept as it was
    for ended in running:  # everything else ends: the holder is admitted, first
        for allocation in ended.allocations:
            scheduler.release(allocation)
        book.remove("t", ended.amount)
    out = run_cycle(scheduler, book, [later, newer, big], [], now=4000.0, policy=BACKFILL)
    assert out.placed == [big] and big.quota_hold is None


def stream(whole: int) -> list[WorkloadJob]:
    """Team t: a 1-GPU job of 100 s every 30 s for 3 hours, and at 50 s one job of 4 GPUs."""
    jobs = [WorkloadJob(f"s{i}", "t", "u", 30.0 * i, 100.0, 1, 1000, 1000, 1024, "", 0, None)
            for i in range(360)]
    jobs.append(WorkloadJob("big", "t", "u", 50.0, 100.0, whole, 1000, 1000, 1024, "", 0,
                            None))
    return jobs


@pytest.mark.parametrize("backfill", [False, True], ids=["no-backfill", "backfill"])
def test_the_big_job_of_a_quota_bound_queue_starts_within_a_bound(backfill: bool) -> None:
    """Four 1-GPU jobs of 100 s at a time keep team t's quota of 4 busy (one every 30 s):
    without holds the 4-GPU job waits for the whole stream (3 hours); with them it starts
    once the small jobs already running end. Bound: 150 s after it arrived. It arrives
    between two ends, in a cycle of new jobs only, which cannot know it is its queue's first
    (two more small jobs start then); the next end's full cycle gives it the hold, and the
    small jobs running then end within 100 s (measured: 140 s)."""
    teams = [TeamQueue("t", 4.0, 0.0)]
    run = run_team_timed(NODES, stream(4), teams, "bestfit", order="fifo", backfill=backfill)
    big = next(r for r in run.records if r.job_id == "big")
    assert big.start is not None
    if backfill:
        assert big.start - big.submit <= 150.0
    else:
        assert big.start >= 30.0 * 359  # only after the stream dries up


def test_through_the_server_the_small_job_says_whose_hold_it_waits_for(tmp_path: Path) -> None:
    from inprocess_api import InProcessServer

    server = InProcessServer(tmp_path, nodes=1, cards=4)  # 4 GPUs; the team's quota is 2
    made = server.admin.post("/teams", json={"name": "t", "quota_gpus": 2,
                                             "borrow_limit_gpus": 0})
    assert made.status_code == 201, made.text
    tess = server.user("tess", "t")

    def submit(gpus: int) -> int:
        done = tess.post("/jobs", json={"command": ["sleep", "100"], "gpus": gpus})
        assert done.status_code == 201, done.text
        return int(done.json()["id"])

    first, second = submit(1), submit(1)
    server.step()
    big = submit(2)
    small = submit(1)
    server.executor.end(first)  # 1 of 2 GPUs of quota used: the small job would fit it
    server.step(10)
    view = tess.get(f"/jobs/{small}").json()
    assert view["phase"] == "pending"
    assert view["reason"].startswith(f"its queue's quota is held for job {big}, expected to "
                                     "be admitted in about 60 min")
    assert "its queue's quota is held for it" in tess.get(f"/jobs/{big}").json()["reason"]
    server.executor.end(second)
    server.step(10)
    assert tess.get(f"/jobs/{big}").json()["phase"] == "running"
    assert tess.get(f"/jobs/{small}").json()["phase"] == "pending"


@pytest.mark.parametrize("seed", range(30))
def test_the_admission_estimate_is_the_first_end_that_lets_the_job_in(seed: int) -> None:
    """quota_frees_at halves its way to the answer; here the queue's jobs end one by one
    (cohorts, lending and borrowing limits drawn at random)."""
    import random

    from gpupool.core.reservations import expected_end, quota_frees_at

    rng = random.Random(seed)
    cohort = rng.choice([None, "lab"])
    book = QuotaBook([QueueQuota("t", rng.choice([0, 2000, 4000]), rng.choice([0, 2000, 8000]),
                                 cohort, rng.choice([None, 0, 1000])),
                      QueueQuota("o", rng.choice([0, 4000]), rng.choice([0, 4000]), cohort,
                                 rng.choice([None, 1000]))])
    book.add("o", rng.choice([0, 1000, 3000]))
    running = []
    for i in range(rng.randint(0, 12)):
        r = job(-1 - i, rng.choice([1, 2]), 0.0, limit=rng.choice([None, 60.0, 900.0]))
        r.allocations = ((),)  # type: ignore[assignment]  # holds something: its amount
        r.started_at = float(rng.randint(0, 500))
        running.append(r)
        book.add("t", r.amount)
    waiting = job(1, rng.choice([1, 2, 4, 8]), 0.0)
    before = dict(book.usage)
    got = quota_frees_at(book, waiting, running, [], 600.0, 3600.0)
    assert book.usage == before
    expected = None
    for r in sorted(running, key=lambda r: (expected_end(r, 600.0, 3600.0), r.id)):
        book.remove("t", r.amount)
        if book.refusal("t", waiting.amount) is None:
            expected = expected_end(r, 600.0, 3600.0)
            break
    assert got == expected
