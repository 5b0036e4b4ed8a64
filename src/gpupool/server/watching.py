"""The loop's steps around the jobs it knows, other than placing them: take in newly
submitted jobs, act on cancel requests, and watch the processes of the jobs that hold
resources (time limits, a failed rank of a gang, grace periods, ends).

Contract:

- a submitted job is loaded once: into ``pending``, or failed with the reason when its
  stored spec cannot be scheduled; ``max_seen`` moves past a job only once it is handled, so
  a failed write is redone on the next step;
- a cancel request ends a pending job at once; a job holding resources is told to stop
  (SIGTERM, SIGKILL after its grace period) and recorded as cancelled when it ended; a job
  whose row write is outstanding (``retries``) is left until that write is made;
- stopping a job writes the stop request (and why) after its processes were signalled;
- a job all of whose processes ended is handed to the end recorder (``server/outcomes.py``).

Every row is written through the job store; processes are reached through
``launcher.executor`` (read at each call: tests swap it).
"""

from __future__ import annotations

from collections.abc import Callable

from gpupool.core.live import LiveJob
from gpupool.core.request import RequestError
from gpupool.schemas.jobs import JobSpec, Kind, Phase
from gpupool.server.active import Active, to_request
from gpupool.server.job_store import JobStore, PendingRow
from gpupool.server.launcher import Launcher
from gpupool.server.live_state import LiveState
from gpupool.server.metrics.loop_metrics import LoopMetrics
from gpupool.server.outcomes import EndRecorder, problem_text
from gpupool.server.services.errors import Invalid
from gpupool.server.write_retry import WriteRetries


