"""What the books (the database) say now, for a scrape: teams' allocation and quota (as
``/api/v1/queues`` computes them), non-final workloads by phase, queue and kind, and idle
notebooks by team. Every function is one short read transaction, admin-wide (the caller of
``/metrics`` is an admin), and returns plain tuples."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select

from gpupool.schemas.jobs import Kind, Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team
from gpupool.server.services.cluster import list_queues
from gpupool.server.services.identity import Principal

LIVE_PHASES = tuple(p.value for p in Phase if not p.final)
"""Pending, starting, running, suspended: the phases ``gpupool_jobs`` counts."""

_BOOKS = Principal(user_id=0, user="(metrics)", team_id=0, team="", admin=True)
"""Who reads the queues for a scrape: every team's, as an admin sees them."""


def team_gpus(db: Database) -> list[tuple[str, float, float]]:
    """``(team, allocated GPUs, quota GPUs)`` of every team not deleted: ``used_gpus`` and
    ``quota_gpus`` of ``/api/v1/queues``."""
    return [(q.team, q.used_gpus, q.quota_gpus) for q in list_queues(db, _BOOKS)]


def workload_counts(db: Database) -> list[tuple[str, str, str, int]]:
    """``(phase, queue, kind, count)`` of the workloads in a non-final phase."""
    with db.read() as s:
        rows = s.execute(
            select(Job.phase, Job.queue, Job.kind, func.count())
            .where(Job.phase.in_(LIVE_PHASES))
            .group_by(Job.phase, Job.queue, Job.kind)
        ).all()
    return [(str(phase), str(queue), str(kind or Kind.JOB.value), int(n))
            for phase, queue, kind, n in rows]


def idle_notebooks(db: Database) -> dict[str, int]:
    """Running notebooks whose endpoint has ``idle_since`` set (the notebook watch writes
    it once one has been idle a minute), by team; every team not deleted is present."""
    with db.read() as s:
        teams = s.scalars(select(Team.name).where(Team.deleted_at.is_(None))).all()
        rows = s.execute(
            select(Team.name, Job.endpoint).join(Team, Team.id == Job.team_id)
            .where(Job.phase == Phase.RUNNING.value, Job.kind == Kind.NOTEBOOK.value)
        ).all()
    idle: dict[str, int] = defaultdict(int, {name: 0 for name in teams})
    for team, endpoint in rows:
        if isinstance(endpoint, dict) and endpoint.get("idle_since") is not None:
            idle[team] += 1
    return dict(idle)
