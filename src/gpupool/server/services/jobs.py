"""Submitting, listing, cancelling jobs and reading their logs.

Only the background loop moves a job between phases; these functions insert jobs and set
``stop_requested``, then wake the loop. A user sees only their team's jobs unless admin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from gpupool.executors.local import read_text
from gpupool.schemas.jobs import JobEvent as JobEventView
from gpupool.schemas.jobs import (
    JobOrder,
    JobSpec,
    JobView,
    Kind,
    LogChunk,
    Phase,
    Placement,
    RankPlacement,
)
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, JobEvent, Node, Team, User
from gpupool.server.launch_env import gpu_memory_limit_mib
from gpupool.server.services import gpu_usage, idempotency, paging
from gpupool.server.services.errors import Conflict, Forbidden, Invalid, NotFound
from gpupool.server.services.identity import Principal

Wake = Callable[[], None]


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def resolve_gpu_model(requested: str | None, known: Sequence[str]) -> tuple[str, ...]:
    """The pool's model names matching ``requested`` (case-insensitive substring, so ``A100``
    matches ``A100-SXM4-80GB``). Raises Invalid naming the field when none does."""
    if not requested:
        return ()
    wanted = requested.lower()
    matches = tuple(m for m in known if wanted in m.lower())
    if not matches:
        have = ", ".join(sorted(set(known))) or "none"
        raise Invalid(f"gpu_model: no GPU of model {requested!r} in the pool (models: {have})")
    return matches


def job_view(job: Job, team: str, user: str, events: Sequence[JobEvent] = ()) -> JobView:
    placement = None
    if job.node is not None:
        placement = Placement(
            node=job.node,
            gpus=list(job.gpus or []),
            gpu_milli=job.gpu_milli,
            gpu_memory_mib=job.gpu_memory_mib,
            ranks=[RankPlacement.model_validate(r) for r in job.ranks or ()],
        )
    endpoint = job.endpoint or {}
    phase = Phase(job.phase)
    return JobView(
        id=str(job.id),
        name=job.name,
        team=team,
        user=user,
        queue=job.queue,
        phase=phase,
        kind=Kind(job.kind or Kind.JOB),
        url=endpoint.get("url") if phase is Phase.RUNNING else None,
        idle_since=_dt(endpoint.get("idle_since")) if phase is Phase.RUNNING else None,
        priority=job.priority,
        spec=JobSpec.model_validate(job.spec),
        reason=job.reason,
        placement=placement,
        attempts=job.attempts,
        exit_code=job.exit_code,
        enforcement=job.enforcement,
        isolation=job.isolation,
        created_at=datetime.fromtimestamp(job.created_at, UTC),
        started_at=_dt(job.started_at),
        ended_at=_dt(job.ended_at),
        events=[
            JobEventView(
                at=datetime.fromtimestamp(e.at, UTC), phase=Phase(e.phase), message=e.message
            )
            for e in events
        ],
    )


# Built once: the submit path is hot, and SQLAlchemy's per-call statement building costs
# more than the insert itself.
_SELECT_TEAM = select(Team.id, Team.name, Team.notebook_max_idle_timeout_s).where(
    Team.name == bindparam("name"))
_JOBS = cast(Table, Job.__table__)
_INSERT_JOB = insert(_JOBS).returning(_JOBS.c.id)
_INSERT_EVENT = insert(cast(Table, JobEvent.__table__))


def submit(
    db: Database, principal: Principal, spec: JobSpec, known_models: Sequence[str], wake: Wake,
    *, origin: str | None = None, idempotency_key: str | None = None,
    never_fits: Callable[[JobSpec], str | None] | None = None,
    max_idle_timeout_s: float | None = None,
) -> JobView:
    """Queue a job in the caller's team queue (or, for admins, any queue).

    ``idempotency_key`` (the ``Idempotency-Key`` header): a retry by the same user with the
    same key and the same spec, within at least 24 h, queues nothing and answers the first
    job as it is now; the same key with another spec is Invalid (422), as is a key that is
    not 1-200 printable ASCII characters. Of concurrent submits with one key exactly one
    queues a job (a unique constraint decides); the others answer that job.

    ``origin`` is for the server's own submitters only (the API never passes it): a unique
    mark by which ``find_by_origin`` finds the job again; a second submit with the same
    origin fails (IntegrityError).

    ``never_fits``: why the pool could never hold ``spec`` (None: it could); such a job is
    Invalid (422) with that reason, as it would wait forever. ``max_idle_timeout_s``: the
    server's longest idle timeout a notebook may ask for; the queue's team's own maximum,
    when set, replaces it (Invalid above it, nothing written).

    A notebook's name must not be that of a live workload of its team (Conflict); without
    one it gets the first free ``notebook-N``."""
    if spec.kind == Kind.SERVICE and origin is None:
        raise Invalid("kind: a service's replicas are started by the server; deploy the "
                      "service instead (gpupool serve FILE.yaml, POST /api/v1/services)")
    key = idempotency.check_key(idempotency_key)
    resolve_gpu_model(spec.gpu_model, known_models)
    impossible = never_fits(spec) if never_fits is not None else None
    if impossible is not None:
        raise Invalid(impossible)
    digest = idempotency.spec_hash(spec) if key is not None else ""
    queue = spec.queue or principal.team
    now = time.time()
    first: int | None = None
    try:
        with db.session() as s:
            conn = s.connection()
            if key is not None:
                first = idempotency.find(conn, principal.user_id, key, digest, now, purge=True)
            if first is None:
                job_id, name, team_name = _insert_job(conn, principal, spec, queue, now, origin,
                                                      max_idle_timeout_s)
                if key is not None:
                    idempotency.record(conn, principal.user_id, key, digest, job_id, now)
    except IntegrityError:
        if key is None:
            raise
        with db.session() as s:  # a concurrent submit with this key committed first
            first = idempotency.find(s.connection(), principal.user_id, key, digest, now,
                                     purge=False)
        if first is None:
            raise
        return _own_job(db, principal, first)
    if first is not None:
        return _own_job(db, principal, first)
    wake()
    when = datetime.fromtimestamp(now, UTC)
    return JobView(
        id=str(job_id), name=name, team=team_name, user=principal.user,
        queue=queue, phase=Phase.PENDING, priority=spec.priority, spec=spec,
        kind=spec.kind, reason=_WAITING, created_at=when,
        events=[JobEventView(at=when, phase=Phase.PENDING, message="submitted")],
    )


_WAITING = "waiting for the scheduler"


def _check_idle_timeout(spec: JobSpec, team: str, team_max_s: float | None,
                        server_max_s: float | None) -> None:
    """Invalid when the notebook asks for an idle timeout above its team's maximum (else the
    server's; None: no limit)."""
    asked = spec.idle_timeout_s
    limit = team_max_s if team_max_s is not None else server_max_s
    if asked is None or limit is None or asked <= limit:
        return
    where = (f"for team {team!r}'s notebooks" if team_max_s is not None
             else "on this server")
    raise Invalid(f"idle_timeout_s: at most {limit:g} s {where} (asked {asked:g})")


