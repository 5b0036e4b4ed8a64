"""Use cases of pipeline runs: create (validated first; nothing is written for an invalid
definition), list, get, change priority while queued, cancel, and re-run a failed run from
its failed steps. A user sees only their team's runs unless admin. Only the engine moves
runs and steps between states; these functions insert rows and set requests, then wake it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from gpupool.schemas.pipelines import PipelineSpec, RunState, RunView, StepSpec, StepState
from gpupool.server.db.database import Database
from gpupool.server.db.pipeline_tables import PipelineRun, PipelineSchedule, PipelineStep
from gpupool.server.db.tables import Team, User
from gpupool.server.pipelines import views
from gpupool.server.pipelines.dag import PipelineInvalid, references, template_fields, validate
from gpupool.server.services import paging
from gpupool.server.services.errors import Conflict, Invalid, NotFound
from gpupool.server.services.identity import Principal

Wake = Callable[[], None]
Missing = Callable[[int, Iterable[str]], list[str]]


def dump(spec: PipelineSpec) -> dict[str, Any]:
    """The definition as stored (``with`` keeps its YAML name)."""
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def secret_names(spec: PipelineSpec) -> dict[str, str]:
    """Every secret a definition uses (nested ones too): name → where it is used."""
    found: dict[str, str] = {}
    for step in spec.steps:
        for ref in step.secrets:
            found.setdefault(ref.name, f"steps.{step.name}.secrets")
        for loc, text in template_fields(step):
            for expr in references(text):
                if expr.startswith("secrets."):
                    found.setdefault(expr.split(".", 1)[1], f"steps.{step.name}.{loc}")
        if step.pipeline is not None:
            for name, where in secret_names(step.pipeline).items():
                found.setdefault(name, f"steps.{step.name}.pipeline.{where}")
    return found


def check(spec: PipelineSpec, params: Mapping[str, Any], team_id: int,
          missing: Missing) -> dict[str, Any]:
    """The resolved params of a valid definition whose secrets exist; Invalid otherwise."""
    try:
        plan = validate(spec, params)
    except PipelineInvalid as exc:
        raise Invalid("invalid pipeline: " + "; ".join(exc.problems)) from None
    used = secret_names(spec)
    absent = missing(team_id, used)
    if absent:
        raise Invalid("invalid pipeline: " + "; ".join(
            f"{used[n]}: no secret named {n!r} in your team (gpupool pipeline secret set)"
            for n in absent))
    return plan.params


@dataclass
class NewRun:
    spec: PipelineSpec
    params: dict[str, Any]
    priority: int = 0
    trigger: str = "api"
    schedule_id: int | None = None
    scheduled_for: float | None = None
    parent_run_id: int | None = None
    parent_step: str | None = None
    retry_of: int | None = None
    reuse: dict[str, PipelineStep] = field(default_factory=dict)


def insert_run(db: Database, principal: Principal, new: NewRun, missing: Missing) -> int:
    """Validate, then insert the run and all its steps in one transaction; its id."""
    params = check(new.spec, new.params, principal.team_id, missing)
    deps = validate(new.spec, params).depends_on
    now = time.time()
    with db.session() as s:
        run = PipelineRun(
            name=new.spec.name, team_id=principal.team_id, user_id=principal.user_id,
            spec=dump(new.spec), params=params, state=RunState.QUEUED.value,
            priority=new.priority, trigger=new.trigger, message="queued",
            schedule_id=new.schedule_id, scheduled_for=new.scheduled_for,
            parent_run_id=new.parent_run_id, parent_step=new.parent_step,
            retry_of=new.retry_of, cancel_requested=False, created_at=now)
        s.add(run)
        s.flush()
        for step in new.spec.steps:
            s.add(_step_row(run.id, step, deps[step.name], new.reuse.get(step.name)))
        return run.id


def _step_row(run_id: int, step: StepSpec, deps: list[str], old: PipelineStep | None
              ) -> PipelineStep:
    row = PipelineStep(run_id=run_id, name=step.name, kind=step.kind or "job",
                       state=StepState.WAITING.value, depends_on=deps, attempt=0,
                       outputs={}, files={}, message="")
    if old is not None:
        row.state = StepState.REUSED.value
        row.outputs = dict(old.outputs or {})
        row.files = dict(old.files or {})
        row.reused_from = old.reused_from or old.run_id
        row.message = f"outputs reused from run {row.reused_from}"
    return row


def _visible(principal: Principal):  # type: ignore[no-untyped-def]
    query = (select(PipelineRun, Team.name, User.name)
             .join(Team, Team.id == PipelineRun.team_id)
             .join(User, User.id == PipelineRun.user_id))
    if not principal.admin:
        query = query.where(PipelineRun.team_id == principal.team_id)
    return query


def list_runs(db: Database, principal: Principal, state: RunState | None = None,
              name: str | None = None, limit: int = 100,
              cursor: str | None = None) -> paging.Page[RunView]:
    """One page, newest first (after ``cursor``'s run when given), without steps
    (``get_run`` has them)."""
    query = _visible(principal).order_by(PipelineRun.id.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(PipelineRun.id < paging.decode(cursor, "pipeline-runs", 1)[0])
    if state is not None:
        query = query.where(PipelineRun.state == state.value)
    if name is not None:
        query = query.where(PipelineRun.name == name)
    with db.session() as s:
        rows = s.execute(query).all()
        names = _schedule_names(s, {r[0].schedule_id for r in rows if r[0].schedule_id})
    return paging.page_of(rows, limit, "pipeline-runs", lambda r: (r[0].id,),
                          lambda r: views.run_view(r[0], r[1], r[2], [], names))


def _schedule_names(s: Any, ids: set[int | None]) -> dict[int, str]:
    if not ids:
        return {}
    rows = s.execute(select(PipelineSchedule.id, PipelineSchedule.name)
                     .where(PipelineSchedule.id.in_(ids))).all()
    return {i: n for i, n in rows}


def load(db: Database, principal: Principal, run_id: int) -> tuple[PipelineRun,
                                                                   list[PipelineStep]]:
    with db.session() as s:
        row = s.execute(_visible(principal).where(PipelineRun.id == run_id)).first()
        if row is None:
            raise NotFound(f"no pipeline run {run_id}")
        steps = s.scalars(select(PipelineStep).where(PipelineStep.run_id == run_id)
                          .order_by(PipelineStep.id)).all()
        return row[0], list(steps)


def get_run(db: Database, principal: Principal, run_id: int) -> RunView:
    with db.session() as s:
        row = s.execute(_visible(principal).where(PipelineRun.id == run_id)).first()
        if row is None:
            raise NotFound(f"no pipeline run {run_id}")
        steps = s.scalars(select(PipelineStep).where(PipelineStep.run_id == run_id)
                          .order_by(PipelineStep.id)).all()
        names = _schedule_names(s, {row[0].schedule_id})
        return views.run_view(row[0], row[1], row[2], list(steps), names)


def set_priority(db: Database, principal: Principal, run_id: int, priority: int,
                 wake: Wake) -> RunView:
    """Change a queued run's priority (409 once it started)."""
    get_run(db, principal, run_id)
    with db.session() as s:
        done = s.execute(update(PipelineRun).where(
            PipelineRun.id == run_id, PipelineRun.state == RunState.QUEUED.value
        ).values(priority=priority))
        if not getattr(done, "rowcount", 0):
            raise Conflict(f"pipeline run {run_id} is no longer queued: its priority is fixed")
    wake()
    return get_run(db, principal, run_id)


def cancel(db: Database, principal: Principal, run_id: int, wake: Wake) -> RunView:
    view = get_run(db, principal, run_id)
    if view.state.final:
        raise Conflict(f"pipeline run {run_id} already ended ({view.state.value})")
    with db.session() as s:
        s.execute(update(PipelineRun).where(PipelineRun.id == run_id)
                  .values(cancel_requested=True, message=f"cancel requested by "
                          f"{principal.user}"))
    wake()
    return get_run(db, principal, run_id)


def retry(db: Database, principal: Principal, run_id: int, missing: Missing,
          wake: Wake) -> RunView:
    """A new run of the same definition and params: steps that succeeded keep their outputs
    (state ``reused``), the failed, skipped and cancelled ones run again."""
    run, steps = load(db, principal, run_id)
    if run.state not in (RunState.FAILED.value, RunState.CANCELLED.value):
        raise Conflict(f"pipeline run {run_id} is {run.state}: only a failed or cancelled "
                       "run can be re-run")
    reuse = {st.name: st for st in steps if StepState(st.state).ok}
    spec = PipelineSpec.model_validate(run.spec)
    new = NewRun(spec, dict(run.params), run.priority, "retry", retry_of=run.id, reuse=reuse)
    owner = Principal(run.user_id, principal.user, run.team_id, principal.team,
                      principal.admin)
    new_id = insert_run(db, owner, new, missing)
    wake()
    return get_run(db, principal, new_id)


def create(db: Database, principal: Principal, new: NewRun, missing: Missing,
           wake: Wake) -> RunView:
    run_id = insert_run(db, principal, new, missing)
    wake()
    return get_run(db, principal, run_id)
