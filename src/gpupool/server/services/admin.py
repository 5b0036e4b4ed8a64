"""Teams (queues with quotas) and what the admin services share: the admin check and the
"what still uses this" checks that guard deletions. Admin only, except listing teams.
Users are in ``services.users``, tokens in ``services.tokens``; every change is audited
(``services.audit``) in the transaction that makes it.
"""

from __future__ import annotations

import time
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gpupool.schemas.admin import TeamCreate, TeamUpdate, TeamView, notebook_idle_problem
from gpupool.schemas.jobs import Phase
from gpupool.schemas.pipelines import RunState
from gpupool.server.db.database import Database
from gpupool.server.db.pipeline_tables import PipelineRun, PipelineSchedule
from gpupool.server.db.tables import Job, Node, Team, User
from gpupool.server.services import audit
from gpupool.server.services.errors import Conflict, Forbidden, Invalid, NotFound
from gpupool.server.services.identity import DEFAULT_TEAM, Principal, deleted_name

ACTIVE_PHASES = (Phase.PENDING.value, Phase.STARTING.value, Phase.RUNNING.value)
_SHOWN = 10  # at most this many ids or names in one message


def require_admin(principal: Principal) -> None:
    """Forbidden unless the caller is an admin."""
    if not principal.admin:
        raise Forbidden(f"user {principal.user!r} is not an admin")


def _milli(gpus: float) -> int:
    return round(gpus * 1000)


def _team_view(team: Team) -> TeamView:
    lend = team.lend_limit_milli
    return TeamView(
        name=team.name,
        quota_gpus=team.quota_milli / 1000,
        borrow_limit_gpus=team.borrow_limit_milli / 1000,
        weight=team.weight,
        cohort=team.cohort,
        lend_limit_gpus=None if lend is None else lend / 1000,
        default_run_limit_s=team.default_run_limit_s,
        notebook_idle_timeout_s=team.notebook_idle_timeout_s,
        notebook_max_idle_timeout_s=team.notebook_max_idle_timeout_s,
        notebook_max_lifetime_s=team.notebook_max_lifetime_s,
    )


def _share_text(weight: float, cohort: str | None, lend_gpus: float | None) -> str:
    """The fair-share settings as the audit log words them."""
    lends = "all unused quota" if lend_gpus is None else f"at most {lend_gpus:g} GPUs"
    where = f"cohort {cohort}, lends {lends}" if cohort else "no cohort"
    return f"weight {weight:g}, {where}"


def _run_limit_text(seconds: float | None) -> str:
    """The default run limit as the audit log words it (after the other settings)."""
    if seconds is None:
        return ", the server's default run limit"
    return f", default run limit {seconds:g} s"


NOTEBOOK_FIELDS = ("notebook_idle_timeout_s", "notebook_max_idle_timeout_s",
                   "notebook_max_lifetime_s")
_NOTEBOOK_WORDS = {"notebook_idle_timeout_s": "notebook idle timeout",
                   "notebook_max_idle_timeout_s": "notebook max idle timeout",
                   "notebook_max_lifetime_s": "notebook max lifetime"}


def _notebook_text(field: str, seconds: float | None) -> str:
    """One notebook setting as the audit log words it."""
    words = _NOTEBOOK_WORDS[field]
    return f"the server's {words}" if seconds is None else f"{words} {seconds:g} s"


def _check_notebook_idle(team: Team, server_max_idle_s: float | None) -> None:
    """Invalid (422, naming ``notebook_idle_timeout_s``) when the team's default notebook
    idle timeout is above its maximum: its own, else the server's (``server_max_idle_s``;
    None: not checked against the server's)."""
    own = team.notebook_max_idle_timeout_s
    problem = notebook_idle_problem(
        team.notebook_idle_timeout_s, own if own is not None else server_max_idle_s,
        "the team's notebook_max_idle_timeout_s" if own is not None
        else "the server's maximum idle timeout (--notebook-max-idle-timeout)")
    if problem is not None:
        raise Invalid(problem)


def _listed(items: list[str]) -> str:
    more = len(items) - _SHOWN
    return ", ".join(items[:_SHOWN]) + (f" and {more} more" if more > 0 else "")


