"""Which running jobs to stop so a waiting job fits: the preemption and reclaim plugins'
judgement, shared by the server and the simulator."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gpupool.core.cluster import BoolArray
from gpupool.core.live import LiveJob
from gpupool.core.quota import QuotaBook
from gpupool.core.scheduler import Scheduler


def by_queue(running: list[LiveJob]) -> dict[str, list[LiveJob]]:
    """The running jobs that could be stopped (holding resources, not stopping yet), per
    queue: what ``find_victims`` looks through, built once per cycle."""
    out: dict[str, list[LiveJob]] = {}
    for r in running:
        if r.allocations and r.stopping is None:
            out.setdefault(r.queue, []).append(r)
    return out


def find_victims(
    scheduler: Scheduler, quota: QuotaBook, job: LiveJob, running: list[LiveJob],
    load_of: Callable[[str], float] | None = None,
    stoppable: dict[str, list[LiveJob]] | None = None,
) -> list[LiveJob]:
    """The victims of :func:`choose_victims`, without where the job would go."""
    return choose_victims(scheduler, quota, job, running, load_of, stoppable)[0]


def choose_victims(
    scheduler: Scheduler, quota: QuotaBook, job: LiveJob, running: list[LiveJob],
    load_of: Callable[[str], float] | None = None,
    stoppable: dict[str, list[LiveJob]] | None = None,
) -> tuple[list[LiveJob], BoolArray | None]:
    """The running jobs to stop so that ``job`` fits, or [] when stopping them would not
    help. The state and the quota book are unchanged on return. ``stoppable``: the cycle's
    :func:`by_queue` of ``running`` (built here when not given).

    *Reclaim* (``job`` stays within its quota): borrowed work of other queues of its cohort;
    the queue with the highest fair-share load (``load_of``; none: all equal) loses first,
    then lowest priority, newest first. *Priority* (``job`` would borrow): work of its own
    queue with a lower priority, lowest and newest first. Victims are taken one at a time in
    that order until a trial placement of the job succeeds; then each victim it does not
    need after all is spared (Kubernetes' "reprieve"), so the set is minimal in that order.
    Also returns the nodes the job's trial placement used once they stop (None without
    victims): the caller keeps them for the job, so that jobs after it in the cycle do not
    take the free capacity it counts on (Kubernetes' nominated node)."""
    active = stoppable if stoppable is not None else by_queue(running)
    if quota.within_quota(job.queue, job.amount):
        candidates = [r for q in quota.reclaimable(job.queue, active) for r in active[q]]
        load = load_of or (lambda _queue: 0.0)
        loads = {r.queue: load(r.queue) for r in candidates}
        candidates.sort(key=lambda r: (-loads[r.queue], r.priority, -r.started_at, -r.id))
    else:
        candidates = [r for r in active.get(job.queue, ()) if r.priority < job.priority]
        candidates.sort(key=lambda r: (r.priority, -r.started_at, -r.id))
    released: list[LiveJob] = []
    fits = False
    nodes: BoolArray | None = None
    try:
        for victim in candidates:
            if victim.queue != job.queue and quota.borrowed(victim.queue) <= 0:
                continue  # reclaim only takes back what is borrowed
            _stop(scheduler, quota, victim)
            released.append(victim)
            if _fits(scheduler, quota, job) is not None:
                fits = True
                break
        if fits:  # reprieve: put back every victim the job does not need, newest choice first
            for victim in reversed(released[:-1]):
                _restart(scheduler, quota, victim)
                if _fits(scheduler, quota, job) is not None:
                    released.remove(victim)
                else:
                    _stop(scheduler, quota, victim)
            nodes = _fits(scheduler, quota, job)
    finally:  # put every victim back, also when judging raised
        for victim in released:
            _restart(scheduler, quota, victim)
    return (released, nodes) if fits else ([], None)


def _fits(scheduler: Scheduler, quota: QuotaBook, job: LiveJob) -> BoolArray | None:
    """The nodes ``job`` would be placed on now if admitted (a trial placement, given back),
    else None: the filters alone miss what a gang's permit plugins veto (its topology)."""
    if quota.refusal(job.queue, job.amount) is not None or not job.fits_somewhere(scheduler):
        return None
    decision = job.place(scheduler, explain=False)
    for allocation in decision.allocations:
        scheduler.release(allocation)
    if not decision.placed:
        return None
    mask = np.zeros(scheduler.state.num_nodes, dtype=bool)
    for allocation in decision.allocations:
        mask[allocation.node] = True
    return mask


def _stop(scheduler: Scheduler, quota: QuotaBook, victim: LiveJob) -> None:
    for allocation in victim.allocations:
        scheduler.release(allocation)
    quota.remove(victim.queue, victim.amount)


def _restart(scheduler: Scheduler, quota: QuotaBook, victim: LiveJob) -> None:
    victim.allocations = tuple(scheduler.place_on(old.node, old.gpus, old.request)
                               for old in victim.allocations)
    quota.add(victim.queue, victim.amount)
