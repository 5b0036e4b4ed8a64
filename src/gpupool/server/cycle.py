"""One scheduling cycle of the live server, over in-memory state (no database, no I/O).

Steps:

1. order pending jobs: jobs that victims were preempted for first, then work inside its
   queue's quota, then higher priority, then first come first served;
2. refuse jobs that would pass their queue's quota + borrowing limit (with the reason);
3. place the rest with the core Scheduler; a request shape that failed is not tried again
   in the same cycle (it would fail the same way), which keeps a cycle over thousands of
   pending jobs short;
4. for a job that does not fit, look for victims, unless earlier victims are still stopping:
   *reclaim* (the job is within its quota: borrowed work of other queues, lowest priority and
   newest first) or *priority* (same queue, lower priority, lowest and newest first). Victims
   are released one at a time on the live state until the job would fit, then put back:
   they keep their resources until their processes have stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from gpupool.core.capacity import never_fits
from gpupool.core.cluster import Allocation
from gpupool.core.quota import QuotaBook
from gpupool.core.request import Gang, Request
from gpupool.core.scheduler import Decision, Scheduler


@dataclass
class LiveJob:
    """A job as the loop tracks it. ``allocations`` (one per node rank; one for a
    single-node job) are set while it holds resources. ``nodes`` > 1 makes it a gang of
    that many identical ``request`` members, one per node."""

    id: int
    queue: str
    priority: int
    created_at: float
    request: Request
    grace_s: float = 30.0
    allocations: tuple[Allocation, ...] = ()
    started_at: float = 0.0
    stopping: str | None = None
    reason: str = ""
    nominated: bool = False
    """Victims were preempted for this job: it goes first until it is placed, so the capacity
    they free is not taken by a job ordered before it."""
    nodes: int = 1

    @property
    def amount(self) -> int:
        return self.request.total_gpu_milli * self.nodes

    @property
    def allocation(self) -> Allocation | None:
        """Rank 0's allocation (the only one of a single-node job), or None."""
        return self.allocations[0] if self.allocations else None

    @property
    def shape(self) -> tuple[object, ...]:
        return (*self.request.shape, self.nodes)

    def place(self, scheduler: Scheduler) -> Decision:
        """Place the job (all members of a gang, or none) on the scheduler's state."""
        if self.nodes == 1:
            return scheduler.place(self.request)
        members = tuple(replace(self.request, name=f"{self.request.name}/{rank}")
                        for rank in range(self.nodes))
        return scheduler.place_gang(Gang(self.request.name, members, distinct_nodes=True))

    def fits_somewhere(self, scheduler: Scheduler) -> bool:
        """Whether enough nodes pass the filters now (a cheap test, not a placement)."""
        return len(scheduler.feasible_nodes(self.request)) >= self.nodes


@dataclass
class CycleOutcome:
    placed: list[LiveJob] = field(default_factory=list)
    preemptions: list[tuple[LiveJob, LiveJob]] = field(default_factory=list)
    """(victim, the job it makes room for)."""
    reasons: dict[int, str] = field(default_factory=dict)
    evaluated: int = 0
    errors: dict[int, Exception] = field(default_factory=dict)
    """Jobs whose judging raised (a policy bug or a hostile value): each stays pending with
    the reason "cannot be scheduled: ..." while the cycle goes on for the others."""


def error_reason(exc: BaseException) -> str:
    """The pending reason of a job whose judging raised ``exc``."""
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"cannot be scheduled: {what}"


def run_cycle(
    scheduler: Scheduler,
    quota: QuotaBook,
    pending: list[LiveJob],
    running: list[LiveJob],
    budget_s: float | None = None,
) -> CycleOutcome:
    """Decide placements and preemptions. Placed jobs get their ``allocation`` (already taken
    on the scheduler's state and counted in ``quota``); the caller binds them.

    A job whose judging raises is left unplaced with the reason "cannot be scheduled: ..."
    (and in ``errors``); the others are judged as usual. Should the cycle itself fail
    part-way, everything it took is given back (state, quota, victims' preemption marks)
    before the exception propagates: no job is left holding an allocation it was not handed."""
    out = CycleOutcome()
    nominated = {j.id: j.nominated for j in pending}
    try:
        _decide(scheduler, quota, pending, running, budget_s, out)
    except BaseException:
        for job in out.placed:
            for allocation in job.allocations:
                scheduler.release(allocation)
            job.allocations = ()
            quota.remove(job.queue, job.amount)
        for victim, preemptor in out.preemptions:
            victim.stopping = None
            preemptor.nominated = nominated.get(preemptor.id, preemptor.nominated)
        for job in out.placed:
            job.nominated = nominated.get(job.id, job.nominated)
        raise
    return out