def still_in_use(
    s: Session, owner: str, column: Literal["user_id", "team_id"], value: int
) -> str | None:
    """None when no job is pending/starting/running, no pipeline run queued/running and no
    pipeline schedule has ``column == value``; else a message for ``owner`` (e.g. "user
    'ada'") naming the first of them and saying how to end them."""
    jobs = s.execute(
        select(Job.id, Job.phase)
        .where(getattr(Job, column) == value, Job.phase.in_(ACTIVE_PHASES))
        .order_by(Job.id)
    ).all()
    if jobs:
        listed = _listed([f"{job_id} ({phase})" for job_id, phase in jobs])
        return (f"{owner} has {len(jobs)} active job(s): {listed}; cancel them first "
                f"(gpupool cancel JOB, for each) and try again")
    runs = s.scalars(
        select(PipelineRun.id).where(
            getattr(PipelineRun, column) == value,
            PipelineRun.state.in_((RunState.QUEUED.value, RunState.RUNNING.value)),
        ).order_by(PipelineRun.id)
    ).all()
    if runs:
        return (f"{owner} has {len(runs)} active pipeline run(s): "
                f"{_listed([str(r) for r in runs])}; cancel them first "
                f"(gpupool pipeline cancel RUN) and try again")
    schedules = s.scalars(
        select(PipelineSchedule.name).where(getattr(PipelineSchedule, column) == value)
        .order_by(PipelineSchedule.name)
    ).all()
    if schedules:
        return (f"{owner} has {len(schedules)} pipeline schedule(s): {_listed(list(schedules))}; "
                f"delete them first (DELETE /api/v1/pipeline-schedules/NAME, or "
                f"Client().pipelines.delete_schedule) and try again")
    return None


def create_team(db: Database, principal: Principal, body: TeamCreate, address: str = "",
                server_max_idle_s: float | None = None) -> TeamView:
    """A new team. ``server_max_idle_s``: the server's longest notebook idle timeout, which
    the team's default idle timeout may not exceed unless the team has its own maximum
    (Invalid)."""
    require_admin(principal)
    team = Team(
        name=body.name,
        quota_milli=_milli(body.quota_gpus),
        borrow_limit_milli=_milli(body.borrow_limit_gpus),
        created_at=time.time(),
        weight=body.weight,
        cohort=body.cohort,
        lend_limit_milli=None if body.lend_limit_gpus is None else _milli(body.lend_limit_gpus),
        default_run_limit_s=body.default_run_limit_s,
        notebook_idle_timeout_s=body.notebook_idle_timeout_s,
        notebook_max_idle_timeout_s=body.notebook_max_idle_timeout_s,
        notebook_max_lifetime_s=body.notebook_max_lifetime_s,
    )
    _check_notebook_idle(team, server_max_idle_s)
    notebooks = "".join(f", {_notebook_text(f, getattr(body, f))}" for f in NOTEBOOK_FIELDS
                        if getattr(body, f) is not None)
    try:
        with db.session() as s:
            s.add(team)
            audit.record(s, principal.user, "team.create", body.name,
                         f"quota {body.quota_gpus:g} GPUs, borrow limit "
                         f"{body.borrow_limit_gpus:g} GPUs, "
                         + _share_text(body.weight, body.cohort, body.lend_limit_gpus)
                         + ("" if body.default_run_limit_s is None
                            else _run_limit_text(body.default_run_limit_s))
                         + notebooks, address)
        view = _team_view(team)
    except IntegrityError:
        raise Conflict(f"name: a team named {body.name!r} already exists") from None
    view.warning = quota_warning(db)
    return view


def _live_team(s: Session, name: str) -> Team:
    team = s.scalar(select(Team).where(Team.name == name, Team.deleted_at.is_(None)))
    if team is None:
        raise NotFound(f"no team named {name!r} (see: gpupool admin team list)")
    return team


