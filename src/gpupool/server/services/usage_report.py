"""The usage report: allocated GPU-seconds from the durable usage records (one per job
attempt, ``services.usage_records``), clipped to a time window and summed by team, user,
job or queue.

Contract: an attempt counts ``gpu_milli / 1000 × (min(end, until) − max(start, since))``
seconds when positive; an attempt still open counts until ``now``. Users see the rows of
their own team's attempts; admins see all. Rows are ordered by GPU-seconds, largest first
(ties by key). Records survive a restart (they are rows written with the job's own
transitions), so a report neither loses nor double-counts an attempt across a crash.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import or_, select

from gpupool.schemas.usage import UsageBy, UsageRow
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, UsageRecord, User
from gpupool.server.services.errors import Invalid
from gpupool.server.services.identity import Principal, live_name


def usage(db: Database, principal: Principal, by: UsageBy, since: float, until: float,
          now: float) -> list[UsageRow]:
    """The report for ``[since, until)`` (UNIX seconds) as ``principal`` may see it."""
    if until <= since:
        raise Invalid(f"until: the window ends ({until:.0f}) before it starts ({since:.0f})")
    until = min(until, now)
    key_column = {UsageBy.TEAM: Team.name, UsageBy.USER: User.name,
                  UsageBy.JOB: Job.id, UsageBy.QUEUE: Job.queue}[by]
    query = (select(key_column, UsageRecord.job_id, UsageRecord.started_at,
                    UsageRecord.ended_at, UsageRecord.gpu_milli)
             .join(Job, Job.id == UsageRecord.job_id)
             .join(Team, Team.id == UsageRecord.team_id)
             .join(User, User.id == UsageRecord.user_id)
             .where(UsageRecord.started_at < until,
                    or_(UsageRecord.ended_at.is_(None), UsageRecord.ended_at > since)))
    if not principal.admin:
        query = query.where(UsageRecord.team_id == principal.team_id)
    with db.read() as s:
        rows = s.execute(query).all()
    seconds: dict[str, float] = defaultdict(float)
    jobs: dict[str, set[int]] = defaultdict(set)
    for key, job_id, started, ended, gpu_milli in rows:
        held = min(now if ended is None else ended, until) - max(started, since)
        if held <= 0:
            continue
        name = live_name(str(key))  # a deleted team or user: under the name it had
        seconds[name] += gpu_milli / 1000 * held
        jobs[name].add(job_id)
    return sorted((UsageRow(key=k, gpu_seconds=round(v, 3), jobs=len(jobs[k]))
                   for k, v in seconds.items()), key=lambda r: (-r.gpu_seconds, r.key))
