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

from collections.abc import Sequence
from itertools import groupby

import numpy as np

from gpupool.core.cluster import BoolArray
from gpupool.core.live import LiveJob, Reservation
from gpupool.core.scheduler import Scheduler


def expected_end(job: LiveJob, now: float, default_run_s: float) -> float:
    """When a running job is expected to free its resources: a job being stopped within its
    grace period, else its start plus its time limit (or ``default_run_s``); never before
    ``now``."""
    end = job.expected_end(default_run_s)
    if job.stopping is not None:
        end = min(end, now + job.grace_s)
    return max(now, end)


def reserve(scheduler: Scheduler, job: LiveJob, running: Sequence[LiveJob], now: float,
            default_run_s: float) -> Reservation | None:
    """The reservation ``job`` gets now, or None if it would not fit even with every running
    job gone. A job that holds one keeps its nodes while it can still start there (only the
    start is estimated again), so capacity is not promised on one node then another. The
    state is unchanged on return (also when judging raises)."""
    kept = job.reservation
    if kept is not None and len(kept.nodes) == scheduler.state.num_nodes:
        on_nodes = [r for r in running if any(kept.nodes[a.node] for a in r.allocations)]
        again = _estimate(scheduler, job, on_nodes, now, default_run_s, ~kept.nodes)
        if again is not None:
            return again
    return _estimate(scheduler, job, running, now, default_run_s, None)


def _estimate(scheduler: Scheduler, job: LiveJob, running: Sequence[LiveJob], now: float,
              default_run_s: float, exclude: BoolArray | None) -> Reservation | None:
    """Release the running jobs batch by batch (by expected end) until ``job`` fits: the
    first batch count that fits is found by doubling, then halving back (fitting is monotone
    in what is released), so a pool of thousands of running jobs costs a few dozen fit
    tests, not one per batch."""
    holding = sorted((r for r in running if r.allocations),
                     key=lambda r: (expected_end(r, now, default_run_s), r.id))
    batches = [(end, list(group)) for end, group in
               groupby(holding, key=lambda r: expected_end(r, now, default_run_s))]
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


def wait_text(seconds: float) -> str:
    """A duration in words, e.g. "about 25 min"."""
    if seconds < 90:
        return f"about {max(0, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
