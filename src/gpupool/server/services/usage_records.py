"""Durable usage records: what each attempt of a job held (milli-GPUs of all its nodes and
ranks, CPU, memory) from when it started until it ended, and the decayed GPU-seconds per
team (and per user) that fair share orders queues by.

Contract:

- one record per (job, attempt) (a unique constraint): ``open_attempt`` writes it once and
  answers the same record when called again; ``close_attempt`` sets its end once;
- a record's ``ended_at`` is null only while its attempt may still hold resources;
  ``close_open`` ends the records that no active attempt backs (after a restart);
- writers take the caller's session (they commit with the caller's transaction); readers
  take the ``Database`` and read one snapshot;
- usage is weighted by age: a GPU held for one second at time t counts
  ``0.5 ** ((now - t) / half_life_s)``, integrated exactly over each record (see
  :func:`decayed_gpu_seconds`). Records that ended more than ``FORGET_HALF_LIVES``
  half-lives ago are not read: each weighs less than 2**-40 of what it did when new.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from gpupool.schemas.jobs import Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, UsageRecord, User

ACTIVE = (Phase.STARTING.value, Phase.RUNNING.value)
FORGET_HALF_LIVES = 40
"""Records that ended longer ago than this many half-lives are left out of decayed usage."""


def open_attempt(session: Session, job_id: int, attempt: int, team_id: int, user_id: int,
                 gpu_milli: int, cpu_milli: int, memory_mib: int, now: float) -> UsageRecord:
    """The record of attempt ``attempt`` of job ``job_id``: written (started at ``now``,
    open) in ``session`` when there is none, else the one there is, unchanged (a second call
    for the same attempt, e.g. a retried write, changes nothing). ``gpu_milli``,
    ``cpu_milli`` and ``memory_mib`` are the totals over all of the attempt's nodes and
    ranks. ValueError for a negative amount. (Two writers of one attempt at once: the
    unique constraint fails the later one's commit.)"""
    if min(gpu_milli, cpu_milli, memory_mib) < 0:
        raise ValueError(f"usage of job {job_id} attempt {attempt}: amounts cannot be "
                         f"negative (gpu_milli {gpu_milli}, cpu_milli {cpu_milli}, "
                         f"memory_mib {memory_mib})")
    found = _record(session, job_id, attempt)
    if found is not None:
        return found
    record = UsageRecord(job_id=job_id, attempt=attempt, team_id=team_id, user_id=user_id,
                         started_at=now, ended_at=None, gpu_milli=gpu_milli,
                         cpu_milli=cpu_milli, memory_mib=memory_mib)
    session.add(record)
    session.flush()
    return record


def close_attempt(session: Session, job_id: int, attempt: int, now: float) -> bool:
    """End the record of that attempt at ``now`` (never before it started) when it is still
    open. True when this call ended it; False when there is no such record or it had ended
    already (its end is kept)."""
    record = _record(session, job_id, attempt)
    if record is None or record.ended_at is not None:
        return False
    record.ended_at = max(now, record.started_at)
    session.flush()
    return True


def close_open(session: Session, now: float) -> int:
    """End every open record whose attempt is no longer active: its job is not starting or
    running, or has moved on to a later attempt. Such a record ends when its job ended if
    that is known (the job's last attempt, in a final phase), else at ``now``; never before
    it started nor after ``now``. For recovery: run it once the active jobs are known.
    Returns how many records it ended."""
    rows = session.execute(
        select(UsageRecord, Job.phase, Job.attempts, Job.ended_at)
        .join(Job, Job.id == UsageRecord.job_id)
        .where(UsageRecord.ended_at.is_(None))
        .where(or_(Job.phase.not_in(ACTIVE), Job.attempts != UsageRecord.attempt))
    ).all()
    for record, phase, attempts, job_ended in rows:
        end = now
        if job_ended is not None and attempts == record.attempt and Phase(phase).final:
            end = min(job_ended, now)
        record.ended_at = max(end, record.started_at)
    session.flush()
    return len(rows)


def decayed_gpu_seconds(started_at: float, ended_at: float | None, gpus: float, now: float,
                        half_life_s: float) -> float:
    """GPU-seconds of ``gpus`` GPUs held from ``started_at`` to ``ended_at`` (None: still
    held, i.e. until ``now``), each second at time t weighted ``0.5 ** ((now - t) /
    half_life_s)``: exactly ``g·h/ln2·(2^(-(now-e)/h) - 2^(-(now-s)/h))``. Times after
    ``now`` count as ``now``. ValueError unless ``half_life_s`` is finite and positive."""
    if not (math.isfinite(half_life_s) and half_life_s > 0):
        raise ValueError(f"half_life_s {half_life_s!r}: use a finite number of seconds, "
                         "more than 0")
    end = now if ended_at is None else min(ended_at, now)
    start = min(started_at, end)
    if gpus <= 0 or end <= start:
        return 0.0
    rate = math.log(2) / half_life_s
    # 2^(-a) - 2^(-b) = 2^(-a) * (1 - 2^(-(b - a))); expm1 keeps short recent spans exact.
    newest = math.exp(-(now - end) * rate)
    return gpus / rate * newest * -math.expm1(-(end - start) * rate)


def decayed_usage(db: Database, now: float, half_life_s: float,
                  ended_only: bool = False) -> dict[str, float]:
    """Decayed GPU-seconds (see :func:`decayed_gpu_seconds`) of each live team, by team
    name, over all its records (``ended_only``: only attempts that ended; the scheduler
    counts what is held now on its own); a team with none is absent."""
    totals: dict[str, float] = defaultdict(float)
    for team, _user, value in _decayed(db, now, half_life_s, False, ended_only):
        totals[team] += value
    return dict(totals)


def decayed_usage_by_user(db: Database, now: float, half_life_s: float,
                          ended_only: bool = False) -> dict[tuple[str, str], float]:
    """Decayed GPU-seconds per (team name, user name) of live teams: what each user's jobs
    used while in that team (a record counts for the team it was written for)."""
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for team, user, value in _decayed(db, now, half_life_s, True, ended_only):
        totals[(team, user)] += value
    return dict(totals)


def _decayed(db: Database, now: float, half_life_s: float, by_user: bool,
             ended_only: bool = False) -> Iterable[tuple[str, str, float]]:
    """(team, user or "", decayed GPU-seconds) per record worth reading."""
    if not (math.isfinite(half_life_s) and half_life_s > 0):
        raise ValueError(f"half_life_s {half_life_s!r}: use a finite number of seconds, "
                         "more than 0")
    cutoff = now - FORGET_HALF_LIVES * half_life_s
    query = (
        select(Team.name, User.name, UsageRecord.started_at, UsageRecord.ended_at,
               UsageRecord.gpu_milli)
        .join(Team, Team.id == UsageRecord.team_id)
        .join(User, User.id == UsageRecord.user_id)
        .where(Team.deleted_at.is_(None), UsageRecord.gpu_milli > 0)
        .where(or_(UsageRecord.ended_at.is_(None), UsageRecord.ended_at > cutoff))
    )
    if ended_only:
        query = query.where(UsageRecord.ended_at.is_not(None))
    with db.read() as s:
        rows = s.execute(query).all()
    for team, user, started, ended, milli in rows:
        value = decayed_gpu_seconds(started, ended, milli / 1000, now, half_life_s)
        yield team, user if by_user else "", value


def _record(session: Session, job_id: int, attempt: int) -> UsageRecord | None:
    return session.scalar(select(UsageRecord).where(
        UsageRecord.job_id == job_id, UsageRecord.attempt == attempt))