def _insert_job(
    conn: Connection, principal: Principal, spec: JobSpec, queue: str, now: float,
    origin: str | None, max_idle_timeout_s: float | None = None,
) -> tuple[int, str, str]:
    """Insert the pending job and its first event; (job id, job name, team name). A
    notebook's ``idle_timeout_s`` above its team's maximum (else ``max_idle_timeout_s``, the
    server's) is Invalid."""
    team = conn.execute(_SELECT_TEAM, {"name": queue}).first()
    if team is None:
        raise Invalid(f"queue: no queue named {queue!r}")
    team_id, team_name, team_max_idle = team
    if team_id != principal.team_id and not principal.admin:
        raise Forbidden(f"queue: you may only submit to your team's queue {principal.team!r}")
    _check_idle_timeout(spec, team_name, team_max_idle, max_idle_timeout_s)
    if spec.kind == Kind.NOTEBOOK:
        name = _notebook_name(conn, team_id, spec.name)
    else:
        name = spec.name or Path(spec.command[0]).name[:100] or "job"
    values = dict(
        name=name,
        kind=spec.kind.value,
        team_id=team_id,
        user_id=principal.user_id,
        queue=queue,
        phase=Phase.PENDING.value,
        priority=spec.priority,
        spec=spec.model_dump(mode="json"),
        reason=_WAITING,
        gpu_milli=0,
        gpu_memory_mib=0,
        attempts=0,
        failures=0,
        created_at=now,
        origin=origin,
    )
    job_id = int(conn.execute(_INSERT_JOB, values).scalar_one())
    conn.execute(
        _INSERT_EVENT,
        {"job_id": job_id, "at": now, "phase": Phase.PENDING.value, "message": "submitted"},
    )
    return job_id, name, str(team_name)


