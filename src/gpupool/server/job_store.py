"""The loop's job store: the one place where the scheduling loop (controller, placing,
outcomes, recovery) reads and writes the database.

What it owns: every row the loop writes — a job's phase, placement, handles, stop request,
pending reason and end; the job's events; its attempts' usage records; and the nodes table.
No other module of the loop writes a row (``tests/test_job_store.py`` checks both by reading
the source and by watching a whole job life). The API's own writes (submitting a job,
asking for a cancel, editing teams) stay in ``server/services``: they are requests, which
the loop acts on through this store.

Contract of every write:

- one transaction per call (``bind`` writes all its jobs in one), committed or raised:
  the caller changes memory only after the call returned, so a failed write leaves the
  loop as it was and can be redone (``server/write_retry.py``, ``server/outcomes.py``);
- a change of phase, and every note, is written with the event that records it;
- an attempt's usage record opens when it is bound (``starting``) and closes when it ends
  (``finish``, ``requeue``); redoing either changes nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from gpupool.executors.base import Handle
from gpupool.executors.inventory import LocalInventory
from gpupool.schemas.jobs import JobSpec, Kind, Phase
from gpupool.server.active import Active, handles_json
from gpupool.server.cycle import LiveJob
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, JobEvent, Node, Team, User
from gpupool.server.launcher import Owner
from gpupool.server.services.usage_records import close_attempt, close_open, open_attempt

ACTIVE = (Phase.STARTING.value, Phase.RUNNING.value)
"""The phases of a job that holds resources."""


@dataclass(frozen=True)
class PendingRow:
    """A pending job as the loop loads it (``spec``: the stored JSON, not yet validated)."""

    id: int
    queue: str
    priority: int
    created_at: float
    spec: dict[str, Any]
    user: str
    notebook_lifetime_s: float | None = None
    """Its team's ``notebook_max_lifetime_s`` (None: the server's applies)."""


@dataclass(frozen=True)
class NotebookRow:
    """A running notebook as the notebook watch reads it (``spec``: the stored JSON), with
    its team's idle policy (None: the server's applies)."""

    id: int
    attempt: int
    endpoint: dict[str, Any]
    spec: dict[str, Any]
    team_idle_timeout_s: float | None = None
    team_max_idle_timeout_s: float | None = None


_PENDING_COLUMNS = (Job.id, Job.queue, Job.priority, Job.created_at, Job.spec, User.name,
                    Team.notebook_max_lifetime_s)


class JobStore:
    """The loop's reads and writes of job rows, their events and usage, and the nodes table
    (see the module for what it owns and the contract of each write)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reads -------------------------------------------------------------------------

    def new_pending(self, after: int) -> list[PendingRow]:
        """The pending jobs with an id above ``after``, in id order."""
        with self.db.session() as s:
            rows = s.execute(
                select(*_PENDING_COLUMNS)
                .join(User, User.id == Job.user_id, isouter=True)
                .join(Team, Team.id == Job.team_id, isouter=True)
                .where(Job.phase == Phase.PENDING.value, Job.id > after)
                .order_by(Job.id)
            ).all()
        return [PendingRow(i, q, p, c, spec, user or "", life)
                for i, q, p, c, spec, user, life in rows]

    def cancel_requests(self) -> list[int]:
        """The jobs asked to be cancelled that are pending, starting, running or suspended."""
        with self.db.session() as s:
            return list(s.scalars(select(Job.id).where(
                Job.stop_requested == "cancel",
                Job.phase.in_((Phase.PENDING.value, *ACTIVE, Phase.SUSPENDED.value)))).all())

    def suspend_requests(self) -> list[tuple[int, str]]:
        """(job, phase) of the notebooks asked to be suspended (by their owner or for being
        idle) that have not ended."""
        with self.db.session() as s:
            return [(i, p) for i, p in s.execute(select(Job.id, Job.phase).where(
                Job.stop_requested == "suspend",
                Job.phase.in_((Phase.PENDING.value, *ACTIVE)))).all()]

    def resume_requests(self) -> list[PendingRow]:
        """The suspended notebooks asked to resume, as the loop loads pending jobs."""
        with self.db.session() as s:
            rows = s.execute(
                select(*_PENDING_COLUMNS)
                .join(User, User.id == Job.user_id, isouter=True)
                .join(Team, Team.id == Job.team_id, isouter=True)
                .where(Job.phase == Phase.SUSPENDED.value, Job.stop_requested == "resume")
                .order_by(Job.id)
            ).all()
        return [PendingRow(i, q, p, c, spec, user or "", life)
                for i, q, p, c, spec, user, life in rows]

    def held(self) -> list[Job]:
        """The rows of the jobs that hold resources (starting or running), detached."""
        with self.db.session() as s:
            return list(s.scalars(select(Job).where(Job.phase.in_(ACTIVE))).all())

    def running_notebooks(self) -> list[NotebookRow]:
        """The running notebooks that have an endpoint and no stop request, with their
        team's idle policy."""
        with self.db.session() as s:
            return [NotebookRow(i, a, e, spec, idle, max_idle)
                    for i, a, e, spec, idle, max_idle in s.execute(
                select(Job.id, Job.attempts, Job.endpoint, Job.spec,
                       Team.notebook_idle_timeout_s, Team.notebook_max_idle_timeout_s)
                .join(Team, Team.id == Job.team_id, isouter=True)
                .where(Job.kind == Kind.NOTEBOOK.value, Job.phase == Phase.RUNNING.value,
                       Job.stop_requested.is_(None), Job.endpoint.is_not(None))).all()]

    def notebook_seen(self, job_id: int, endpoint: dict[str, Any]) -> None:
        """What the notebook watch learnt (its URL once ready, idle since when), on the
        endpoint of a notebook still running (no event: not a change of phase)."""
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job_id, Job.phase == Phase.RUNNING.value)
                      .values(endpoint=endpoint))

    def owner(self, job_id: int) -> Owner:
        """Whose job it is: its user's name and Unix account (see :class:`Owner`)."""
        with self.db.session() as s:
            row = s.execute(select(User.name, User.unix_user, User.unix_created)
                            .join(Job, Job.user_id == User.id).where(Job.id == job_id)).first()
        if row is None:
            return Owner()
        return Owner(row[0], row[1], bool(row[2]))

    # -- a job's start -----------------------------------------------------------------

    def bind(self, placed: Sequence[LiveJob], names: Sequence[str],
             now: float) -> list[tuple[LiveJob, Active | None]]:
        """Write every placed job's row as starting, in one transaction (``names``: the
        snapshot's node names). Each job comes back with the :class:`Active` the loop will
        track, or None when its row was no longer pending or a stop was asked (nothing
        written for it: it was cancelled meanwhile). Nothing in memory changes."""
        with self.db.session() as s:
            return [(job, _write_starting(s, job, names, now)) for job in placed]

    def running(self, job_id: int, handles: list[Handle], enforcement: str | None,
                message: str, endpoint: dict[str, Any] | None = None) -> None:
        """The job's processes were launched: its row says running, with their handles and
        how its GPU share is enforced, and where a notebook listens (``endpoint``); the
        event is stamped with the time of the write: launches end in the launch worker,
        between steps."""
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(
                phase=Phase.RUNNING.value, handle=handles_json(handles),
                enforcement=enforcement, isolation=handles[0].isolation or None,
                endpoint=endpoint))
            s.add(JobEvent(job_id=job_id, at=time.time(), phase=Phase.RUNNING.value,
                           message=message))

    # -- while it runs -----------------------------------------------------------------

    def stop_asked(self, job_id: int, why: str, deadline: float, now: float,
                   note: str | None = None) -> None:
        """The loop told the job's processes to stop (``why``: cancel, preempt, time-limit,
        gang) and kills them at ``deadline``; ``note``, when given, is written as an event."""
        with self.db.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(
                stop_requested=why, stop_deadline=deadline))
            if note is not None:
                s.add(JobEvent(job_id=job_id, at=now, phase=Phase.RUNNING.value, message=note))

    def event(self, job_id: int, phase: Phase, message: str, now: float) -> None:
        """A note in the job's history (its phase unchanged)."""
        with self.db.session() as s:
            s.add(JobEvent(job_id=job_id, at=now, phase=phase.value, message=message))

    def reasons(self, changed: dict[int, str]) -> None:
        """Why each of these pending jobs waits (no event: a reason is not a change)."""
        with self.db.session() as s:
            for job_id, reason in changed.items():
                s.execute(update(Job).where(Job.id == job_id).values(reason=reason))

    # -- a job's end -------------------------------------------------------------------

    def finish(self, job_id: int, phase: Phase, code: int | None, message: str, now: float,
               failures: int | None = None) -> None:
        """The job ended (``phase`` is final) with ``code`` (None: no exit code); the usage
        record of its latest attempt ends too."""
        values: dict[str, Any] = dict(phase=phase.value, exit_code=code, ended_at=now,
                                      reason=message, stop_deadline=None)
        if failures is not None:
            values["failures"] = failures
        with self.db.session() as s:
            _close_usage(s, job_id, now)
            s.execute(update(Job).where(Job.id == job_id).values(**values))
            s.add(JobEvent(job_id=job_id, at=now, phase=phase.value, message=message))

    def requeue(self, job_id: int, message: str, failures: int, now: float) -> None:
        """Back to pending, holding nothing: placement, handles and stop request cleared, and
        the last attempt's start, end and exit code too (its events and usage record keep
        them): the job shows as it waits now, not as it ran before."""
        with self.db.session() as s:
            _close_usage(s, job_id, now)
            s.execute(update(Job).where(Job.id == job_id).values(
                phase=Phase.PENDING.value, node=None, gpus=None, ranks=None, handle=None,
                enforcement=None, stop_requested=None, stop_deadline=None, reason=message,
                failures=failures, started_at=None, ended_at=None, exit_code=None))
            s.add(JobEvent(job_id=job_id, at=now, phase=Phase.PENDING.value, message=message))

    def suspend(self, job_id: int, message: str, now: float) -> None:
        """A notebook put aside: phase suspended, holding nothing (as :meth:`requeue`, and
        its endpoint cleared), its attempt's usage closed; its files stay."""
        with self.db.session() as s:
            _close_usage(s, job_id, now)
            s.execute(update(Job).where(Job.id == job_id).values(
                phase=Phase.SUSPENDED.value, node=None, gpus=None, ranks=None, handle=None,
                enforcement=None, stop_requested=None, stop_deadline=None, reason=message,
                endpoint=None, started_at=None, ended_at=None, exit_code=None))
            s.add(JobEvent(job_id=job_id, at=now, phase=Phase.SUSPENDED.value,
                           message=message))

    def resume(self, job_id: int, now: float) -> bool:
        """A suspended notebook asked to resume goes back to pending (False, nothing
        written: it is no longer suspended with that request)."""
        with self.db.session() as s:
            result = s.execute(update(Job).where(
                Job.id == job_id, Job.phase == Phase.SUSPENDED.value,
                Job.stop_requested == "resume").values(
                phase=Phase.PENDING.value, stop_requested=None,
                reason="waiting for the scheduler"))
            done = getattr(result, "rowcount", 0)
            if done:
                s.add(JobEvent(job_id=job_id, at=now, phase=Phase.PENDING.value,
                               message="resumed: back in the queue"))
        return bool(done)

    # -- after a restart ---------------------------------------------------------------

    def adopted(self, job_id: int, handles: list[Handle], starting: bool, message: str,
                now: float) -> None:
        """Recovery re-adopted the job's processes: a note, and a row still marked
        ``starting`` marked running with their handles."""
        with self.db.session() as s:
            s.add(JobEvent(job_id=job_id, at=now, phase=Phase.RUNNING.value, message=message))
            if starting:
                s.execute(update(Job).where(Job.id == job_id).values(
                    phase=Phase.RUNNING.value, handle=handles_json(handles)))

    def close_stale_usage(self, now: float) -> int:
        """End the usage records of attempts that ended while the server was down (run once
        the active jobs are recovered); returns how many."""
        with self.db.session() as s:
            return close_open(s, now)

    def nodes(self, inventory: LocalInventory, mechanisms: Callable[[str], list[str]],
              now: float) -> None:
        """Make the nodes table say what the pool has now (departed nodes removed);
        ``mechanisms(node)``: how GPU shares can be enforced there."""
        names = {spec.name for spec in inventory.nodes}
        with self.db.session() as s:
            for spec in inventory.nodes:
                node = s.get(Node, spec.name) or Node(name=spec.name)
                node.cpu_milli = spec.cpu_milli
                node.memory_mib = spec.memory_mib
                node.gpus = [{"model": g.model, "memory_mib": g.memory_mib} for g in spec.gpus]
                node.labels = dict(spec.labels)
                node.source = inventory.source
                node.mechanisms = mechanisms(spec.name)
                node.updated_at = now
                s.merge(node)
            s.execute(delete(Node).where(Node.name.not_in(names)))


