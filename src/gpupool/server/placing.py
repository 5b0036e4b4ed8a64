"""The loop's scheduling step: run the shared cycle on the live state, record preemptions,
persist placements *before* launching (so a crash never hands a share out twice), hand
launches to the launch worker, record what it reports, and write pending reasons. Every row
it writes goes through the job store (``server/job_store.py``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from gpupool.core.live import CycleOutcome, LiveJob, error_reason
from gpupool.core.queue_order import QueuePolicy
from gpupool.executors.base import Handle, LaunchError, NodeLostError
from gpupool.schemas.jobs import Phase
from gpupool.server.active import Active
from gpupool.server.cycle import run_cycle
from gpupool.server.job_store import JobStore
from gpupool.server.launch_worker import Launched, LaunchWorker
from gpupool.server.launcher import Launcher
from gpupool.server.live_state import LiveState
from gpupool.server.metrics.loop_metrics import LoopMetrics
from gpupool.server.outcomes import EndRecorder
from gpupool.server.queue_inputs import UsageCache, quota_and_weights
from gpupool.server.write_retry import WriteRetries

log = logging.getLogger("gpupool.controller")

CYCLE_BUDGET_S = 0.25
"""Wall time one cycle may take; the jobs it did not reach wait for the next step."""


def clock_text(at: float) -> str:
    """A UNIX time as UTC, e.g. "2026-12-03 15:40:07 UTC"."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Placing:
    """Decides and binds placements for the loop (its ``schedule`` runs under the loop's
    lock, once per step)."""

    def __init__(self, store: JobStore, live: LiveState, launcher: Launcher, policy: QueuePolicy,
                 usage: UsageCache, ends: EndRecorder, retries: WriteRetries,
                 stop: Callable[[Active, str, float, str | None], None],
                 wake: Callable[[], None], launch_threads: int = 1,
                 metrics: LoopMetrics | None = None) -> None:
        """``stop(active, why, now, note)`` tells a running job to stop (and writes why);
        ``wake`` runs a step soon (a launch finished); ``metrics``: where cycle times,
        preemptions and waits are counted (the controller's)."""
        self.store = store
        self.live = live
        self.launcher = launcher
        self.policy = policy
        self.usage = usage
        self.ends = ends
        self.retries = retries
        self.stop = stop
        self.worker = LaunchWorker(self._start, wake, launch_threads)
        self.metrics = metrics if metrics is not None else LoopMetrics()
        self.last_cycle_seconds = 0.0
        self.last_outcome: CycleOutcome | None = None
        """What the latest cycle decided (for tests and diagnostics)."""

    def schedule(self, now: float) -> None:
        live = self.live
        if not live.pending:
            live.fresh = []
            return
        started = time.perf_counter()
        running = [a.live for a in live.active.values()]
        candidates, complete, holders = live.candidates()
        quota, weights, run_limits = quota_and_weights(self.store.db, running)
        shares = self.usage.shares(weights, now) if self.policy.order == "fairshare" else None
        policy = self.policy
        if run_limits:
            policy = replace(policy, run_s_by_queue=run_limits)
        outcome = run_cycle(live.scheduler, quota, candidates, running,
                            budget_s=CYCLE_BUDGET_S, now=now, policy=policy,
                            shares=shares, holders=holders, complete=complete)
        if outcome.evaluated < len(candidates):
            live.dirty = True  # the time budget ran out: finish on the next step
        self.last_cycle_seconds = time.perf_counter() - started
        self.last_outcome = outcome
        self.metrics.cycle(self.last_cycle_seconds)
        for victim, preemptor in outcome.preemptions:
            self.metrics.preempted(victim.queue)
            try:  # the victim is told to stop first; a failed note must not block binding
                self.stop(live.active[victim.id], "preempt", now,
                          f"preempted to make room for job {preemptor.id} "
                          f"(queue {preemptor.queue}, priority {preemptor.priority}); "
                          f"grace period {victim.grace_s:g} s")
            except Exception:
                log.exception("job %s: could not record its preemption", victim.id)
        self.bind(outcome.placed, now)
        for job_id, (holder, until) in outcome.backfilled.items():
            if job_id in live.active:
                self.store.event(job_id, Phase.STARTING,
                                 f"backfilled until {clock_text(until)} (its time limit) "
                                 f"on nodes reserved for job {holder}", now)
        self._write_reasons(outcome)

    def _write_reasons(self, outcome: CycleOutcome) -> None:
        pending = self.live.pending
        changed = {i: r for i, r in outcome.reasons.items()
                   if i in pending and pending[i].reason != r}
        for job_id, error in outcome.errors.items():
            if job_id in changed:  # logged when the reason changes: once per job, not per cycle
                log.error("job %s: %s", job_id, error_reason(error), exc_info=error)
        if changed:
            self.store.reasons(changed)
            for job_id, reason in changed.items():
                pending[job_id].reason = reason

    def bind(self, placed: list[LiveJob], now: float) -> None:
        """Write the placed jobs' rows as starting (one transaction), then launch them."""
        if not placed:
            return
        live = self.live
        try:  # memory changes come after the commit
            written = self.store.bind(placed, live.state.names, now)
        except BaseException:
            # Nothing was written: every placed job waits again, holding nothing.
            for job in placed:
                live.release(job)
            raise
        bound = [(job, active) for job, active in written if active is not None]
        for job in (job for job, active in written if active is None):  # cancelled meanwhile
            del live.pending[job.id]
            live.release(job)
        for job, active in bound:
            del live.pending[job.id]
            self.metrics.started(job.id, job.queue, job.created_at, now)
            job.started_at = now
            job.reservation = None
            live.active[job.id] = active
        for _job, active in bound:
            self.worker.submit(active)
        self.collect(now)

    def _start(self, active: Active) -> tuple[list[Handle], str | None]:
        """Launch the attempt's processes (in the launch worker)."""
        job = active.live
        return self.launcher.start(job.id, active.name, active.attempt, job.queue,
                                   job.allocations, active.spec, self.store.owner(job.id))

    def collect(self, now: float) -> None:
        """Record the launches that finished: running, or failed (resources given back)."""
        for launched in self.worker.finished():
            if launched.error is not None:
                self._failed(launched, now)
            else:
                self._running(launched, now)

    def _running(self, launched: Launched, now: float) -> None:
        active = launched.active
        job = active.live
        active.handles = launched.handles
        if job.stopping is not None:  # cancelled or preempted while it was launching
            for handle in launched.handles:
                self.launcher.executor.terminate(handle)
        handles = launched.handles
        what = (f"pid {handles[0].pid}" if len(handles) == 1 else
                f"{len(handles)} processes on {len(job.allocations)} nodes")
        endpoint = self.launcher.endpoints.pop((job.id, active.attempt), None)
        try:  # the processes run and are tracked: a failed note must not stop the loop
            self.store.running(job.id, handles, launched.enforcement, f"running ({what})",
                               endpoint.to_json() if endpoint is not None else None)
        except Exception:
            log.exception("job %s: could not record that it runs", job.id)

    def _failed(self, launched: Launched, now: float) -> None:
        active, exc = launched.active, launched.error
        job = active.live
        if not isinstance(exc, LaunchError):
            log.error("job %s: launch failed", job.id, exc_info=exc)
        # Nothing runs: its resources are free now; its row is written (or retried).
        self.launcher.endpoints.pop((job.id, active.attempt), None)
        self.live.active.pop(job.id, None)
        self.live.release(job)
        message = f"could not start: {exc}"
        if isinstance(exc, NodeLostError):
            self.retries.write_or_retry(job.id, lambda: self.ends.requeue(
                active, f"{message}; back in the queue", now))
        else:
            self.retries.write_or_retry(job.id, lambda: self.store.finish(
                job.id, Phase.FAILED, None, message, now))
