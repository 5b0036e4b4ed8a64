"""How the controller records that a job's attempt ended, and sends a job back to the queue.

Contract:

- The row is written first; memory changes only once the write succeeded. A job whose end
  cannot be written stays tracked in ``active``, holding its resources, and is written again
  on the next step (logged once per job, and once more when it finally succeeds).
- An ended attempt becomes exactly one of: cancelled (a cancel was asked; a notebook's own
  directory is removed), suspended (a notebook asked to suspend, or idle), requeued
  (preempted, or failed with retries left under ``restart: on-failure``), succeeded (exit code
  0, not lost), or failed. An *unknown* outcome is never run again, whatever the restart
  policy: the command may have done its work.
- A requeued job re-enters ``pending`` holding nothing (no allocations, no stop request, no
  reason), and the loop is told to reconsider every pending job.
- Once an ended job's row is written, it leaves ``active``, its allocations are released and
  its share file is dropped.

Rows are written through the job store; resources go back through the live state's one
``release``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import ValidationError

from gpupool.executors.base import Outcome
from gpupool.schemas.jobs import Phase
from gpupool.server.active import Active
from gpupool.server.job_store import JobStore
from gpupool.server.live_state import LiveState

log = logging.getLogger("gpupool.controller")


class EndRecorder:
    """Writes how attempts ended (through ``store``) and moves the jobs out of ``active``
    (or back to pending).

    ``live``: the loop's live state (its ``pending`` and ``active`` are changed in place);
    ``drop_share_file(job_id, attempt)`` removes the attempt's GPU-share file;
    ``mark_dirty`` makes the next cycle reconsider every pending job."""

    def __init__(
        self,
        store: JobStore,
        live: LiveState,
        drop_share_file: Callable[[int, int], None],
        mark_dirty: Callable[[], None],
    ) -> None:
        self.store = store
        self.live = live
        self.drop_share_file = drop_share_file
        self.mark_dirty = mark_dirty
        self.end_failed: set[int] = set()
        """Jobs whose end could not be written yet (kept in ``active``; logged once)."""
        self.drop_env_dir: Callable[[int], None] = lambda _job_id: None
        """Removes a cancelled notebook's own directory (set by the controller)."""
        self.ended_attempt: Callable[[Active], None] = lambda _active: None
        """Told each attempt whose end was recorded (the controller keeps its artifacts)."""
        self.requeued: Callable[[int, float], None] = lambda _job_id, _now: None
        """Told ``(job_id, now)`` when a job goes back to pending (its wait restarts; set by
        the controller to its metrics')."""

    def finish_ended(self, job_id: int, active: Active, now: float) -> None:
        """Every process of the job ended: write its row (final, or back to pending) first,
        then forget it and give its resources back. If the write fails the job stays tracked,
        holding its resources, and the next step writes it again (logged once per job)."""
        try:
            self.record(active, active.outcome(), now)
        except Exception:
            if job_id not in self.end_failed:
                self.end_failed.add(job_id)
                log.exception("job %s: could not record its end; retrying every step", job_id)
            return
        if job_id in self.end_failed:
            self.end_failed.discard(job_id)
            log.info("job %s: its end is recorded now", job_id)
        self.ended_attempt(active)
        del self.live.active[job_id]
        self.mark_dirty()
        self.live.release(active.live)
        self.drop_share_file(job_id, active.attempt)

    def record(self, active: Active, outcome: Outcome, now: float) -> None:
        """Write how the attempt ended (nothing in memory changes before the write)."""
        code = outcome.exit_code
        status = outcome.reason or (
            "lost (the process disappeared)" if outcome.lost else f"exit code {code}")
        if active.live.stopping == "cancel":
            self.store.finish(active.live.id, Phase.CANCELLED, code, f"cancelled ({status})",
                              now)
            self.drop_env_dir(active.live.id)
        elif active.live.stopping == "time-limit":
            limit = active.live.time_limit_s
            self.store.finish(active.live.id, Phase.FAILED, code,
                              f"stopped at its time limit of {limit:g} s ({status})", now)
        elif active.live.stopping == "preempt":
            self.requeue(active, f"preempted ({status}); back in the queue", now)
        elif active.live.stopping == "suspend":
            self.store.suspend(active.live.id, "suspended: its processes stopped, its GPU "
                               "share given back, its files kept", now)
        elif code == 0 and not outcome.lost:
            self.store.finish(active.live.id, Phase.SUCCEEDED, 0, "succeeded", now)
        elif outcome.unknown:
            # Never re-run on an unknown outcome, whatever the restart policy: the command
            # may have done its work (on-failure re-runs known failures; this may be none).
            self.store.finish(active.live.id, Phase.FAILED, None,
                              f"{status}; not run again: the command may have succeeded", now)
        else:
            failures = active.failures + 1
            spec = active.spec
            if spec.restart == "on-failure" and failures <= spec.max_retries:
                self.requeue(
                    active, f"failed ({status}); retry {failures} of {spec.max_retries}", now,
                    failures=failures,
                )
            else:
                self.store.finish(active.live.id, Phase.FAILED, code, f"failed ({status})",
                                  now, failures=failures)

    def requeue(self, active: Active, message: str, now: float,
                failures: int | None = None) -> None:
        """Back to pending: the row first, then the in-memory job (holding nothing)."""
        live = active.live
        count = active.failures if failures is None else failures
        self.store.requeue(live.id, message, count, now)
        active.failures = count
        self.mark_dirty()
        live.stopping = None
        self.live.release(live)  # what it still holds (nothing, when its launch failed)
        live.reason = ""
        self.live.pending[live.id] = live
        self.requeued(live.id, now)


def problem_text(exc: Exception) -> str:
    """One line for a job's reason: a validation error's fields and messages, else the
    exception's text."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}"
                         for e in exc.errors())
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