def _live_names(conn: Connection, team_id: int, like: str | None = None) -> set[str]:
    """The names of the team's workloads that have not ended."""
    query = select(Job.name).where(Job.team_id == team_id, Job.phase.not_in(
        [p.value for p in Phase if p.final]))
    if like is not None:
        query = query.where(Job.name.like(like))
    return set(conn.execute(query).scalars())


def _notebook_name(conn: Connection, team_id: int, wanted: str | None) -> str:
    """A notebook's name: ``wanted`` unless a live workload of the team has it (Conflict),
    else the first free ``notebook-N``."""
    if wanted is not None:
        if wanted in _live_names(conn, team_id, wanted):
            raise Conflict(f"name: the team already has a live workload named {wanted!r} "
                           "(names are unique among a team's notebooks and jobs that have "
                           "not ended)")
        return wanted
    taken = _live_names(conn, team_id, "notebook-%")
    return next(f"notebook-{n}" for n in range(1, len(taken) + 2)
                if f"notebook-{n}" not in taken)


def _own_job(db: Database, principal: Principal, job_id: int) -> JobView:
    """The caller's own job ``job_id`` as it is now (whatever team it was queued in)."""
    query = (
        select(Job, Team.name, User.name)
        .join(Team, Team.id == Job.team_id)
        .join(User, User.id == Job.user_id)
        .where(Job.id == job_id, Job.user_id == principal.user_id)
    )
    with db.read() as s:
        row = s.execute(query).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        events = s.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        ).all()
        return job_view(row[0], row[1], row[2], events)


def _visible(principal: Principal):  # type: ignore[no-untyped-def]
    query = (
        select(Job, Team.name, User.name)
        .join(Team, Team.id == Job.team_id)
        .join(User, User.id == Job.user_id)
    )
    if not principal.admin:
        query = query.where(Job.team_id == principal.team_id)
    return query


