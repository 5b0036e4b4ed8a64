"""The queue cycle's shortcuts (issue 16) decide nothing: with each replaced by the
straightforward computation it stands for, the cycle decides exactly the same.

* ``JobOrder`` (lazy heaps, cached loads and quota answers) yields the jobs in the order its
  definition gives when every key is computed afresh before each job (``NaiveOrder``), also
  when jobs are placed out of turn;
* ``EndOrder`` (the running jobs sorted once per cycle for all reservations) gives the
  batches and the jobs on a reservation's nodes as sorting them for each estimate does;
* whole cycles over random pools, quotas, fair shares, reservations, preemptions and time
  limits, several in a row (reservations kept from one cycle to the next), decide the same
  placements, reasons, preemptions, reservations and backfills with the shortcuts (``JobOrder``,
  the cycle's answers by shape, the blocked nodes by time limit, ``EndOrder``) as without.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from itertools import groupby
from typing import Any, cast

import numpy as np
import pytest

from gpupool.core import queue_cycle, reservations
from gpupool.core.cluster import Allocation, ClusterState, GpuSpec, NodeSpec
from gpupool.core.fairshare import FairShare
from gpupool.core.live import CycleOutcome, LiveJob, Reservation
from gpupool.core.queue_order import JobOrder, QueuePolicy
from gpupool.core.quota import QueueQuota, QuotaBook
from gpupool.core.request import Request
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import PolicyContext, build_profile


class NaiveOrder:
    """The queue order by its definition (core/queue_order.py), every key computed afresh
    before each job: O(jobs²), for comparison only."""

    def __init__(self, pending: list[LiveJob], running: list[LiveJob], quota: QuotaBook,
                 policy: QueuePolicy, shares: FairShare | None,
                 weight_of: Callable[[LiveJob], int]) -> None:
        self.quota = quota
        self.fair = policy.order == "fairshare"
        self.shares = shares or FairShare()
        self.weight_of = weight_of
        self.team_held: defaultdict[str, float] = defaultdict(float)
        self.user_held: defaultdict[tuple[str, str], float] = defaultdict(float)
        for job in running:
            if job.allocations:
                self.placed(job)
        self.left = list(pending)
        if not self.fair:  # "inside its quota" as at the start of the cycle
            self.left.sort(key=lambda j: (
                not j.nominated, j.reservation is None and j.quota_hold is None,
                not quota.within_quota(j.queue, j.amount), -j.priority, j.created_at, j.id))

    def _user_key(self, job: LiveJob) -> tuple[object, ...]:
        load = self.shares.user_load(job.queue, job.user, self.user_held[(job.queue, job.user)])
        return (not (job.nominated or job.reservation is not None
                     or job.quota_hold is not None), -job.priority, load, job.created_at, job.id)

    def _team_key(self, job: LiveJob) -> tuple[object, ...]:
        load = self.shares.team_load(job.queue, self.team_held[job.queue])
        return (not job.nominated, job.reservation is None and job.quota_hold is None,
                not self.quota.within_quota(job.queue, job.amount), load, -job.priority,
                job.created_at, job.id)

    def __iter__(self) -> Iterator[LiveJob]:
        if not self.fair:
            yield from self.left
            return
        while self.left:
            heads: dict[str, LiveJob] = {}
            for job in self.left:
                head = heads.get(job.queue)
                if head is None or self._user_key(job) < self._user_key(head):
                    heads[job.queue] = job
            job = min(heads.values(), key=lambda j: (self._team_key(j), j.queue))
            self.left.remove(job)
            yield job

    def placed(self, job: LiveJob) -> None:
        amount = self.weight_of(job)
        self.team_held[job.queue] += amount
        self.user_held[(job.queue, job.user)] += amount


def _request(rng: random.Random, name: str) -> Request:
    gpus, milli = rng.choice([(1, 250), (1, 500), (1, 1000), (2, 1000), (4, 1000), (0, 0)])
    return Request(name, rng.choice([0, 1000]), rng.choice([0, 1024]), gpus, milli)


@pytest.mark.parametrize("seed", range(60))
def test_job_order_follows_its_definition(seed: int) -> None:
    rng = random.Random(seed)
    teams = [f"t{i}" for i in range(rng.randint(1, 4))]
    users = [f"u{i}" for i in range(rng.randint(1, 4))]
    book = QuotaBook([QueueQuota(t, rng.choice([0, 1000, 3000, 10**6])) for t in teams])
    shares = FairShare({t: rng.choice([0.5, 1.0, 3.0]) for t in teams},
                       team_usage={t: rng.choice([0.0, 1e6]) for t in teams},
                       user_usage={(t, u): 5e5 for t in teams for u in users[:1]})
    held = cast("tuple[Allocation, ...]", (None,))  # the order only asks whether any
    running = [LiveJob(-1 - i, rng.choice(teams), 0, 0.0, _request(rng, f"r{i}"),
                       user=rng.choice(users), allocations=held if rng.random() < 0.8 else ())
               for i in range(rng.randint(0, 6))]
    pending = [LiveJob(j, rng.choice(teams), rng.randint(0, 2), float(rng.randint(0, 9)),
                       _request(rng, f"p{j}"), user=rng.choice(users),
                       nominated=rng.random() < 0.1)
               for j in range(rng.randint(0, 40))]
    for job in pending:
        if rng.random() < 0.1:
            job.reservation = Reservation(job.id, np.zeros(1, dtype=bool), 0.0)
        elif rng.random() < 0.1:
            job.quota_hold = 50.0

    def weight(job: LiveJob) -> int:
        return job.amount + 7

    for order in ("fifo", "fairshare"):
        policy = QueuePolicy(order=order)
        fast = JobOrder(pending, running, book, policy, shares, weight)
        naive = NaiveOrder(pending, running, book, policy, shares, weight)
        seen: list[int] = []
        for a, b in zip(fast, naive, strict=True):
            assert a is b, (order, seen)
            seen.append(a.id)
            if rng.random() < 0.5:  # placed, as the cycle does
                book.add(a.queue, a.amount)
                fast.placed(a)
                naive.placed(b)
            if rng.random() < 0.1:  # out of turn: a job not just yielded counts as placed
                other = rng.choice(pending)
                book.add(other.queue, other.amount)
                fast.placed(other)
                naive.placed(other)
        assert sorted(seen) == sorted(j.id for j in pending)
        assert dict(fast.team_held) == pytest.approx(dict(naive.team_held))


def _cluster(rng: random.Random, count: int) -> Scheduler:
    specs = [NodeSpec(f"n{i}", rng.choice([8000, 64000]), rng.choice([65536, 1048576]),
                      (GpuSpec(rng.choice(["A100", "H100"]), 81920),) * rng.choice([0, 2, 4, 8]))
             for i in range(count)]
    state = ClusterState(specs)
    return Scheduler(state, build_profile(rng.choice(["gpupool", "random"]), state,
                                          PolicyContext(rng=np.random.default_rng(count))))


def _scenario(seed: int) -> tuple[Scheduler, QuotaBook, list[LiveJob], list[LiveJob],
                                  FairShare, QueuePolicy, random.Random]:
    """A random pool (partly full), quota book, waiting jobs and queue policy."""
    rng = random.Random(seed)
    scheduler = _cluster(rng, rng.randint(2, 12))
    teams = [f"t{i}" for i in range(rng.randint(1, 4))]
    book = QuotaBook([QueueQuota(t, rng.choice([0, 4000, 16000, 10**9]),
                                 rng.choice([0, 2000, 10**9]), rng.choice([None, "c"]),
                                 rng.choice([None, 0, 2000])) for t in teams])
    users = [f"u{i}" for i in range(rng.randint(1, 4))]
    shapes = []
    for _ in range(rng.randint(1, 6)):
        gpus, milli = rng.choice([(1, 250), (1, 500), (1, 1000), (2, 1000), (8, 1000), (0, 0)])
        shapes.append((rng.choice([0, 4000]), rng.choice([0, 16384]), gpus, milli,
                       rng.choice([1, 1, 2])))
    running = []
    for i in range(rng.randint(0, 40)):
        cpu, mem, gpus, milli, nodes = rng.choice(shapes)
        job = LiveJob(-1 - i, rng.choice(teams), rng.randint(0, 2), 0.0,
                      Request(f"r{i}", cpu, mem, gpus, milli), nodes=nodes,
                      user=rng.choice(users), started_at=rng.uniform(0, 200),
                      time_limit_s=rng.choice([None, 50.0, 500.0]),
                      stopping=rng.choice([None] * 6 + ["stop"]))
        decision = job.place(scheduler, explain=False)
        if decision.placed:
            job.allocations = decision.allocations
            book.add(job.queue, job.amount)
            running.append(job)
    pending = []
    for j in range(rng.randint(0, 60)):
        cpu, mem, gpus, milli, nodes = rng.choice(shapes)
        pending.append(LiveJob(j, rng.choice(teams), rng.randint(0, 2),
                               float(rng.randint(0, 300)), Request(f"p{j}", cpu, mem, gpus, milli),
                               nodes=nodes, user=rng.choice(users),
                               time_limit_s=rng.choice([None, 5.0, 50.0, 5000.0])))
    shares = FairShare({t: rng.choice([0.5, 1.0, 2.0]) for t in teams},
                       team_usage={t: rng.choice([0.0, 1e7]) for t in teams})
    policy = QueuePolicy(order=rng.choice(["fifo", "fairshare"]), backfill=rng.random() < 0.6,
                         reserve_after_s=rng.choice([0.0, 100.0, 1e9]),
                         default_run_s=rng.choice([10.0, 3600.0]),
                         max_reservations=rng.choice([1, 2, 4]),
                         run_s_by_queue={t: rng.choice([20.0, 600.0]) for t in teams
                                         if rng.random() < 0.3})
    return scheduler, book, running, pending, shares, policy, rng


def _seen(out: CycleOutcome, pending: list[LiveJob], running: list[LiveJob],
          scheduler: Scheduler) -> tuple[Any, ...]:
    def held(r: Reservation | None) -> Any:
        return None if r is None else (r.job_id, r.nodes.tolist(), r.start_at)

    return (
        [(j.id, [(a.node, a.gpus) for a in j.allocations]) for j in out.placed],
        [(v.id, j.id) for v, j in out.preemptions],
        list(out.reasons.items()),
        [(k, held(r)) for k, r in out.reservations.items()],
        list(out.quota_holds.items()),
        list(out.backfilled.items()), out.evaluated, sorted(out.errors),
        [(j.id, j.nominated, held(j.reservation), j.quota_hold) for j in pending],
        [(j.id, j.stopping) for j in running],
        scheduler.state.gpu_left.tolist(), scheduler.state.cpu_left.tolist(),
    )


def _cycles(seed: int) -> list[tuple[Any, ...]]:
    """Three cycles in a row: victims stop, placed jobs run, some running jobs end."""
    scheduler, book, running, pending, shares, policy, rng = _scenario(seed)
    seen = []
    now = 200.0
    for _ in range(3):
        left = [1 + rng.randint(0, len(pending))] if rng.random() < 0.2 else None

        def over_budget(left: list[int] | None = left) -> bool:
            if left is None:
                return False
            left[0] -= 1
            return left[0] < 0

        out = queue_cycle.run_cycle(scheduler, book, list(pending), running, now=now,
                                    policy=policy, shares=shares, over_budget=over_budget)
        seen.append(_seen(out, pending, running, scheduler))
        gone = {id(v) for v, _ in out.preemptions}
        for job in [*[v for v, _ in out.preemptions],
                    *[r for r in running if id(r) not in gone and rng.random() < 0.3]]:
            for allocation in job.allocations:
                scheduler.release(allocation)
            book.remove(job.queue, job.amount)
            job.allocations = ()
            running.remove(job)
        for job in out.placed:
            job.started_at = now
        running += out.placed
        pending = [j for j in pending if j not in out.placed]
        now += rng.choice([1.0, 60.0])
    return seen


def _blocked_plainly(self: reservations.Standing,
                     job: LiveJob) -> reservations.Blocked | None:
    if not self.by_job:
        return None
    ids = reservations.blocked_for(job, list(self.by_job.values()), self.now)
    if not ids:
        return None
    return (ids, self.version), reservations.union([self.by_job[i] for i in ids])


def _judge_afresh(self: Any, job: LiveJob, blocked: Any, standing: Any, now: float,
                  asked: Any) -> tuple[str, str]:
    return self._judge(job, blocked, standing, now)  # type: ignore[no-any-return]


def _reserve_afresh(scheduler: Scheduler, job: LiveJob, running: list[LiveJob], now: float,
                    default_run_s: float, ends: Any = None,
                    by_queue: Any = None) -> Reservation | None:
    return reservations.reserve(scheduler, job, running, now, default_run_s,
                                by_queue=by_queue)


@pytest.mark.parametrize("seed", range(80))
def test_cycles_decide_the_same_without_the_shortcuts(seed: int,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _cycles(seed)
    monkeypatch.setattr(queue_cycle, "JobOrder", NaiveOrder)
    monkeypatch.setattr(queue_cycle._Judge, "place_or_reason", _judge_afresh)
    monkeypatch.setattr(reservations.Standing, "blocked", _blocked_plainly)
    monkeypatch.setattr(queue_cycle, "reserve", _reserve_afresh)
    plain = _cycles(seed)
    assert fast == plain


@pytest.mark.parametrize("seed", range(20))
def test_end_order_sorts_as_each_estimate_did(seed: int) -> None:
    scheduler, _, running, _, _, _, rng = _scenario(seed)
    now, default = 100.0, rng.choice([10.0, 3600.0])
    by_queue = {r.queue: rng.choice([20.0, 600.0]) for r in running if rng.random() < 0.5}
    ends = reservations.EndOrder(running, now, default, by_queue)

    def end(r: LiveJob) -> float:
        return reservations.expected_end(r, now, default, by_queue)

    def batches(jobs: list[LiveJob]) -> list[tuple[float, list[LiveJob]]]:
        holding = sorted((r for r in jobs if r.allocations), key=lambda r: (end(r), r.id))
        return [(e, list(g)) for e, g in groupby(holding, key=end)]

    assert ends.batches() == batches(running)
    for _ in range(3):
        nodes = np.array([rng.random() < 0.3 for _ in range(scheduler.state.num_nodes)])
        on_nodes = [r for r in running if any(nodes[a.node] for a in r.allocations)]
        assert ends.batches(ends.on_nodes(nodes)) == batches(on_nodes)


def test_a_reservation_after_a_preemption_counts_on_the_victims_stopping() -> None:
    """The running jobs' order by expected end is made again once victims are marked: a
    victim frees its node within its grace period, not at the end of its run."""
    state = ClusterState([NodeSpec("n0", 64000, 65536, (GpuSpec("A100", 81920),) * 4)])
    scheduler = Scheduler(state, build_profile("gpupool", state, PolicyContext()))
    book = QuotaBook([QueueQuota("q", 0, 10**9), QueueQuota("q2", 0, 10**9)])
    victim = LiveJob(-1, "q", 0, 0.0, Request("v", num_gpus=4), started_at=0.0, grace_s=30.0)
    victim.allocations = scheduler.place(victim.request).allocations
    book.add("q", victim.amount)
    first = LiveJob(1, "q2", 1, 0.0, Request("a", num_gpus=4))  # no victim in its queue
    preempting = LiveJob(2, "q", 1, 1.0, Request("b", num_gpus=4))
    last = LiveJob(3, "q2", 0, 2.0, Request("c", num_gpus=4))
    policy = QueuePolicy(backfill=True, reserve_after_s=0.0, default_run_s=3600.0)
    out = queue_cycle.run_cycle(scheduler, book, [first, preempting, last], [victim],
                                now=100.0, policy=policy)
    assert out.reservations[1].start_at == 3600.0  # before the victim was chosen
    assert out.preemptions == [(victim, preempting)]
    assert out.reservations[3].start_at == 130.0  # its grace period
