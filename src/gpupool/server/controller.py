"""The background loop: the only writer of job phases.

Each step (on a short tick, or at once when woken by a submit or cancel):

1. load newly submitted jobs into the in-memory pending set;
2. act on cancel requests (pending: end now; running: SIGTERM, SIGKILL after the grace);
3. poll running processes; finish, retry or requeue (preempted) the ones that ended;
4. run a scheduling cycle (server/cycle.py) on the in-memory snapshot, persist placements
   *before* launching (so a crash never hands a share out twice), launch, and record
   preemptions and pending reasons.

``recover`` rebuilds the snapshot from the database after a restart and re-adopts the
processes that are still running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gpupool.core.cluster import Allocation, ClusterError, ClusterState
from gpupool.core.quota import QueueQuota, QuotaBook
from gpupool.core.request import RequestError
from gpupool.executors.base import Executor, Handle, LaunchError, NodeLostError, Outcome
from gpupool.executors.inventory import LocalInventory
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.active import Active, handles_from_json, handles_json, to_request
from gpupool.server.cycle import LiveJob, error_reason, run_cycle
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, JobEvent, Team
from gpupool.server.job_rows import event, finish, owner_of, requeue
from gpupool.server.launcher import Launcher
from gpupool.server.pool_nodes import build_scheduler, carry_over, register_nodes
from gpupool.server.services.errors import Invalid
from gpupool.server.settings import Settings
from gpupool.server.sharing.setup import Sharing
from gpupool.server.workspace import Workspace

log = logging.getLogger("gpupool.controller")

ACTIVE = (Phase.STARTING.value, Phase.RUNNING.value)
STEP_COALESCE_S = 0.005


class Controller:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        executor: Executor,
        inventory: LocalInventory,
        interposer: str | None = None,
        interposer_missing: str = "not built",
        membership: Callable[[], LocalInventory | None] | None = None,
        sharing: Sharing | None = None,
    ) -> None:
        """``interposer``: the path of ``libgpushare.so`` when GPU shares are enforced with it
        on this machine's nodes; else None, and ``interposer_missing`` says why not.
        ``membership`` (a pool whose nodes come and go, e.g. Ray): called every step, returns
        the new inventory when nodes joined or left, else None. ``sharing``: what the nodes
        offer for enforcing GPU shares (MIG, MPS, interposer); it supersedes ``interposer``."""
        self.membership = membership
        self.settings = settings
        self.db = db
        self.executor = executor
        self.inventory = inventory
        self.state = ClusterState(inventory.nodes)
        self.scheduler = build_scheduler(settings.policy, self.state)
        self.launcher = Launcher(settings.runs_dir, executor, inventory, self.state,
                                 interposer, interposer_missing, sharing,
                                 Workspace(settings.jobs_root))
        self.pending: dict[int, LiveJob] = {}
        self.active: dict[int, Active] = {}
        self._max_seen = 0
        self._dirty = True
        """Capacity or quota changed since the last cycle: every pending job is reconsidered.
        Otherwise only new jobs are: old ones could not fit before and still cannot."""
        self._fresh: list[LiveJob] = []
        self._unwritten: dict[int, Callable[[], None]] = {}
        """Row writes that failed (the database was unavailable), by job: retried at the start
        of every step until they succeed."""
        self._end_failed: set[int] = set()
        """Jobs whose end could not be written yet (kept in ``active``; logged once)."""
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last_cycle_seconds = 0.0

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def models(self) -> tuple[str, ...]:
        return self.state.models

    def wake(self, capacity_changed: bool = False) -> None:
        """Run a step soon. ``capacity_changed`` (quota edits) makes it reconsider every
        pending job, not only new ones."""
        if capacity_changed:
            self._dirty = True
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpupool-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.launcher.close()  # the server stops: so do its MPS daemons

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.step()
            except Exception:  # the loop must survive any one bad step
                log.exception("scheduler loop step failed")
            self._wake.wait(self.settings.tick_seconds)
            # Coalesce a burst of submits into one step (costs at most a few ms of latency).
            time.sleep(STEP_COALESCE_S)
            self._wake.clear()

    def step(self) -> None:
        """One pass of the loop (also called directly by tests and benchmarks)."""
        with self._lock:
            now = time.time()
            self._follow_membership(now)
            self._retry_writes()
            self._load_pending()
            self._handle_cancels(now)
            self._poll(now)
            self._follow_membership(now)  # polls may have found a node lost
            self._schedule(now)

    def _follow_membership(self, now: float) -> None:
        if self.membership is not None:
            changed = self.membership()
            if changed is not None:
                self._apply_inventory(changed, now)

    def _apply_inventory(self, inventory: LocalInventory, now: float) -> None:
        """Nodes joined or left: rebuild the snapshot and the scheduler on the new node set,
        carrying over every held allocation whose node is still there (jobs on departed
        nodes learn it from their processes, which poll as lost)."""
        if not inventory.nodes:
            log.warning("the pool has no node left; keeping the last known nodes")
            return
        state = ClusterState(inventory.nodes)
        scheduler = build_scheduler(self.settings.policy, state)
        carry_over(self.state, scheduler, [a.live for a in self.active.values()])
        self.state, self.scheduler, self.inventory = state, scheduler, inventory
        self.launcher.state, self.launcher.inventory = state, inventory
        self._dirty = True
        self._register_nodes(now)
        log.info("pool now has %d node(s): %s", state.num_nodes, ", ".join(state.names))

    # -- recovery ----------------------------------------------------------------------

    def recover(self) -> None:
        """Register the nodes, rebuild allocations of running jobs, re-adopt processes."""
        now = time.time()
        self._register_nodes(now)
        with self.db.session() as s:
            rows = s.scalars(select(Job).where(Job.phase.in_(ACTIVE))).all()
        for job in rows:
            self._recover_active(job, now)

    def _register_nodes(self, now: float) -> None:
        """Make the nodes table say what the pool has now (departed nodes removed)."""
        register_nodes(self.db, self.inventory, self.launcher.node_mechanisms, now)

    def _recover_active(self, job: Job, now: float) -> None:
        spec = JobSpec.model_validate(job.spec)
        places = ([(r["node"], tuple(r["gpus"])) for r in job.ranks] if job.ranks
                  else [(job.node or "", tuple(job.gpus or ()))])
        nodes = [node for node, _ in places]
        found: list[Handle | None] = (
            list(handles_from_json(job.handle)) if job.handle
            else self.launcher.find_handles(job.id, job.attempts, nodes, spec.procs_per_node))
        try:
            request = to_request(job.id, spec, job.queue, self.models)
            allocations: list[Allocation] = []
            try:
                for node, gpus in places:
                    allocations.append(self.scheduler.place_on(self.state.index[node], gpus,
                                                               request))
            except BaseException:
                for allocation in allocations:
                    self.scheduler.release(allocation)
                raise
        except (KeyError, ClusterError, Invalid, RequestError) as exc:
            finish(self.db, job.id, Phase.FAILED, None, f"cannot restore after restart: {exc}", now)
            self.launcher.abandon(job.id, job.attempts, nodes, spec.procs_per_node, found)
            self.launcher.drop_share_file(job.id, job.attempts)
            return
        live = LiveJob(job.id, job.queue, job.priority, job.created_at, request,
                       spec.grace_period_s, tuple(allocations), job.started_at or now,
                       job.stop_requested, nodes=spec.nodes)
        active = Active(live, job.name, spec, job.attempts, job.failures,
                        deadline=job.stop_deadline)
        if any(h is None for h in found):
            self.launcher.abandon(job.id, job.attempts, nodes, spec.procs_per_node, found)
            for allocation in allocations:
                self.scheduler.release(allocation)
            live.allocations = ()
            self.launcher.drop_share_file(job.id, job.attempts)
            self._requeue(active, "the server stopped before the job started", now)
            return
        active.handles = [h for h in found if h is not None]
        self.active[job.id] = active
        alive = [self.executor.adopt(h) for h in active.handles]
        event(self.db, job.id, Phase.RUNNING, "server restarted: process re-adopted" if any(alive)
                    else "server restarted: the process ended while the server was down", now)
        if job.phase == Phase.STARTING.value:
            with self.db.session() as s:
                s.execute(update(Job).where(Job.id == job.id).values(
                    phase=Phase.RUNNING.value, handle=handles_json(active.handles)))

    # -- steps -------------------------------------------------------------------------

    def _load_pending(self) -> None:
        with self.db.session() as s:
            rows = s.execute(
                select(Job.id, Job.queue, Job.priority, Job.created_at, Job.spec, Job.name)
                .where(Job.phase == Phase.PENDING.value, Job.id > self._max_seen)
                .order_by(Job.id)
            ).all()
        for job_id, queue, priority, created, raw, _name in rows:
            # _max_seen moves past a row only once it is handled: a failed write is redone
            if job_id in self.pending:
                self._max_seen = max(self._max_seen, job_id)
                continue
            try:
                spec = JobSpec.model_validate(raw)
                request = to_request(job_id, spec, queue, self.models)
            except (Invalid, RequestError) as exc:
                finish(self.db, job_id, Phase.FAILED, None, str(exc), time.time())
                self._max_seen = max(self._max_seen, job_id)
                continue
            except Exception as exc:  # e.g. a row stored before today's bounds: fail that job
                finish(self.db, job_id, Phase.FAILED, None,
                       f"cannot be scheduled: {_problem_text(exc)}", time.time())
                self._max_seen = max(self._max_seen, job_id)
                continue
            live = LiveJob(job_id, queue, priority, created, request, spec.grace_period_s,
                           nodes=spec.nodes)
            self.pending[job_id] = live
            self._fresh.append(live)
            self._max_seen = max(self._max_seen, job_id)

    def _handle_cancels(self, now: float) -> None:
        with self.db.session() as s:
            ids = s.scalars(
                select(Job.id).where(
                    Job.stop_requested == "cancel",
                    Job.phase.in_((Phase.PENDING.value, *ACTIVE)),
                )
            ).all()
        for job_id in ids:
            if job_id in self._unwritten:
                continue  # its pending write decides where it is; cancelled after that
            if job_id in self.pending:
                finish(self.db, job_id, Phase.CANCELLED, None, "cancelled before it started", now)
                del self.pending[job_id]
            elif job_id in self.active and self.active[job_id].live.stopping != "cancel":
                self._stop(self.active[job_id], "cancel", now)
            elif job_id not in self.active:
                finish(self.db, job_id, Phase.CANCELLED, None, "cancelled", now)

    def _stop(self, active: Active, why: str, now: float) -> None:
        active.live.stopping = why
        active.deadline = now + active.live.grace_s
        for handle in active.running():
            self.executor.terminate(handle)
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == active.live.id).values(
                stop_requested=why, stop_deadline=active.deadline))

    def _poll(self, now: float) -> None:
        asked = [(active, index, handle) for active in self.active.values()
                 for index, handle in enumerate(active.handles) if index not in active.ended]
        outcomes = self.executor.poll_many([handle for _, _, handle in asked]) if asked else []
        for (active, index, _), outcome in zip(asked, outcomes, strict=True):
            if outcome is None:
                continue
            active.ended[index] = outcome
            if active.failure is None and (outcome.lost or outcome.exit_code != 0):
                active.failure = (index, outcome)
        for job_id, active in list(self.active.items()):
            if not active.handles:
                continue
            left = active.running()
            if left:
                if active.failure is not None and active.live.stopping is None:
                    # One process of a multi-process job failed: stop the others.
                    self._stop(active, "gang", now)
                    event(self.db, job_id, Phase.RUNNING,
                                f"{active.outcome().reason}; stopping the other "
                                f"{len(left)} process(es)", now)
                if active.deadline is not None and now >= active.deadline and not active.killed:
                    for handle in left:
                        self.executor.kill(handle)
                    active.killed = True
                    event(self.db, job_id, Phase.RUNNING, "grace period over: SIGKILL sent", now)
                continue
            self._finish_ended(job_id, active, now)

    def _finish_ended(self, job_id: int, active: Active, now: float) -> None:
        """Every process of the job ended: write its row (final, or back to pending) first,
        then forget it and give its resources back. If the write fails the job stays tracked,
        holding its resources, and the next step writes it again (logged once per job)."""
        allocations = active.live.allocations
        try:
            self._ended(active, active.outcome(), now)
        except Exception:
            if job_id not in self._end_failed:
                self._end_failed.add(job_id)
                log.exception("job %s: could not record its end; retrying every step", job_id)
            return
        if job_id in self._end_failed:
            self._end_failed.discard(job_id)
            log.info("job %s: its end is recorded now", job_id)
        del self.active[job_id]
        self._dirty = True
        for allocation in allocations:
            self.scheduler.release(allocation)
        active.live.allocations = ()
        self.launcher.drop_share_file(job_id, active.attempt)

    def _ended(self, active: Active, outcome: Outcome, now: float) -> None:
        """Write how the attempt ended (nothing in memory changes before the write)."""
        code = outcome.exit_code
        status = outcome.reason or (
            "lost (the process disappeared)" if outcome.lost else f"exit code {code}")
        if active.live.stopping == "cancel":
            finish(self.db, active.live.id, Phase.CANCELLED, code, f"cancelled ({status})", now)
        elif active.live.stopping == "preempt":
            self._requeue(active, f"preempted ({status}); back in the queue", now)
        elif code == 0 and not outcome.lost:
            finish(self.db, active.live.id, Phase.SUCCEEDED, 0, "succeeded", now)
        elif outcome.unknown:
            # Never re-run on an unknown outcome, whatever the restart policy: the command
            # may have done its work (on-failure re-runs known failures; this may be none).
            finish(self.db, active.live.id, Phase.FAILED, None,
                   f"{status}; not run again: the command may have succeeded", now)
        else:
            failures = active.failures + 1
            spec = active.spec
            if spec.restart == "on-failure" and failures <= spec.max_retries:
                self._requeue(
                    active, f"failed ({status}); retry {failures} of {spec.max_retries}", now,
                    failures=failures,
                )
            else:
                finish(self.db, active.live.id, Phase.FAILED, code, f"failed ({status})", now,
                             failures=failures)

    def _requeue(self, active: Active, message: str, now: float,
                 failures: int | None = None) -> None:
        """Back to pending: the row first, then the in-memory job (holding nothing)."""
        live = active.live
        count = active.failures if failures is None else failures
        requeue(self.db, live.id, message, count, now)
        active.failures = count
        self._dirty = True
        live.stopping = None
        live.allocations = ()
        live.reason = ""
        self.pending[live.id] = live

    def _retry_writes(self) -> None:
        """Redo row writes that failed earlier (see ``_unwritten``); those failing again wait
        for the next step."""
        for job_id, write in list(self._unwritten.items()):
            try:
                write()
            except Exception:
                continue
            del self._unwritten[job_id]
            log.info("job %s: its row is written now", job_id)

    def _write_or_retry(self, job_id: int, write: Callable[[], None]) -> None:
        """Run ``write``; if it fails, log once and keep it for ``_retry_writes``."""
        try:
            write()
        except Exception:
            log.exception("job %s: could not write its row; retrying every step", job_id)
            self._unwritten[job_id] = write

    def quota_book(self) -> QuotaBook:
        with self.db.session() as s:
            teams = s.execute(
                select(Team.name, Team.quota_milli, Team.borrow_limit_milli)
                .where(Team.deleted_at.is_(None))
            ).all()
        book = QuotaBook([QueueQuota(n, q, b) for n, q, b in teams])
        for active in self.active.values():
            book.add(active.live.queue, active.live.amount)
        return book

    def _schedule(self, now: float) -> None:
        if not self.pending:
            self._fresh = []
            return
        started = time.perf_counter()
        running = [a.live for a in self.active.values()]
        if self._dirty:
            candidates = list(self.pending.values())
        else:
            candidates = [j for j in self._fresh if j.id in self.pending]
        self._dirty = False
        self._fresh = []
        outcome = run_cycle(self.scheduler, self.quota_book(), candidates, running,
                            budget_s=0.25)
        if outcome.evaluated < len(candidates):
            self._dirty = True  # the time budget ran out: finish on the next step
        self.last_cycle_seconds = time.perf_counter() - started
        for victim, preemptor in outcome.preemptions:
            try:  # the victim is told to stop first; a failed note must not block binding
                self._stop(self.active[victim.id], "preempt", now)
                event(self.db, victim.id, Phase.RUNNING,
                      f"preempted to make room for job {preemptor.id} "
                      f"(queue {preemptor.queue}, priority {preemptor.priority}); "
                      f"grace period {victim.grace_s:g} s", now)
            except Exception:
                log.exception("job %s: could not record its preemption", victim.id)
        self._bind(outcome.placed, now)
        changed = {i: r for i, r in outcome.reasons.items()
                   if i in self.pending and self.pending[i].reason != r}
        for job_id, error in outcome.errors.items():
            if job_id in changed:  # logged when the reason changes: once per job, not per cycle
                log.error("job %s: %s", job_id, error_reason(error), exc_info=error)
        if changed:
            with self.db.session() as s:
                for job_id, reason in changed.items():
                    s.execute(update(Job).where(Job.id == job_id).values(reason=reason))
            for job_id, reason in changed.items():
                self.pending[job_id].reason = reason

    def _bind(self, placed: list[LiveJob], now: float) -> None:
        if not placed:
            return
        bound: list[tuple[LiveJob, Active]] = []
        cancelled: list[LiveJob] = []
        try:
            with self.db.session() as s:
                for live in placed:
                    self._bind_row(s, live, now, bound, cancelled)
        except BaseException:
            # Nothing was written: every placed job waits again, holding nothing.
            for live in placed:
                for allocation in live.allocations:
                    self.scheduler.release(allocation)
                live.allocations = ()
            self._dirty = True
            raise
        for live in cancelled:  # cancelled meanwhile
            del self.pending[live.id]
            for allocation in live.allocations:
                self.scheduler.release(allocation)
            self._dirty = True
            live.allocations = ()
        for live, active in bound:
            del self.pending[live.id]
            live.started_at = now
            self.active[live.id] = active
        for live, _ in bound:
            self._launch(self.active[live.id], now)

    def _bind_row(self, s: Session, live: LiveJob, now: float,
                  bound: list[tuple[LiveJob, Active]], cancelled: list[LiveJob]) -> None:
        """Write one placed job's row as starting (in ``s``); memory changes come after the
        commit, by the caller."""
        alloc = live.allocations[0]
        ranks = ([{"node": self.state.names[a.node], "gpus": list(a.gpus)}
                  for a in live.allocations] if len(live.allocations) > 1 else None)
        result = s.execute(
            update(Job)
            .where(Job.id == live.id, Job.phase == Phase.PENDING.value,
                   Job.stop_requested.is_(None))
            .values(phase=Phase.STARTING.value, node=self.state.names[alloc.node],
                    gpus=list(alloc.gpus), gpu_milli=alloc.gpu_milli,
                    gpu_memory_mib=alloc.gpu_memory_mib, ranks=ranks,
                    attempts=Job.attempts + 1,
                    reason="", started_at=now)
            .returning(Job.attempts, Job.name, Job.spec, Job.failures)
        ).first()
        if result is None:
            cancelled.append(live)
            return
        attempt, name, raw, failures = result
        where = ", ".join(
            f"{self.state.names[a.node]} GPUs {list(a.gpus)}" if a.gpus
            else self.state.names[a.node] for a in live.allocations)
        s.add(JobEvent(job_id=live.id, at=now, phase=Phase.STARTING.value,
                       message=f"placed on {where}"))
        bound.append((live, Active(live, name, JobSpec.model_validate(raw), attempt, failures)))

    def _launch(self, active: Active, now: float) -> None:
        live = active.live
        try:
            handles, enforcement = self.launcher.start(
                live.id, active.name, active.attempt, live.queue, live.allocations, active.spec,
                owner_of(self.db, live.id))
        except Exception as exc:  # LaunchError, or anything odd: fail this job, not the loop
            if not isinstance(exc, LaunchError):
                log.exception("job %s: launch failed", live.id)
            # Nothing runs: its resources are free now; its row is written (or retried).
            del self.active[live.id]
            for allocation in live.allocations:
                self.scheduler.release(allocation)
            self._dirty = True
            live.allocations = ()
            message = f"could not start: {exc}"
            if isinstance(exc, NodeLostError):
                self._write_or_retry(live.id, lambda: self._requeue(
                    active, f"{message}; back in the queue", now))
            else:
                self._write_or_retry(live.id, lambda: finish(
                    self.db, live.id, Phase.FAILED, None, message, now))
            return
        active.handles = handles
        what = (f"pid {handles[0].pid}" if len(handles) == 1 else
                f"{len(handles)} processes on {len(live.allocations)} nodes")
        try:  # the processes run and are tracked: a failed note must not stop the loop
            with self.db.session() as s:
                s.execute(update(Job).where(Job.id == live.id).values(
                    phase=Phase.RUNNING.value, handle=handles_json(handles),
                    enforcement=enforcement, isolation=handles[0].isolation or None))
                s.add(JobEvent(job_id=live.id, at=time.time(), phase=Phase.RUNNING.value,
                               message=f"running ({what})"))
        except Exception:
            log.exception("job %s: could not record that it runs", live.id)


def _problem_text(exc: Exception) -> str:
    """One line for a job's reason: a validation error's fields and messages, else the
    exception's text."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}"
                         for e in exc.errors())
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