def _write_starting(s: Session, live: LiveJob, names: Sequence[str],
                    now: float) -> Active | None:
    """Write placed ``live``'s row as starting in ``s``, and open its attempt's usage
    record; None (nothing written) when the row is no longer pending or a stop was asked."""
    alloc = live.allocations[0]
    ranks = ([{"node": names[a.node], "gpus": list(a.gpus)}
              for a in live.allocations] if len(live.allocations) > 1 else None)
    result = s.execute(
        update(Job)
        .where(Job.id == live.id, Job.phase == Phase.PENDING.value,
               Job.stop_requested.is_(None))
        .values(phase=Phase.STARTING.value, node=names[alloc.node],
                gpus=list(alloc.gpus), gpu_milli=alloc.gpu_milli,
                gpu_memory_mib=alloc.gpu_memory_mib, ranks=ranks,
                attempts=Job.attempts + 1,
                reason="", started_at=now)
        .returning(Job.attempts, Job.name, Job.spec, Job.failures, Job.team_id, Job.user_id)
    ).first()
    if result is None:
        return None
    attempt, name, raw, failures, team_id, user_id = result
    open_attempt(s, live.id, attempt, team_id, user_id, live.amount,
                 live.request.cpu_milli * live.nodes, live.request.memory_mib * live.nodes, now)
    where = ", ".join(
        f"{names[a.node]} GPUs {list(a.gpus)}" if a.gpus
        else names[a.node] for a in live.allocations)
    s.add(JobEvent(job_id=live.id, at=now, phase=Phase.STARTING.value,
                   message=f"placed on {where}"))
    return Active(live, name, JobSpec.model_validate(raw), attempt, failures)


def _close_usage(s: Session, job_id: int, now: float) -> None:
    """End the usage record of the job's latest attempt (none for a job that never ran)."""
    attempt = s.scalar(select(Job.attempts).where(Job.id == job_id))
    if attempt:
        close_attempt(s, job_id, attempt, now)