def list_jobs(
    db: Database,
    principal: Principal,
    phases: Sequence[Phase] = (),
    queue: str | None = None,
    name: str | None = None,
    limit: int = 1000,
    order: JobOrder = JobOrder.NEWEST,
    cursor: str | None = None,
    kind: Kind | None = None,
) -> paging.Page[JobView]:
    """One page of the jobs ``principal`` may see, in ``order``, of any of ``phases`` (all
    when empty); ``cursor`` continues from an earlier page of the same order.

    The page's ids are chosen first, from the ids alone, and only those rows are read: a
    filter that matches most jobs (``ps`` over 10,000 pending ones) then sorts integers, not
    10,000 whole rows with their specs (SQLite picks the phase index and sorts what it finds:
    ~30 ms against ~1 ms)."""
    page_kind = f"jobs:{order.value}"
    ordering: tuple[Any, ...] = ((Job.priority.desc(), Job.created_at, Job.id)
                                 if order is JobOrder.QUEUE else (Job.id.desc(),))
    ids = select(Job.id).order_by(*ordering)
    if not principal.admin:
        ids = ids.where(Job.team_id == principal.team_id)
    if cursor is not None and order is JobOrder.QUEUE:
        prio, created, last = paging.decode(cursor, page_kind, 3)
        ids = ids.where(or_(
            Job.priority < prio,
            and_(Job.priority == prio, or_(
                Job.created_at > created, and_(Job.created_at == created, Job.id > last)))))
    elif cursor is not None:
        ids = ids.where(Job.id < paging.decode(cursor, page_kind, 1)[0])
    if phases:
        ids = ids.where(Job.phase.in_([p.value for p in phases]))
    if queue is not None:
        ids = ids.where(Job.queue == queue)
    if name is not None:
        ids = ids.where(Job.name == name)
    if kind is not None:
        ids = ids.where(Job.kind == kind.value)
    query = _visible(principal).where(Job.id.in_(ids.limit(limit + 1))).order_by(*ordering)
    with db.read() as s:
        rows = s.execute(query).all()

    def key(row: Any) -> tuple[float, ...]:
        job = row[0]
        return (job.priority, job.created_at, job.id) if order is JobOrder.QUEUE else (job.id,)

    page = paging.page_of(rows, limit, page_kind, key, lambda r: job_view(r[0], r[1], r[2]))
    gpu_usage.attach(db, page.items, time.time(), running_only=True)
    return page


def find_by_origin(db: Database, principal: Principal, origin: str) -> str | None:
    """The id of the job that ``principal`` itself submitted with ``origin``, or None. Names
    play no part: a user can neither set an origin nor make a job match."""
    query = select(Job.id).where(Job.origin == origin, Job.user_id == principal.user_id)
    with db.session() as s:
        found = s.scalar(query)
    return None if found is None else str(found)


def get_job(db: Database, principal: Principal, job_id: int) -> JobView:
    with db.read() as s:
        row = s.execute(_visible(principal).where(Job.id == job_id)).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        events = s.scalars(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
        ).all()
        view = job_view(row[0], row[1], row[2], events)
        job = row[0]
        if job.gpus and job.node is not None:
            cards = s.scalar(select(Node.gpus).where(Node.name == job.node)) or []
            sizes = [int(cards[g]["memory_mib"]) for g in job.gpus if g < len(cards)]
            view.gpu_memory_limit_mib = gpu_memory_limit_mib(
                job.gpu_milli, job.gpu_memory_mib, min(sizes, default=0)
            ) or None
    gpu_usage.attach(db, [view], time.time())
    return view


def cancel(db: Database, principal: Principal, job_id: int, wake: Wake) -> JobView:
    """Ask the loop to cancel: a pending job ends at once, a running one gets SIGTERM, then
    SIGKILL after its grace period."""
    view = get_job(db, principal, job_id)
    if view.phase.final:
        raise Conflict(f"job {job_id} already ended ({view.phase.value})")
    with db.session() as s:
        s.execute(
            update(Job)  # a cancel overrides a notebook's suspend or resume request
            .where(Job.id == job_id, or_(Job.stop_requested.is_(None),
                                         Job.stop_requested.in_(("suspend", "resume"))))
            .values(stop_requested="cancel")
        )
        s.add(JobEvent(job_id=job_id, at=time.time(), phase=view.phase.value,
                       message=f"cancel requested by {principal.user}"))
    wake()
    return get_job(db, principal, job_id)


def read_logs(
    db: Database, principal: Principal, job_id: int, runs_dir: Path, offset: int, limit: int
) -> LogChunk:
    """Up to ``limit`` bytes of the job's log from ``offset``, as text that never starts or
    ends inside a UTF-8 character (``offset`` in the reply continues it)."""
    view = get_job(db, principal, job_id)
    text, end, size = read_text(str(runs_dir / str(job_id) / "log"), offset, limit,
                                final=view.phase.final)
    return LogChunk(data=text, offset=end, complete=view.phase.final and end >= size,
                    size=size)
