"""A simulated pool stepped by the shared queue cycle: what the live server's loop does
each step (ends first, then one cycle over the waiting jobs), minus the database and the
processes. The differential test drives it side by side with the server; the team replay
(sim/team_timed.py) drives it from a workload's events.

Which waiting jobs a step tries follows the server's rule: every waiting job after capacity
or quota changed (something ended, or the previous cycle ran out of budget), otherwise only
the jobs that arrived since (the others could not fit before and still cannot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gpupool.core.cluster import ClusterState, NodeSpec
from gpupool.core.fairshare import DEFAULT_HALF_LIFE_S, FairShare
from gpupool.core.live import CycleOutcome, LiveJob, cycle_candidates
from gpupool.core.queue_cycle import run_cycle
from gpupool.core.queue_order import QueuePolicy
from gpupool.core.quota import QueueQuota, QuotaBook
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import PolicyContext, build_profile


@dataclass
class Attempt:
    """One run of a job: who, how many GPUs, from when to when (end None: still running)."""

    job_id: int
    team: str
    user: str
    gpus: float
    start: float
    end: float | None = None
    how: str = ""
    """How it ended: "done", "cancelled", "preempted", "time-limit"."""


@dataclass
class PoolSimulation:
    """The cycle's inputs kept in memory: nodes, quotas, weights, waiting and running jobs.

    ``step(now)`` runs one cycle; the caller says when jobs arrive (``submit``), end
    (``end``) or are cancelled (``cancel``). Victims of a preemption keep their resources
    until the caller ends them (``end(.., how="preempted")`` puts them back in the queue)."""

    nodes: Sequence[NodeSpec]
    queues: Sequence[QueueQuota]
    policy_name: str = "bestfit"
    queue_policy: QueuePolicy = field(default_factory=QueuePolicy)
    weights: dict[str, float] = field(default_factory=dict)
    half_life_s: float = DEFAULT_HALF_LIFE_S

    def __post_init__(self) -> None:
        self.state = ClusterState(list(self.nodes))
        context = PolicyContext(rng=np.random.default_rng(0))  # as the server's scheduler
        self.scheduler = Scheduler(self.state, build_profile(self.policy_name, self.state,
                                                             context))
        self.shares = FairShare(dict(self.weights), self.half_life_s)
        self.pending: dict[int, LiveJob] = {}
        self.running: dict[int, LiveJob] = {}
        self.attempts: list[Attempt] = []
        self._open: dict[int, Attempt] = {}
        self._fresh: list[LiveJob] = []
        self._dirty = True
        self.preemptions = 0

    def submit(self, job: LiveJob) -> None:
        self.pending[job.id] = job
        self._fresh.append(job)

    def cancel(self, job_id: int, now: float) -> None:
        """A waiting job leaves the queue; a running one ends now."""
        if job_id in self.pending:
            del self.pending[job_id]
        elif job_id in self.running:
            self.end(job_id, now, "cancelled")

    def end(self, job_id: int, now: float, how: str = "done") -> None:
        """A running job's processes ended: its resources are free and its usage is charged;
        a preempted one waits again (keeping its place by creation time)."""
        job = self.running.pop(job_id)
        for allocation in job.allocations:
            self.scheduler.release(allocation)
        job.allocations = ()
        attempt = self._open.pop(job_id)
        attempt.end, attempt.how = now, how
        self.shares.charge(attempt.team, attempt.user, attempt.gpus, attempt.start, now)
        self._dirty = True
        if how == "preempted":
            self.preemptions += 1
            job.stopping = None
            job.reason = ""
            self.pending[job_id] = job

    def quota_book(self) -> QuotaBook:
        book = QuotaBook(list(self.queues))
        for job in self.running.values():
            book.add(job.queue, job.amount)
        return book

    def step(self, now: float) -> CycleOutcome:
        """One cycle at ``now``: placed jobs start now (they move to ``running``)."""
        if not self.pending:
            self._fresh = []
            return CycleOutcome()
        candidates, complete, holders = cycle_candidates(self.pending, self._fresh,
                                                         self._dirty)
        self._dirty = False
        self._fresh = []
        self.shares.decay_to(now)
        shares = self.shares if self.queue_policy.order == "fairshare" else None
        outcome = run_cycle(self.scheduler, self.quota_book(), candidates,
                            list(self.running.values()), now=now, policy=self.queue_policy,
                            shares=shares, holders=holders, complete=complete)
        for job in outcome.placed:
            del self.pending[job.id]
            job.started_at = now
            self.running[job.id] = job
            attempt = Attempt(job.id, job.queue, job.user, job.amount / 1000, now)
            self.attempts.append(attempt)
            self._open[job.id] = attempt
        for job_id, reason in outcome.reasons.items():
            if job_id in self.pending:
                self.pending[job_id].reason = reason
        return outcome
