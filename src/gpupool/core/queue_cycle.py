"""One scheduling cycle over an in-memory snapshot: the same function for the live server
and the simulator (no database, no I/O, no clock: ``now`` is the caller's).

Steps:

1. **order** the waiting jobs (core/queue_order.py: FIFO or fair share; jobs victims were
   preempted for and jobs holding a reservation first);
2. **admit** by quota: a job that would pass its queue's quota, borrowing limit or its
   cohort's lending is refused with the reason (core/quota.py);
3. **place** it with the core Scheduler, never on nodes reserved for another job unless its
   time limit ends before that reservation starts (core/reservations.py); a request shape
   that failed is not tried again in the same cycle (it would fail the same way), which
   keeps a cycle over thousands of waiting jobs short;
4. for a job that does not fit (or is over its quota), **preempt**: look for victims
   (core/victims.py: reclaim of borrowed work, or lower priority in the same queue), unless
   earlier victims are still stopping; victims keep their resources until their processes
   have stopped, and the nodes the job will use are reserved for it meanwhile;
5. else **reserve** (with backfill on): the first job in line that does not fit, and any job
   waiting longer than the policy's threshold, gets the nodes expected to free soonest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gpupool.core.capacity import never_fits
from gpupool.core.cluster import BoolArray
from gpupool.core.fairshare import FairShare, dominant_milli, pool_totals
from gpupool.core.live import CycleOutcome, LiveJob, Reservation, error_reason
from gpupool.core.queue_order import GREEDY_FIFO, JobOrder, QueuePolicy
from gpupool.core.quota import QuotaBook
from gpupool.core.reservations import blocked_for, reserve, union, wait_text
from gpupool.core.scheduler import Scheduler
from gpupool.core.victims import by_queue, choose_victims

Blocked = tuple[tuple[tuple[int, ...], int], BoolArray]
"""What a job may not use: ((the blocking reservations' job ids, their version), the union
of their nodes)."""


def run_cycle(
    scheduler: Scheduler,
    quota: QuotaBook,
    pending: list[LiveJob],
    running: list[LiveJob],
    *,
    now: float = 0.0,
    policy: QueuePolicy = GREEDY_FIFO,
    shares: FairShare | None = None,
    holders: Sequence[LiveJob] = (),
    complete: bool = True,
    over_budget: Callable[[], bool] | None = None,
) -> CycleOutcome:
    """Decide placements, preemptions and reservations. Placed jobs get their
    ``allocations`` (already taken on the scheduler's state and counted in ``quota``); the
    caller binds them. ``holders``: other waiting jobs, not tried this cycle, whose
    reservations stand. ``complete``: ``pending`` is every waiting job (else the first of
    them is not known to be first in line, and gets no reservation for that).
    ``over_budget``: asked before each job; True ends the cycle early
    (``evaluated`` says how far it got).

    Every job tried gets its ``reservation`` set to what it holds now (None if nothing);
    ``out.reservations`` lists them. A job whose judging raises is left unplaced with the
    reason "cannot be scheduled: ..." (and in ``errors``); the others are judged as usual.
    Should the cycle itself fail part-way, everything it took is given back (state, quota,
    victims' preemption marks, reservations) before the exception propagates."""
    out = CycleOutcome()
    marks = {j.id: (j.nominated, j.reservation) for j in pending}
    try:
        tried = _decide(scheduler, quota, pending, running, now, policy, shares, holders,
                        complete, over_budget, out)
    except BaseException:
        for job in out.placed:
            for allocation in job.allocations:
                scheduler.release(allocation)
            job.allocations = ()
            quota.remove(job.queue, job.amount)
        for victim, _ in out.preemptions:
            victim.stopping = None
        for job in pending:
            job.nominated, job.reservation = marks[job.id]
        raise
    for job in tried:
        job.reservation = out.reservations.get(job.id)
    return out


def _decide(
    scheduler: Scheduler,
    quota: QuotaBook,
    pending: list[LiveJob],
    running: list[LiveJob],
    now: float,
    policy: QueuePolicy,
    shares: FairShare | None,
    holders: Sequence[LiveJob],
    complete: bool,
    over_budget: Callable[[], bool] | None,
    out: CycleOutcome,
) -> list[LiveJob]:
    totals = pool_totals(scheduler.state)

    def weight_of(job: LiveJob) -> int:
        return dominant_milli(job.request, job.nodes, totals)

    order = JobOrder(pending, running, quota, policy, shares, weight_of)
    standing: dict[int, Reservation] = {}
    for job in (*holders, *pending):  # reservations and nominated nodes from earlier cycles
        if job.reservation is not None:
            standing[job.id] = job.reservation
    judge = _Judge(scheduler, quota, out)
    preempt_allowed = not any(j.stopping == "preempt" for j in running)
    tried_preempt: set[tuple[object, ...]] = set()
    stoppable: dict[str, list[LiveJob]] | None = None
    blocked_cache: dict[tuple[int, ...], BoolArray] = {}
    """The nodes of a set of standing reservations, by their job ids, while they stand."""
    changes = 0
    """How often the standing reservations changed: part of the key of a failure judged
    against them (the same ids may mean other nodes after a renewal)."""
    first_in_line = complete
    tried: list[LiveJob] = []
    for job in order:
        if over_budget is not None and over_budget():
            break
        out.evaluated += 1
        tried.append(job)
        if standing.pop(job.id, None) is not None:  # renewed below if it still waits
            blocked_cache.clear()
            changes += 1
        blocked: Blocked | None = None
        if standing:
            ids = blocked_for(job, list(standing.values()), now)
            if ids:
                if ids not in blocked_cache:
                    blocked_cache[ids] = union([standing[i] for i in ids])
                blocked = ((ids, changes), blocked_cache[ids])
        try:
            kind, reason = judge.place_or_reason(job, blocked, standing, now)
        except Exception as exc:  # one job's failure never stops the cycle
            out.errors[job.id] = exc
            out.reasons[job.id] = error_reason(exc)
            continue
        if kind == "placed":
            order.placed(job)
            if standing and job.time_limit_s is not None:
                _note_backfill(job, standing, now, out)
            continue
        out.reasons[job.id] = reason
        if kind not in ("capacity", "quota"):
            continue
        key = (job.shape, job.queue, job.priority)
        if preempt_allowed and key not in tried_preempt:
            tried_preempt.add(key)
            try:
                if stoppable is None:
                    stoppable = by_queue(running)
                victims, nodes = choose_victims(scheduler, quota, job, running,
                                                _loads(order, shares), stoppable)
            except Exception as exc:
                out.errors[job.id] = exc
                out.reasons[job.id] = error_reason(exc)
                continue
            if victims:
                job.nominated = True
                for victim in victims:
                    victim.stopping = "preempt"
                    out.preemptions.append((victim, job))
                if nodes is not None:  # what it counts on stays free for it
                    grace = max(v.grace_s for v in victims)
                    standing[job.id] = out.reservations[job.id] = Reservation(
                        job.id, nodes, now + grace)
                    blocked_cache.clear()
                    changes += 1
                out.reasons[job.id] = (
                    f"waiting for {len(victims)} preempted job(s) to stop: {reason}")
                preempt_allowed = False
                continue
        if kind != "capacity":
            continue
        wants = (job.reservation is not None or first_in_line
                 or now - job.created_at >= policy.reserve_after_s)
        first_in_line = False
        if policy.backfill and wants and len(standing) < policy.max_reservations:
            try:
                reservation = reserve(scheduler, job, running, now, policy.default_run_s)
            except Exception as exc:
                out.errors[job.id] = exc
                out.reasons[job.id] = error_reason(exc)
                continue
            if reservation is not None:
                standing[job.id] = out.reservations[job.id] = reservation
                blocked_cache.clear()
                changes += 1
                count = int(reservation.nodes.sum())
                out.reasons[job.id] = (
                    f"{reason}; {count} node(s) reserved for it, expected to start in "
                    f"{wait_text(reservation.start_at - now)}")
    return tried


def _note_backfill(job: LiveJob, standing: dict[int, Reservation], now: float,
                   out: CycleOutcome) -> None:
    """Record it when ``job`` was placed on another job's reserved nodes (it may: its time
    limit ends before that reservation starts)."""
    for reservation in standing.values():
        if reservation.job_id != job.id and any(
                reservation.nodes[a.node] for a in job.allocations):
            out.backfilled[job.id] = (reservation.job_id, now + (job.time_limit_s or 0.0))
            return


def _loads(order: JobOrder, shares: FairShare | None) -> Callable[[str], float] | None:
    if shares is None:
        return None
    return lambda queue: shares.team_load(queue, order.team_held[queue])


class _Judge:
    """Places one job or says why not, remembering within the cycle what failed."""

    def __init__(self, scheduler: Scheduler, quota: QuotaBook, out: CycleOutcome) -> None:
        self.scheduler = scheduler
        self.quota = quota
        self.out = out
        self.failed: dict[tuple[object, ...], tuple[str, str]] = {}
        self.physical: dict[tuple[object, ...], str | None] = {}
        self.fits_free: dict[tuple[object, ...], bool] = {}
        """Whether a shape would fit with no node blocked, while nothing is placed."""
        self.refusals: dict[tuple[str, int], str | None] = {}
        """Quota answers by (queue, amount), while the quota book is unchanged."""

    def place_or_reason(self, job: LiveJob, blocked: Blocked | None,
                        standing: dict[int, Reservation], now: float) -> tuple[str, str]:
        """("placed", "") with the job placed, added to ``out.placed`` and counted in the
        quota; else (kind, reason), kind one of "quota", "never", "capacity", "reserved".
        Raises only with the state and the quota book as they were."""
        scheduler = self.scheduler
        shape = job.shape
        asked = (job.queue, job.amount)
        if asked in self.refusals:
            refusal = self.refusals[asked]
        else:
            refusal = self.refusals[asked] = self.quota.refusal(*asked)
        if refusal is not None:
            # Say first what the cluster lacks (it matters even once quota frees up).
            if shape not in self.physical:
                known = self.failed.get((shape, None))
                self.physical[shape] = (known[1] if known else None) or never_fits(
                    scheduler.state, job.request, job.nodes) or (
                    scheduler.why_not(job.request) if job.nodes == 1 else
                    (None if job.fits_somewhere(scheduler) else
                     f"needs {job.nodes} nodes with {job.request.describe()} each"))
            lack = self.physical[shape]
            return "quota", (f"{lack}; and {refusal}" if lack else refusal)
        key = (shape, None if blocked is None else blocked[0])
        known = self.failed.get(key)
        if known is not None:
            return known
        mask = None if blocked is None else blocked[1]
        decision = job.place(scheduler, exclude=mask)
        if not decision.placed:
            result = self._why(job, blocked, standing, now, decision.reason)
            self.failed[key] = result
            return result
        try:
            self.quota.add(job.queue, job.amount)
        except BaseException:
            for allocation in decision.allocations:
                scheduler.release(allocation)
            raise
        self.refusals.clear()  # the quota book changed
        self.fits_free.clear()  # and the free capacity
        job.nominated = False
        job.allocations = decision.allocations
        self.out.placed.append(job)
        return "placed", ""

    def _why(self, job: LiveJob, blocked: Blocked | None,
             standing: dict[int, Reservation], now: float, reason: str) -> tuple[str, str]:
        scheduler = self.scheduler
        never = never_fits(scheduler.state, job.request, job.nodes)
        if never:  # a request no node could ever hold says so, not what is free now
            return "never", never
        if blocked is not None and self._fits_free(job):
            first = min((standing[i] for i in blocked[0][0]), key=lambda r: r.start_at)
            wait = wait_text(first.start_at - now)
            return "reserved", (
                f"the free capacity that fits it is reserved for job {first.job_id}, "
                f"expected to start in {wait}; a time limit under {wait} would let it "
                f"start now (backfill)")
        return "capacity", reason

    def _fits_free(self, job: LiveJob) -> bool:
        """Whether the job would fit now if no node were reserved (tried, given back)."""
        shape = job.shape
        if shape not in self.fits_free:
            known = self.failed.get((shape, None))
            if known is not None:
                self.fits_free[shape] = False
            else:
                trial = job.place(self.scheduler, explain=False)
                for allocation in trial.allocations:
                    self.scheduler.release(allocation)
                self.fits_free[shape] = trial.placed
        return self.fits_free[shape]