def update_team(db: Database, principal: Principal, name: str, body: TeamUpdate,
                address: str = "", server_max_idle_s: float | None = None) -> TeamView:
    """Change what ``body`` gives and keep the rest (see TeamUpdate: an explicit null clears
    ``cohort``, ``lend_limit_gpus``, ``default_run_limit_s`` and the notebook settings).
    NotFound for no live team of that name; Invalid (nothing changed) when the team's
    default notebook idle timeout would be above its maximum (see :func:`create_team`)."""
    require_admin(principal)
    with db.session() as s:
        team = _live_team(s, name)
        changes = []
        if body.quota_gpus is not None:
            team.quota_milli = _milli(body.quota_gpus)
            changes.append(f"quota {body.quota_gpus:g} GPUs")
        if body.borrow_limit_gpus is not None:
            team.borrow_limit_milli = _milli(body.borrow_limit_gpus)
            changes.append(f"borrow limit {body.borrow_limit_gpus:g} GPUs")
        given = body.model_fields_set
        if body.weight is not None:
            team.weight = body.weight
            changes.append(f"weight {body.weight:g}")
        if "cohort" in given:
            team.cohort = body.cohort
            changes.append(f"cohort {body.cohort}" if body.cohort else "no cohort")
        if "lend_limit_gpus" in given:
            lend = body.lend_limit_gpus
            team.lend_limit_milli = None if lend is None else _milli(lend)
            changes.append("lends all unused quota" if lend is None
                           else f"lend limit {lend:g} GPUs")
        if "default_run_limit_s" in given:
            team.default_run_limit_s = body.default_run_limit_s
            changes.append(_run_limit_text(body.default_run_limit_s).removeprefix(", "))
        for field in NOTEBOOK_FIELDS:
            if field in given:
                setattr(team, field, getattr(body, field))
                changes.append(_notebook_text(field, getattr(body, field)))
        _check_notebook_idle(team, server_max_idle_s)
        audit.record(s, principal.user, "team.update", name, ", ".join(changes), address)
        view = _team_view(team)
    view.warning = quota_warning(db)
    return view


def quota_warning(db: Database) -> str | None:
    """What to tell an admin when the live teams' guaranteed quotas add up to more than the
    pool's GPUs (None when they fit, or before any node registered)."""
    with db.read() as s:
        quotas = s.execute(select(Team.name, Team.quota_milli).where(
            Team.deleted_at.is_(None), Team.quota_milli > 0).order_by(Team.name)).all()
        pool = sum(len(gpus or ()) for gpus in s.scalars(select(Node.gpus))) * 1000
    total = sum(q for _, q in quotas)
    if not pool or total <= pool:
        return None
    each = ", ".join(f"{n} {q / 1000:g}" for n, q in quotas[:_SHOWN])
    more = f" and {len(quotas) - _SHOWN} more" if len(quotas) > _SHOWN else ""
    return (f"guaranteed quotas add up to {total / 1000:g} GPUs ({each}{more}), more than the "
            f"pool's {pool // 1000}: they cannot all be honoured at once (lower one: gpupool "
            "admin team set NAME --quota-gpus N)")


def delete_team(db: Database, principal: Principal, name: str, address: str = "") -> TeamView:
    """Soft-delete a team: its row stays (job history keeps its foreign keys), renamed so
    the name can be used again, with its quota and borrow limit set to 0 and out of its
    cohort. Conflict for the default team, and while the team has live users (disabled ones
    count), active jobs, active pipeline runs or pipeline schedules. Returns the team as it
    was."""
    require_admin(principal)
    if name == DEFAULT_TEAM:
        raise Conflict(f"the {DEFAULT_TEAM!r} team cannot be deleted: it is where the first "
                       "admin lives and what the pool's capacity defaults to")
    with db.session() as s:
        team = _live_team(s, name)
        view = _team_view(team)
        users = s.scalars(
            select(User.name).where(User.team_id == team.id, User.deleted_at.is_(None))
            .order_by(User.name)
        ).all()
        if users:
            raise Conflict(f"team {name!r} still has {len(users)} user(s): "
                           f"{_listed(list(users))}; delete them first "
                           f"(gpupool admin user delete NAME) and try again")
        problem = still_in_use(s, f"team {name!r}", "team_id", team.id)
        if problem:
            raise Conflict(problem)
        team.deleted_at = time.time()
        team.name = deleted_name(name, team.id)
        team.quota_milli = team.borrow_limit_milli = 0
        team.cohort = None
        audit.record(s, principal.user, "team.delete", name, "", address)
    return view


def list_teams(db: Database, principal: Principal) -> list[TeamView]:
    """Live teams by name (a non-admin sees only their own)."""
    with db.read() as s:
        query = select(Team).where(Team.deleted_at.is_(None)).order_by(Team.name)
        if not principal.admin:
            query = query.where(Team.id == principal.team_id)
        return [_team_view(t) for t in s.scalars(query)]
