"""Reservations and backfill (Slurm's idea, on the cycle's snapshot).

A waiting job that holds a reservation is promised the nodes expected to free soonest. Its
start is estimated from the running jobs' expected ends (start + time limit, or + the
policy's default run time for a job without one): they are released on the state in that
order until the job fits, its trial placement names the nodes, and everything is put back.

While the reservation holds, another job may start on those nodes only if its own time limit
ends before the reservation's estimated start (it *backfills*); a job without a time limit
never delays a reservation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import accumulate, groupby

import numpy as np

from gpupool.core.cluster import BoolArray, IntArray
from gpupool.core.live import LiveJob, Reservation
from gpupool.core.quota import QuotaBook
from gpupool.core.scheduler import Scheduler


def expected_end(job: LiveJob, now: float, default_run_s: float,
                 by_queue: Mapping[str, float] | None = None) -> float:
    """When a running job is expected to free its resources: a job being stopped within its
    grace period, else its start plus its time limit (or its queue's default run limit in
    ``by_queue``, else ``default_run_s``); never before ``now``."""
    end = job.expected_end(by_queue.get(job.queue, default_run_s) if by_queue
                           else default_run_s)
    if job.stopping is not None:
        end = min(end, now + job.grace_s)
    return max(now, end)


class EndOrder:
    """The running jobs that hold resources, in the order an estimate releases them: by
    expected end, then id (sorted once for all of a cycle's estimates). Valid while no
    running job's expected end changes: make a new one after marking jobs as stopping."""

    def __init__(self, running: Sequence[LiveJob], now: float, default_run_s: float,
                 by_queue: Mapping[str, float] | None = None) -> None:
        holding = [r for r in running if r.allocations]
        ends = [expected_end(r, now, default_run_s, by_queue) for r in holding]
        ids = [r.id for r in holding]
        order = sorted(range(len(holding)), key=lambda i: (ends[i], ids[i]))  # stable
        self.jobs = [holding[i] for i in order]
        self.ends = [ends[i] for i in order]
        self._owners: tuple[IntArray, IntArray] | None = None
        self._all: list[tuple[float, list[LiveJob]]] | None = None

    def batches(self, among: Sequence[int] | None = None) -> list[tuple[float, list[LiveJob]]]:
        """(expected end, the jobs ending then) in order; only the jobs at the indices
        ``among`` (ascending) when given. Not to be changed by the caller."""
        if among is None and self._all is not None:
            return self._all
        picked = range(len(self.jobs)) if among is None else among
        jobs, ends = self.jobs, self.ends
        found = [(end, [jobs[i] for i in group])
                 for end, group in groupby(picked, key=ends.__getitem__)]
        if among is None:
            self._all = found
        return found

    def on_nodes(self, nodes: BoolArray) -> list[int]:
        """The indices (ascending) of the jobs with an allocation on one of ``nodes``."""
        if self._owners is None:
            where = [(a.node, i) for i, r in enumerate(self.jobs) for a in r.allocations]
            self._owners = (np.array([n for n, _ in where], dtype=np.int64),
                            np.array([i for _, i in where], dtype=np.int64))
        at, owner = self._owners
        hit = owner[np.asarray(nodes[at], dtype=bool)]
        return [int(i) for i in np.unique(hit)]


def reserve(scheduler: Scheduler, job: LiveJob, running: Sequence[LiveJob], now: float,
            default_run_s: float, ends: EndOrder | None = None,
            by_queue: Mapping[str, float] | None = None) -> Reservation | None:
    """The reservation ``job`` gets now, or None if it would not fit even with every running
    job gone. A job that holds one keeps its nodes while it can still start there (only the
    start is estimated again), so capacity is not promised on one node then another. The
    state is unchanged on return (also when judging raises). ``ends``: the
    :class:`EndOrder` of ``running`` (made here when not given, with the default run limits
    ``default_run_s`` and ``by_queue`` as :func:`expected_end` reads them)."""
    if ends is None:
        ends = EndOrder(running, now, default_run_s, by_queue)
    kept = job.reservation
    if kept is not None and len(kept.nodes) == scheduler.state.num_nodes:
        on_nodes = ends.batches(ends.on_nodes(kept.nodes))
        again = _estimate(scheduler, job, on_nodes, ~kept.nodes)
        if again is not None:
            return again
    return _estimate(scheduler, job, ends.batches(), None)


def _estimate(scheduler: Scheduler, job: LiveJob, batches: list[tuple[float, list[LiveJob]]],
              exclude: BoolArray | None) -> Reservation | None:
    """Release the running jobs batch by batch (``batches``: by expected end) until ``job``
    fits: the first batch count that fits is found by doubling, then halving back (fitting
    is monotone in what is released), so a pool of thousands of running jobs costs a few
    dozen fit tests, not one per batch."""
    released: list[LiveJob] = []
    out = 0  # batches released now: batches[:out]

    def move_to(count: int) -> None:
        nonlocal out
        while out < count:
            for victim in batches[out][1]:
                for allocation in victim.allocations:
                    scheduler.release(allocation)
                released.append(victim)
            out += 1
        while out > count:
            out -= 1
            for victim in reversed(batches[out][1]):
                released.pop()
                victim.allocations = tuple(scheduler.place_on(a.node, a.gpus, a.request)
                                           for a in victim.allocations)

    found: Reservation | None = None
    try:
        low, high, step = 0, None, 1  # low: a count known not to fit
        while high is None and low < len(batches):
            move_to(min(len(batches), low + step))
            if _fits(scheduler, job, exclude):
                high = out
            else:
                low, step = out, step * 2
        if high is not None:
            while high - low > 1:
                middle = (low + high) // 2
                move_to(middle)
                if _fits(scheduler, job, exclude):
                    high = middle
                else:
                    low = middle
            move_to(high)
            decision = job.place(scheduler, exclude=exclude, explain=False)
            if decision.placed:
                mask = np.zeros(scheduler.state.num_nodes, dtype=bool)
                for allocation in decision.allocations:
                    mask[allocation.node] = True
                for allocation in decision.allocations:
                    scheduler.release(allocation)
                found = Reservation(job.id, mask, batches[high - 1][0])
    finally:
        move_to(0)
    return found


def _fits(scheduler: Scheduler, job: LiveJob, exclude: BoolArray | None) -> bool:
    """Whether ``job`` could be placed now: for one node, whether a node passes the filters
    (the final trial placement confirms it); a gang is tried (then given back)."""
    if job.nodes == 1:
        return len(scheduler.feasible_nodes(job.request, exclude=exclude)) > 0
    if exclude is None and not job.fits_somewhere(scheduler):
        return False
    decision = job.place(scheduler, exclude=exclude, explain=False)
    for allocation in decision.allocations:
        scheduler.release(allocation)
    return decision.placed


def blocked_for(job: LiveJob, reservations: Sequence[Reservation],
                now: float) -> tuple[int, ...]:
    """The reservations (their job ids) whose nodes ``job`` must not use now: every other
    job's that it would not leave in time (it has no time limit, or its limit ends after the
    reservation's start)."""
    return tuple(r.job_id for r in reservations if r.job_id != job.id and not (
        job.time_limit_s is not None and now + job.time_limit_s <= r.start_at))


def union(reservations: Sequence[Reservation]) -> BoolArray:
    """The nodes of all ``reservations`` (at least one)."""
    mask = reservations[0].nodes.copy()
    for reservation in reservations[1:]:
        mask |= reservation.nodes
    return mask


Blocked = tuple[tuple[tuple[int, ...], int], BoolArray]
"""What a job may not use: ((the blocking reservations' job ids, their version), the union
of their nodes)."""


class Standing:
    """The reservations standing during one cycle (``by_job``: by the id of the job holding
    each), and what each job judged may not use because of them. Change ``by_job`` only
    through ``put`` and ``drop``: each change starts a new version."""

    def __init__(self, now: float, by_job: dict[int, Reservation]) -> None:
        self.now = now
        self.by_job = by_job
        self.version = 0
        """How often the standing reservations changed: part of what a job may not use
        (the same ids may mean other nodes after a renewal)."""
        self._holders = {r.job_id for r in by_job.values()}
        self._by_limit: dict[float | None, Blocked | None] = {}
        """``blocked`` by time limit, for jobs holding none of the reservations."""
        self._nodes: dict[tuple[int, ...], BoolArray] = {}

    def put(self, job_id: int, reservation: Reservation) -> None:
        self.by_job[job_id] = reservation
        self._changed()

    def drop(self, job_id: int) -> bool:
        """Remove the reservation of ``job_id``; whether there was one."""
        if self.by_job.pop(job_id, None) is None:
            return False
        self._changed()
        return True

    def _changed(self) -> None:
        self.version += 1
        self._by_limit.clear()
        self._nodes.clear()
        self._holders = {r.job_id for r in self.by_job.values()}

    def blocked(self, job: LiveJob) -> Blocked | None:
        """The nodes ``job`` must not use now (see :func:`blocked_for`), or None."""
        if not self.by_job:
            return None
        if job.id in self._holders:
            return self._blocked(job)
        limit = job.time_limit_s
        if limit in self._by_limit:
            return self._by_limit[limit]
        known = self._by_limit[limit] = self._blocked(job)  # depends only on the limit here
        return known

    def _blocked(self, job: LiveJob) -> Blocked | None:
        ids = blocked_for(job, list(self.by_job.values()), self.now)
        if not ids:
            return None
        nodes = self._nodes.get(ids)
        if nodes is None:
            nodes = self._nodes[ids] = union([self.by_job[i] for i in ids])
        return (ids, self.version), nodes


def wait_text(seconds: float) -> str:
    """A duration in words, e.g. "about 25 min"."""
    if seconds < 90:
        return f"about {max(0, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def quota_frees_at(quota: QuotaBook, job: LiveJob, running: Sequence[LiveJob],
                   placed: Sequence[LiveJob], now: float, default_run_s: float,
                   by_queue: Mapping[str, float] | None = None) -> float | None:
    """When ``job``'s queue is expected to admit it: the expected end (as
    :func:`expected_end` reckons it; a job ``placed`` this cycle ends its time limit or
    default run limit after ``now``) of the first of the queue's jobs whose ending makes
    ``quota`` admit ``job``, or None if even all of them ending would not (what stops it
    is another queue's use, through its cohort). ``running`` may hold other queues' jobs
    (they are skipped). The quota book is unchanged on return."""
    queue = job.queue
    ends = [(expected_end(r, now, default_run_s, by_queue), r.id, r.amount)
            for r in running if r.queue == queue and r.allocations]
    limit = by_queue.get(queue, default_run_s) if by_queue else default_run_s
    ends += [(now + (p.time_limit_s if p.time_limit_s is not None else limit), p.id, p.amount)
             for p in placed if p.queue == queue]
    if not ends:
        return None
    ends.sort()
    freed = list(accumulate(amount for _, _, amount in ends))

    def admitted(count: int) -> bool:  # once the first ``count`` have ended
        quota.remove(queue, freed[count - 1])
        try:
            return quota.refusal(queue, job.amount) is None
        finally:
            quota.add(queue, freed[count - 1])

    if not admitted(len(ends)):
        return None
    low, high = 0, len(ends)  # admitted(high); not admitted(low) (0: it was refused)
    while high - low > 1:  # more ended never admits less: halve
        middle = (low + high) // 2
        if admitted(middle):
            high = middle
        else:
            low = middle
    return ends[high - 1][0]