class Watch:
    """Steps 1, 2 and 4 of the loop (see ``server/controller.py``) over ``live``."""

    def __init__(self, store: JobStore, live: LiveState, launcher: Launcher,
                 ends: EndRecorder, retries: WriteRetries, clock: Callable[[], float]) -> None:
        self.store = store
        self.live = live
        self.launcher = launcher
        self.ends = ends
        self.retries = retries
        self.clock = clock
        self.max_seen = 0
        """The highest job id loaded (or failed) so far."""
        self.notebook_lifetime_s: float | None = None
        """A notebook is suspended after running this long (the server's setting, replaced
        by its team's when set; None and no team's: only its own time limit)."""
        self.metrics = LoopMetrics()
        """Told when a notebook is resumed (its wait restarts) or a workload is cancelled
        (the controller sets its own)."""

    def load_pending(self) -> None:
        """Take in the jobs submitted since the last call (see the module)."""
        pending = self.live.pending
        for row in self.store.new_pending(self.max_seen):
            if row.id not in pending:
                self._load(row)
            self.max_seen = max(self.max_seen, row.id)

    def _load(self, row: PendingRow) -> None:
        job_id, queue = row.id, row.queue
        try:
            spec = JobSpec.model_validate(row.spec)
            request = to_request(job_id, spec, queue, self.live.state.models)
        except (Invalid, RequestError) as exc:
            self.store.finish(job_id, Phase.FAILED, None, str(exc), self.clock())
            return
        except Exception as exc:  # e.g. a row stored before today's bounds: fail that job
            self.store.finish(job_id, Phase.FAILED, None,
                              f"cannot be scheduled: {problem_text(exc)}", self.clock())
            return
        limit = spec.time_limit_s
        lifetime = row.notebook_lifetime_s or self.notebook_lifetime_s  # the team's first
        if spec.kind == Kind.NOTEBOOK and lifetime is not None:
            limit = min(limit or lifetime, lifetime)
        self.live.add_pending(LiveJob(job_id, queue, row.priority, row.created_at, request,
                                      spec.grace_period_s, nodes=spec.nodes, user=row.user,
                                      time_limit_s=limit))

    def handle_cancels(self, now: float) -> None:
        """Act on the cancel requests, then on notebooks' suspend and resume requests (see
        the module)."""
        pending, active = self.live.pending, self.live.active
        for job_id in self.store.cancel_requests():
            if job_id in self.retries:
                continue  # its pending write decides where it is; cancelled after that
            if job_id in pending:
                self.store.finish(job_id, Phase.CANCELLED, None, "cancelled before it started",
                                  now)
                del pending[job_id]
                self.forget(job_id)
            elif job_id in active and active[job_id].live.stopping != "cancel":
                self.stop(active[job_id], "cancel", now)
            elif job_id not in active:
                self.store.finish(job_id, Phase.CANCELLED, None, "cancelled", now)
                self.forget(job_id)
        self._handle_suspends(now)
        for row in self.store.resume_requests():
            if row.id not in self.retries and self.store.resume(row.id, now):
                self.metrics.queued(row.id, now)
                self._load(row)

    def _handle_suspends(self, now: float) -> None:
        """A pending notebook asked to suspend is suspended at once; a running one is told
        to stop (SIGTERM, SIGKILL after its grace), and suspended once it ended."""
        pending, active = self.live.pending, self.live.active
        for job_id, _phase in self.store.suspend_requests():
            if job_id in self.retries:
                continue
            if job_id in pending:
                self.store.suspend(job_id, "suspended before it started", now)
                del pending[job_id]
            elif job_id in active and active[job_id].live.stopping is None:
                self.stop(active[job_id], "suspend", now)
            elif job_id not in active:
                self.store.suspend(job_id, "suspended", now)

    def forget(self, job_id: int) -> None:
        """A cancelled workload's files outside its attempts (a notebook's own directory)
        are removed."""
        self.metrics.forget(job_id)
        self.launcher.workspace.drop_env_dir(job_id)

    def stop(self, active: Active, why: str, now: float, note: str | None = None) -> None:
        """Tell the job's processes to stop (SIGTERM; SIGKILL once its grace period is
        over, at a later poll), then write why (``note``: an event saying so)."""
        active.live.stopping = why
        active.deadline = now + active.live.grace_s
        for handle in active.running():
            self.launcher.executor.terminate(handle)
        self.store.stop_asked(active.live.id, why, active.deadline, now, note)

    def poll(self, now: float) -> None:
        """Ask every running process how it is (one call for all), then per job: stop it at
        its time limit, stop the rest of a gang one of whose processes failed, kill what
        outlived its grace period, and record the jobs all of whose processes ended."""
        executor = self.launcher.executor
        tracked = self.live.active
        asked = [(active, index, handle) for active in tracked.values()
                 for index, handle in enumerate(active.handles) if index not in active.ended]
        outcomes = executor.poll_many([handle for _, _, handle in asked]) if asked else []
        for (active, index, _), outcome in zip(asked, outcomes, strict=True):
            if outcome is None:
                continue
            active.ended[index] = outcome
            if active.failure is None and (outcome.lost or outcome.exit_code != 0):
                active.failure = (index, outcome)
        for job_id, active in list(tracked.items()):
            if not active.handles:
                continue  # still launching
            left = active.running()
            limit = active.live.time_limit_s
            if (left and limit is not None and active.live.stopping is None
                    and now >= active.live.started_at + limit):
                if active.spec.kind == Kind.NOTEBOOK:  # a notebook's lifetime: put aside
                    self.stop(active, "suspend", now,
                              f"ran for {limit:g} s, its longest run: suspending it")
                else:
                    self.stop(active, "time-limit", now,
                              f"time limit of {limit:g} s reached: stopping it")
            if not left:
                self.ends.finish_ended(job_id, active, now)
                continue
            if active.failure is not None and active.live.stopping is None:
                # One process of a multi-process job failed: stop the others.
                self.stop(active, "gang", now, f"{active.outcome().reason}; stopping the "
                          f"other {len(left)} process(es)")
            if active.deadline is not None and now >= active.deadline and not active.killed:
                for handle in left:
                    executor.kill(handle)
                active.killed = True
                self.store.event(job_id, Phase.RUNNING, "grace period over: SIGKILL sent", now)
