"""The usage report: allocated GPU-seconds from the durable usage records (one per job
attempt, ``services.usage_records``), clipped to a time window and summed by team, user,
job or queue.

Contract: an attempt counts ``gpu_milli / 1000 × (min(end, until) − max(start, since))``
seconds when positive; an attempt still open counts until ``now``. Used GPU-seconds (what
NVML measured, ``services.gpu_usage``) count in proportion to the share of the attempt that
lies inside the window; a row's ``gpu_seconds_used`` is null when none of its attempts was
measured. Users see the rows of
their own team's attempts; admins see all. Rows are ordered by GPU-seconds, largest first
(ties by key). Records survive a restart (they are rows written with the job's own
transitions), so a report neither loses nor double-counts an attempt across a crash.
"""

from __future__ import annotations

import math
from collections import defaultdict

from sqlalchemy import or_, select

from gpupool.schemas.usage import UsageBy, UsageRow, UsageSeries
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, UsageRecord, User
from gpupool.server.services.errors import Invalid
from gpupool.server.services.identity import Principal, live_name

MAX_BUCKETS = 1000


Record = tuple[str, int, float, float | None, int, float | None]
"""(key, job id, start, end or None, milli-GPUs, used GPU-seconds or None) of one attempt."""


def _records(db: Database, principal: Principal, by: UsageBy, since: float,
             until: float) -> list[Record]:
    """The attempts overlapping the window that ``principal`` may see."""
    key_column = {UsageBy.TEAM: Team.name, UsageBy.USER: User.name,
                  UsageBy.JOB: Job.id, UsageBy.QUEUE: Job.queue}[by]
    query = (select(key_column, UsageRecord.job_id, UsageRecord.started_at,
                    UsageRecord.ended_at, UsageRecord.gpu_milli,
                    UsageRecord.gpu_seconds_used)
             .join(Job, Job.id == UsageRecord.job_id)
             .join(Team, Team.id == UsageRecord.team_id)
             .join(User, User.id == UsageRecord.user_id)
             .where(UsageRecord.started_at < until,
                    or_(UsageRecord.ended_at.is_(None), UsageRecord.ended_at > since)))
    if not principal.admin:
        query = query.where(UsageRecord.team_id == principal.team_id)
    with db.read() as s:
        rows = s.execute(query).all()
    return [(live_name(str(k)), int(j), float(a), b, int(g), u) for k, j, a, b, g, u in rows]


def usage(db: Database, principal: Principal, by: UsageBy, since: float, until: float,
          now: float) -> list[UsageRow]:
    """The report for ``[since, until)`` (UNIX seconds) as ``principal`` may see it."""
    if until <= since:
        raise Invalid(f"until: the window ends ({until:.0f}) before it starts ({since:.0f})")
    until = min(until, now)
    rows = _records(db, principal, by, since, until)
    seconds: dict[str, float] = defaultdict(float)
    used: dict[str, float] = {}
    jobs: dict[str, set[int]] = defaultdict(set)
    for key, job_id, started, ended, gpu_milli, used_s in rows:
        end = now if ended is None else ended
        held = min(end, until) - max(started, since)
        if held <= 0:
            continue
        seconds[key] += gpu_milli / 1000 * held
        jobs[key].add(job_id)
        if used_s is not None:  # measured: its part inside the window, pro rata
            used[key] = used.get(key, 0.0) + used_s * held / max(end - started, held)
    return sorted((UsageRow(key=k, gpu_seconds=round(v, 3), jobs=len(jobs[k]),
                            gpu_seconds_used=round(used[k], 3) if k in used else None)
                   for k, v in seconds.items()), key=lambda r: (-r.gpu_seconds, r.key))


def usage_series(db: Database, principal: Principal, by: UsageBy, since: float,
                 until: float, step_s: float, now: float) -> UsageSeries:
    """The same records as :func:`usage`, spread over buckets of ``step_s`` seconds from
    ``since`` (at most ``MAX_BUCKETS``; the last may end after ``until``)."""
    if until <= since:
        raise Invalid(f"until: the window ends ({until:.0f}) before it starts ({since:.0f})")
    buckets = math.ceil((until - since) / step_s)
    if buckets > MAX_BUCKETS:
        raise Invalid(f"step_s: {buckets} buckets of {step_s:g} s in this window; at most "
                      f"{MAX_BUCKETS} (use a longer step or a shorter window)")
    values: dict[str, list[float]] = defaultdict(lambda: [0.0] * buckets)
    for key, _, started, ended, gpu_milli, _used in _records(db, principal, by, since,
                                                              until):
        begin = max(started, since)
        end = min(now if ended is None else ended, until)
        first = int((begin - since) // step_s)
        for i in range(max(first, 0), min(buckets, math.ceil((end - since) / step_s))):
            low, high = since + i * step_s, since + (i + 1) * step_s
            held = min(end, high) - max(begin, low)
            if held > 0:
                values[key][i] += gpu_milli / 1000 * held
    return UsageSeries(start=since, step_s=step_s, buckets=buckets,
                       values={k: [round(v, 3) for v in vs] for k, vs in sorted(values.items())})
