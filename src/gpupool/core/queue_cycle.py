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
   Likewise for quota: a queue's first job (by priority, then arrival) that its queue's
   quota refuses at the start of the cycle (or one waiting longer than the threshold)
   *holds* the queue's quota, so that the queue's other, smaller jobs do not take each share
   of quota it frees; they start only if their time limit ends before the holder is
   expected to be admitted (``quota_frees_at``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gpupool.core.capacity import never_fits
from gpupool.core.fairshare import FairShare, dominant_milli, pool_totals
from gpupool.core.live import CycleOutcome, LiveJob, Reservation, error_reason
from gpupool.core.queue_order import GREEDY_FIFO, JobOrder, QueuePolicy
from gpupool.core.quota import QuotaBook
from gpupool.core.reservations import (
    Blocked,
    EndOrder,
    Standing,
    quota_frees_at,
    reserve,
    wait_text,
)
from gpupool.core.scheduler import Scheduler
from gpupool.core.victims import by_queue, choose_victims


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
    reservations and quota holds stand. ``complete``: ``pending`` is every waiting job
    (else the first of them is not known to be first in line, and gets no reservation or
    quota hold for that).
    ``over_budget``: asked before each job; True ends the cycle early
    (``evaluated`` says how far it got).

    Every job tried gets its ``reservation`` set to what it holds now (None if nothing);
    ``out.reservations`` lists them. A job whose judging raises is left unplaced with the
    reason "cannot be scheduled: ..." (and in ``errors``); the others are judged as usual.
    Should the cycle itself fail part-way, everything it took is given back (state, quota,
    victims' preemption marks, reservations) before the exception propagates."""
    out = CycleOutcome()
    nominated = [j.nominated for j in pending]  # as they were, should the cycle fail
    reserved = [(j.reservation, j.quota_hold) for j in pending]
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
        marks = {j.id: (nominated[i], *reserved[i]) for i, j in enumerate(pending)}
        for job in pending:
            job.nominated, job.reservation, job.quota_hold = marks[job.id]
        raise
    reservations, holds = out.reservations, out.quota_holds
    for job in tried:
        job.reservation = reservations.get(job.id)
        job.quota_hold = holds.get(job.id)
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
    weights: dict[tuple[object, ...], int] = {}

    def weight_of(job: LiveJob) -> int:  # a function of the shape: reckoned once per shape
        weight = weights.get(job.shape)
        if weight is None:
            weight = weights[job.shape] = dominant_milli(job.request, job.nodes, totals)
        return weight

    order = JobOrder(pending, running, quota, policy, shares, weight_of)
    earlier: dict[int, Reservation] = {}
    for job in (*holders, *pending):  # reservations and nominated nodes from earlier cycles
        if job.reservation is not None:
            earlier[job.id] = job.reservation
    standing = Standing(now, earlier)
    by_job = standing.by_job
    judge = _Judge(scheduler, quota, out)
    answers = judge.answers
    reasons = out.reasons
    preempt_allowed = not any(j.stopping == "preempt" for j in running)
    tried_preempt: set[tuple[object, ...]] = set()
    stoppable: dict[str, list[LiveJob]] | None = None
    reserver = _Reserver(scheduler, running, now, policy, standing, out)
    backfill, most = policy.backfill, policy.max_reservations
    first_in_line = complete
    holds: dict[str, tuple[int, float]] = {}
    """Queues whose quota a job holds: queue -> (the job, when it is expected admitted)."""
    for job in holders:  # quota holds from earlier cycles stand, as reservations do
        if job.quota_hold is not None and job.queue not in holds:
            holds[job.queue] = (job.id, job.quota_hold)
    if backfill and complete:
        _hold_for_heads(scheduler, quota, pending, running, now, policy, holds, out)
    tried: list[LiveJob] = []
    try:
        for job in order:
            if over_budget is not None and over_budget():
                break
            tried.append(job)
            if holds and job.queue in holds:
                holder, start = holds[job.queue]
                limit = job.time_limit_s
                if holder != job.id and (limit is None or now + limit > start):
                    wait = wait_text(start - now)
                    reasons[job.id] = (
                        f"its queue's quota is held for job {holder}, expected to be "
                        f"admitted in {wait}; a time limit under {wait} would let it "
                        "start now")
                    continue
            blocked = None
            if by_job:
                if job.id in by_job:
                    standing.drop(job.id)  # renewed below if it still waits
                blocked = standing.blocked(job)
            asked = (job.queue, job.shape, None if blocked is None else blocked[0])
            known = answers.get(asked)
            if known is not None:
                kind, reason = known
            else:
                try:
                    kind, reason = judge.place_or_reason(job, blocked, by_job, now, asked)
                except Exception as exc:  # one job's failure never stops the cycle
                    out.errors[job.id] = exc
                    reasons[job.id] = error_reason(exc)
                    continue
            if kind == "placed":
                order.placed(job)
                if by_job and job.time_limit_s is not None:
                    _note_backfill(job, by_job, now, out)
                continue
            reasons[job.id] = reason
            if kind != "capacity" and kind != "quota":
                continue
            if preempt_allowed:
                key = (job.shape, job.queue, job.priority)
                if key not in tried_preempt:
                    tried_preempt.add(key)
                    try:
                        if stoppable is None:
                            stoppable = by_queue(running)
                        victims, nodes = choose_victims(scheduler, quota, job, running,
                                                        _loads(order, shares), stoppable)
                    except Exception as exc:
                        out.errors[job.id] = exc
                        reasons[job.id] = error_reason(exc)
                        continue
                    if victims:
                        job.nominated = True
                        for victim in victims:
                            victim.stopping = "preempt"
                            out.preemptions.append((victim, job))
                        reserver.ends = None  # they end sooner now
                        if nodes is not None:  # what it counts on stays free for it
                            grace = max(v.grace_s for v in victims)
                            out.reservations[job.id] = reservation = Reservation(
                                job.id, nodes, now + grace)
                            standing.put(job.id, reservation)
                        reasons[job.id] = (
                            f"waiting for {len(victims)} preempted job(s) to stop: {reason}")
                        preempt_allowed = False
                        continue
            if kind == "quota":
                if backfill and len(holds) < most and job.queue not in holds and (
                        job.quota_hold is not None
                        or now - job.created_at >= policy.reserve_after_s):
                    _hold_quota(scheduler, job, holds, quota, running, now, policy, out)
                hold = holds.get(job.queue) if holds else None
                if hold is not None and hold[0] == job.id:
                    reasons[job.id] = (f"{reason}; its queue's quota is held for it, expected "
                                       f"to be admitted in {wait_text(hold[1] - now)}")
                continue
            if kind != "capacity":
                continue
            wants = first_in_line
            first_in_line = False
            if backfill and len(by_job) < most and (
                    wants or job.reservation is not None
                    or now - job.created_at >= policy.reserve_after_s):
                reserver.reserve(job, reason)
    finally:
        out.evaluated = len(tried)
    return tried


def _hold_for_heads(scheduler: Scheduler, quota: QuotaBook, pending: list[LiveJob],
                    running: list[LiveJob], now: float, policy: QueuePolicy,
                    holds: dict[str, tuple[int, float]], out: CycleOutcome) -> None:
    """Before the cycle places anything: each queue's first waiting job (by priority, then
    arrival; the order of step 1 would put the queue's smaller jobs that fit its quota
    first) holds its queue's quota if the quota refuses it now."""
    heads: dict[str, LiveJob] = {}
    for job in pending:
        head = heads.get(job.queue)
        if head is None or job.priority > head.priority or (
                job.priority == head.priority
                and (job.created_at, job.id) < (head.created_at, head.id)):
            heads[job.queue] = job
    refused = [h for q, h in heads.items() if quota.refusal(q, h.amount) is not None]
    if not refused:
        return
    queues = {h.queue for h in refused}
    mine: dict[str, list[LiveJob]] = {q: [] for q in queues}
    for job in running:
        if job.queue in queues:
            mine[job.queue].append(job)
    for head in refused:
        if len(holds) >= policy.max_reservations:
            return
        _hold_quota(scheduler, head, holds, quota, mine[head.queue], now, policy, out)


def _hold_quota(scheduler: Scheduler, job: LiveJob, holds: dict[str, tuple[int, float]],
                quota: QuotaBook, running: list[LiveJob], now: float, policy: QueuePolicy,
                out: CycleOutcome) -> None:
    """Let ``job`` (refused by its queue's quota) hold that quota, if it can ever run in the
    pool and its queue's own work ending would let it in."""
    if never_fits(scheduler.state, job.request, job.nodes) is not None:
        return  # it would hold the queue's quota for nothing, for ever
    start = quota_frees_at(quota, job, running, out.placed, now, policy.default_run_s,
                           policy.run_s_by_queue)
    if start is None:
        return
    holds[job.queue] = (job.id, start)
    out.quota_holds[job.id] = start


class _Reserver:
    """Makes reservations for jobs that do not fit (step 5), sorting the running jobs by
    expected end once for all of them (again after victims were marked: they end sooner)."""

    def __init__(self, scheduler: Scheduler, running: list[LiveJob], now: float,
                 policy: QueuePolicy, standing: Standing, out: CycleOutcome) -> None:
        self.scheduler = scheduler
        self.running = running
        self.now = now
        self.default_run_s = policy.default_run_s
        self.by_queue = policy.run_s_by_queue
        self.standing = standing
        self.out = out
        self.ends: EndOrder | None = None

    def reserve(self, job: LiveJob, reason: str) -> None:
        """Give ``job`` the nodes that free soonest, if any would do, and say so."""
        out, now = self.out, self.now
        try:
            if self.ends is None:
                self.ends = EndOrder(self.running, now, self.default_run_s, self.by_queue)
            reservation = reserve(self.scheduler, job, self.running, now, self.default_run_s,
                                  self.ends, self.by_queue)
        except Exception as exc:
            out.errors[job.id] = exc
            out.reasons[job.id] = error_reason(exc)
            return
        if reservation is not None:
            out.reservations[job.id] = reservation
            self.standing.put(job.id, reservation)
            count = int(reservation.nodes.sum())
            out.reasons[job.id] = (
                f"{reason}; {count} node(s) reserved for it, expected to start in "
                f"{wait_text(reservation.start_at - now)}")


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
        self.answers: dict[tuple[object, ...], tuple[str, str]] = {}
        """Answers not to place by ``asked`` (see ``place_or_reason``), while nothing is
        placed: the same answers as judging again (the caches below would give them; the
        quota amount follows from the shape), in one look-up. The cycle looks here first."""

    def place_or_reason(self, job: LiveJob, blocked: Blocked | None,
                        standing: dict[int, Reservation], now: float,
                        asked: tuple[object, ...]) -> tuple[str, str]:
        """("placed", "") with the job placed, added to ``out.placed`` and counted in the
        quota; else (kind, reason), kind one of "quota", "never", "capacity", "reserved".
        ``asked``: (queue, shape, ``blocked[0]`` or None), what the answer is kept under.
        Raises only with the state and the quota book as they were."""
        known = self.answers.get(asked)
        if known is not None:
            return known
        result = self._judge(job, blocked, standing, now)
        if result[0] != "placed":
            self.answers[asked] = result
        return result

    def _judge(self, job: LiveJob, blocked: Blocked | None,
               standing: dict[int, Reservation], now: float) -> tuple[str, str]:
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
        self.answers.clear()
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
