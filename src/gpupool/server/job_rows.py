"""The controller's writes to a job's row: each one a phase change (or a note) together with
the event that records it, in one transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gpupool.schemas.jobs import Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, JobEvent, User
from gpupool.server.launcher import Owner
from gpupool.server.services.usage_records import close_attempt


def finish(
    db: Database, job_id: int, phase: Phase, code: int | None, message: str, now: float,
    failures: int | None = None,
) -> None:
    """The job ended (``phase`` is final) with ``code`` (None: no exit code)."""
    values: dict[str, Any] = dict(phase=phase.value, exit_code=code, ended_at=now,
                                  reason=message, stop_deadline=None)
    if failures is not None:
        values["failures"] = failures
    with db.session() as s:
        _close_usage(s, job_id, now)
        s.execute(update(Job).where(Job.id == job_id).values(**values))
        s.add(JobEvent(job_id=job_id, at=now, phase=phase.value, message=message))


def requeue(db: Database, job_id: int, message: str, failures: int, now: float) -> None:
    """Back to pending, holding nothing: placement, handles and stop request cleared, and the
    last attempt's start, end and exit code too (its events keep them): the job shows as it
    waits now, not as it ran before."""
    with db.session() as s:
        _close_usage(s, job_id, now)
        s.execute(update(Job).where(Job.id == job_id).values(
            phase=Phase.PENDING.value, node=None, gpus=None, ranks=None, handle=None,
            enforcement=None, stop_requested=None, stop_deadline=None, reason=message,
            failures=failures, started_at=None, ended_at=None, exit_code=None))
        s.add(JobEvent(job_id=job_id, at=now, phase=Phase.PENDING.value, message=message))


def _close_usage(s: Session, job_id: int, now: float) -> None:
    """End the usage record of the job's latest attempt (none for a job that never ran)."""
    attempt = s.scalar(select(Job.attempts).where(Job.id == job_id))
    if attempt:
        close_attempt(s, job_id, attempt, now)


def event(db: Database, job_id: int, phase: Phase, message: str, now: float) -> None:
    """A note in the job's history (its phase unchanged)."""
    with db.session() as s:
        s.add(JobEvent(job_id=job_id, at=now, phase=phase.value, message=message))


def owner_of(db: Database, job_id: int) -> Owner:
    """Whose job it is: its user's name and Unix account (see :class:`Owner`)."""
    with db.session() as s:
        row = s.execute(select(User.name, User.unix_user, User.unix_created)
                        .join(Job, Job.user_id == User.id).where(Job.id == job_id)).first()
    if row is None:
        return Owner()
    return Owner(row[0], row[1], bool(row[2]))