def _decide(
    scheduler: Scheduler,
    quota: QuotaBook,
    pending: list[LiveJob],
    running: list[LiveJob],
    budget_s: float | None,
    out: CycleOutcome,
) -> None:
    started = time.perf_counter()
    order = sorted(
        pending,
        key=lambda j: (
            0 if j.nominated else 1,
            0 if quota.within_quota(j.queue, j.amount) else 1,
            -j.priority,
            j.created_at,
            j.id,
        ),
    )
    failed: dict[tuple[object, ...], str] = {}
    physical: dict[tuple[object, ...], str | None] = {}
    broken: dict[tuple[object, ...], Exception] = {}
    """Shapes whose judging raised this cycle: not tried again (they would raise again)."""
    preempt_allowed = not any(j.stopping == "preempt" for j in running)
    tried_preempt: set[tuple[object, ...]] = set()
    for job in order:
        if budget_s is not None and time.perf_counter() - started > budget_s:
            break
        out.evaluated += 1
        shape = job.shape
        error = broken.get(shape)
        if error is None:
            try:
                reason = _place_or_reason(scheduler, quota, job, out, failed, physical)
            except Exception as exc:  # one job's failure never stops the cycle
                error = broken[shape] = exc
        if error is not None:
            out.errors[job.id] = error
            out.reasons[job.id] = error_reason(error)
            continue
        if reason is None:
            continue
        out.reasons[job.id] = reason
        key = (shape, job.queue, job.priority)
        if preempt_allowed and key not in tried_preempt:
            tried_preempt.add(key)
            try:
                victims = find_victims(scheduler, quota, job, running)
            except Exception as exc:
                broken[shape] = out.errors[job.id] = exc
                out.reasons[job.id] = error_reason(exc)
                continue
            if victims:
                job.nominated = True
                for victim in victims:
                    victim.stopping = "preempt"
                    out.preemptions.append((victim, job))
                out.reasons[job.id] = (
                    f"waiting for {len(victims)} preempted job(s) to stop: {reason}"
                )
                preempt_allowed = False


def _place_or_reason(
    scheduler: Scheduler,
    quota: QuotaBook,
    job: LiveJob,
    out: CycleOutcome,
    failed: dict[tuple[object, ...], str],
    physical: dict[tuple[object, ...], str | None],
) -> str | None:
    """Place ``job`` (None: placed, added to ``out.placed`` and counted in ``quota``) or say
    why not. Raises only with the state and the quota book as they were."""
    shape = job.shape
    refusal = quota.refusal(job.queue, job.amount)
    if refusal is not None:
        # Say first what the cluster lacks (it matters even once quota frees up).
        if shape not in physical:
            physical[shape] = failed.get(shape) or never_fits(
                scheduler.state, job.request, job.nodes) or (
                scheduler.why_not(job.request) if job.nodes == 1 else
                (None if job.fits_somewhere(scheduler) else
                 f"needs {job.nodes} nodes with {job.request.describe()} each"))
        lack = physical[shape]
        return f"{lack}; and {refusal}" if lack else refusal
    known = failed.get(shape)
    if known is not None:
        return known
    decision = job.place(scheduler)
    if not decision.placed:
        # A request no node could ever hold says so, rather than what is free right now.
        why = never_fits(scheduler.state, job.request, job.nodes) or decision.reason
        failed[shape] = why
        return why
    try:
        quota.add(job.queue, job.amount)
    except BaseException:
        for allocation in decision.allocations:
            scheduler.release(allocation)
        raise
    job.nominated = False
    job.allocations = decision.allocations
    out.placed.append(job)
    return None


def find_victims(
    scheduler: Scheduler, quota: QuotaBook, job: LiveJob, running: list[LiveJob]
) -> list[LiveJob]:
    """The running jobs to stop so that ``job`` fits, or [] when stopping them would not
    help. The state and the quota book are unchanged on return."""
    active = [r for r in running if r.allocations and r.stopping is None]
    if quota.within_quota(job.queue, job.amount):
        candidates = [
            r for r in active if r.queue != job.queue and quota.borrowed(r.queue) > 0
        ]
    else:
        candidates = [r for r in active if r.queue == job.queue and r.priority < job.priority]
    candidates.sort(key=lambda r: (r.priority, -r.started_at, -r.id))
    released: list[LiveJob] = []
    fits = False
    try:
        for victim in candidates:
            if victim.queue != job.queue and quota.borrowed(victim.queue) <= 0:
                continue  # reclaim only takes back what is borrowed
            for allocation in victim.allocations:
                scheduler.release(allocation)
            quota.remove(victim.queue, victim.amount)
            released.append(victim)
            if quota.refusal(job.queue, job.amount) is None and job.fits_somewhere(scheduler):
                fits = True
                break
    finally:  # put every victim back, also when judging raised
        for victim in released:
            victim.allocations = tuple(scheduler.place_on(old.node, old.gpus, old.request)
                                       for old in victim.allocations)
            quota.add(victim.queue, victim.amount)
    return released if fits else []
