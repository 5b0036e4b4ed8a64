"""Cron schedules: their use cases (put, list, delete) and ``fire``, the engine's pass that
turns due firings into runs under the schedule's concurrency policy and catch-up limit.

Times come from the engine's cron clock (``GPUPOOL_PIPELINE_CLOCK_FILE`` lets tests set it;
see engine.py). A new schedule fires first at its next firing after its creation. Firing is
idempotent: a run already made for (schedule, firing time) is not made again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import delete, func, select, update

from gpupool.schemas.pipelines import PipelineSpec, RunState, ScheduleSpec, ScheduleView
from gpupool.server.db.database import Database
from gpupool.server.db.pipeline_tables import PipelineRun, PipelineSchedule
from gpupool.server.db.tables import Team, User
from gpupool.server.pipelines import cron, runs
from gpupool.server.services.errors import Invalid, NotFound
from gpupool.server.services.identity import Principal

log = logging.getLogger("gpupool.pipelines")
ACTIVE = (RunState.QUEUED.value, RunState.RUNNING.value)


def put(db: Database, principal: Principal, body: ScheduleSpec, now: float,
        missing: runs.Missing) -> ScheduleView:
    """Create or replace the schedule named like its definition (checked first)."""
    try:
        cron.check(body.cron)
    except cron.CronInvalid as exc:
        raise Invalid(str(exc)) from None
    params = runs.check(body.definition, body.params, principal.team_id, missing)
    name = body.definition.name
    with db.session() as s:
        row = s.scalars(select(PipelineSchedule).where(
            PipelineSchedule.team_id == principal.team_id, PipelineSchedule.name == name)).first()
        if row is None:
            row = PipelineSchedule(name=name, team_id=principal.team_id, skipped=0,
                                   last_fired_for=now, created_at=now)
            s.add(row)
        row.user_id = principal.user_id
        row.spec = runs.dump(body.definition)
        row.params = params
        row.cron = body.cron
        row.concurrency = body.concurrency
        row.catchup_limit = body.catchup_limit
        row.priority = body.priority
        row.enabled = body.enabled
    return _view(row, principal.team)


def _view(row: PipelineSchedule, team: str) -> ScheduleView:
    return ScheduleView(
        name=row.name, team=team, cron=row.cron, concurrency=row.concurrency,
        catchup_limit=row.catchup_limit, enabled=row.enabled, params=dict(row.params),
        last_fired_for=datetime.fromtimestamp(row.last_fired_for, UTC),
        next_fire_at=datetime.fromtimestamp(cron.next_after(row.cron, row.last_fired_for), UTC),
        skipped=row.skipped,
    )


def list_schedules(db: Database, principal: Principal) -> list[ScheduleView]:
    query = select(PipelineSchedule, Team.name).join(Team, Team.id == PipelineSchedule.team_id)
    if not principal.admin:
        query = query.where(PipelineSchedule.team_id == principal.team_id)
    with db.session() as s:
        return [_view(r, t) for r, t in s.execute(query.order_by(PipelineSchedule.name)).all()]


def remove(db: Database, principal: Principal, name: str) -> None:
    with db.session() as s:
        gone = s.execute(delete(PipelineSchedule).where(
            PipelineSchedule.team_id == principal.team_id, PipelineSchedule.name == name))
        if not getattr(gone, "rowcount", 1):
            raise NotFound(f"no schedule named {name!r} in team {principal.team}")


def fire(db: Database, now: float, missing: runs.Missing, wake: Callable[[], None]) -> int:
    """Make the runs due at ``now`` for every enabled schedule; how many were made."""
    with db.session() as s:
        rows = s.execute(select(PipelineSchedule, User.name, User.admin, Team.name)
                         .join(User, User.id == PipelineSchedule.user_id)
                         .join(Team, Team.id == PipelineSchedule.team_id)
                         .where(PipelineSchedule.enabled.is_(True))).all()
    made = 0
    for row, user, admin, team in rows:
        due = cron.due(row.cron, row.last_fired_for, now, row.catchup_limit)
        if not due.run:
            continue
        who = Principal(row.user_id, user, row.team_id, team, bool(admin))
        made += _fire_one(db, row, who, due, missing)
    if made:
        wake()
    return made


def _fire_one(db: Database, row: PipelineSchedule, who: Principal, due: cron.Due,
              missing: runs.Missing) -> int:
    with db.session() as s:
        active_ids = list(s.scalars(select(PipelineRun.id).where(
            PipelineRun.schedule_id == row.id, PipelineRun.state.in_(ACTIVE))).all())
    decision = cron.decide(due.run, len(active_ids), row.concurrency)
    if decision.cancel_active:
        with db.session() as s:
            s.execute(update(PipelineRun).where(PipelineRun.id.in_(active_ids)).values(
                cancel_requested=True, message="replaced by a newer firing of its schedule"))
    made = 0
    spec = PipelineSpec.model_validate(row.spec)
    for when in decision.start:
        with db.session() as s:
            exists = s.scalar(select(func.count()).select_from(PipelineRun).where(
                PipelineRun.schedule_id == row.id, PipelineRun.scheduled_for == when))
        if exists:
            continue
        new = runs.NewRun(spec, dict(row.params), row.priority, "schedule",
                          schedule_id=row.id, scheduled_for=when)
        try:
            runs.insert_run(db, who, new, missing)
            made += 1
        except Invalid as exc:  # e.g. a secret deleted since: skip this firing, say why
            log.warning("schedule %s: firing skipped: %s", row.name, exc.message)
            decision.skip.append(when)
    with db.session() as s:
        s.execute(update(PipelineSchedule).where(PipelineSchedule.id == row.id).values(
            last_fired_for=due.run[-1],
            skipped=PipelineSchedule.skipped + due.missed + len(decision.skip)))
    if due.missed or decision.skip:
        log.info("schedule %s: %d firing(s) skipped (%s)", row.name,
                 due.missed + len(decision.skip), decision.reason or "catch-up limit")
    return made

