"""All routes of /api/v1. Each handler is one service call."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from gpupool.schemas.admin import (
    AuditEvent,
    TeamCreate,
    TeamUpdate,
    TeamView,
    TokenCreate,
    TokenInfo,
    TokensRevoked,
    TokenView,
    UserCreate,
    UserDeleted,
    UserView,
    WhoAmI,
)
from gpupool.schemas.cluster import NodeView, QueueView
from gpupool.schemas.jobs import JobOrder, JobSpec, JobView, Kind, LogChunk, Phase
from gpupool.schemas.sim import SimRunCreate, SimRunView, TraceFile
from gpupool.server.api.deps import Address, AppContext, Caller, Ctx
from gpupool.server.api.hostile import SafeRoute
from gpupool.server.api.paging import PAGED, Cursor, send_page
from gpupool.server.api.responses import API_ERRORS, MAX_ID, errors
from gpupool.server.services import (
    admin,
    audit,
    cluster,
    code_store,
    jobs,
    simulation,
    tokens,
    users,
)
from gpupool.server.services.simulation import SimulationRunner

router = APIRouter(prefix="/api/v1", route_class=SafeRoute, responses=API_ERRORS)
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="job id")]
TokenId = Annotated[int, Path(ge=1, le=MAX_ID, description="token id")]


@router.get("/whoami", response_model=WhoAmI)
def whoami(caller: Caller) -> WhoAmI:
    return WhoAmI(user=caller.user, team=caller.team, admin=caller.admin)


@router.post("/jobs", response_model=JobView, status_code=status.HTTP_201_CREATED,
             responses=errors(403))
async def submit_job(
    spec: JobSpec,
    ctx: Ctx,
    caller: Caller,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key",
        description=(
            "Optional; 1 to 200 printable ASCII characters, e.g. a fresh UUID per job. Kept "
            "per user for at least 24 h: a retry with the same key and the same spec queues "
            "nothing and answers 201 with the first job (same id, as it is now); the same key "
            "with a different spec answers 422 naming this header."
        ),
    )] = None,
) -> JobView:
    """Queue a job (201). With an ``Idempotency-Key``, a retry answers 201 with the job the
    first request created (same id), never a second job; see the header's description."""
    # On SQLite the insert takes well under a millisecond, less than the hop to the worker
    # thread pool, and writes are serialised anyway; PostgreSQL waits on the network and on
    # its commit, so concurrent submits go to threads there.
    if spec.code is not None:
        code_store.require(ctx.db, ctx.settings.home, caller.team_id, spec.code)
    call = partial(jobs.submit, ctx.db, caller, spec, ctx.controller.models, ctx.controller.wake,
                   idempotency_key=idempotency_key, never_fits=ctx.controller.never_fits,
                   max_idle_timeout_s=ctx.settings.notebook_max_idle_timeout_s)
    view = call() if ctx.db.is_sqlite else await run_in_threadpool(call)
    ctx.controller.metrics.submitted()  # gpupool_submits_total (a counter's lock: ~1 µs)
    return view


@router.get("/jobs", response_model=list[JobView], responses=PAGED)
def list_jobs(
    ctx: Ctx,
    caller: Caller,
    request: Request,
    response: Response,
    phase: Annotated[list[Phase] | None, Query(
        description="Only jobs in these phases (repeat the parameter for several).")] = None,
    queue: str | None = None,
    name: str | None = None,
    kind: Annotated[Kind | None, Query(
        description="Only workloads of this kind (job or notebook).")] = None,
    order: Annotated[JobOrder, Query(
        description="`newest` first, or `queue`: as the scheduler takes them (higher "
                    "priority first, then first come first served).")] = JobOrder.NEWEST,
    limit: Annotated[int, Query(ge=1, le=10000, description="Rows per page.")] = 1000,
    cursor: Cursor = None,
) -> list[JobView]:
    """Jobs your team may see (an admin: every team's), one page at a time: the headers say
    when more exist (see the 200 answer)."""
    page = jobs.list_jobs(ctx.db, caller, phase or (), queue, name, limit, order, cursor,
                          kind)
    return send_page(page, request, response)


@router.get("/jobs/{job_id}", response_model=JobView, responses=errors(404))
def get_job(job_id: JobId, ctx: Ctx, caller: Caller) -> JobView:
    return jobs.get_job(ctx.db, caller, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobView, responses=errors(404, 409))
def cancel_job(job_id: JobId, ctx: Ctx, caller: Caller) -> JobView:
    return jobs.cancel(ctx.db, caller, job_id, ctx.controller.wake)


@router.get("/jobs/{job_id}/logs", response_model=LogChunk, responses=errors(404))
def job_logs(
    job_id: JobId,
    ctx: Ctx,
    caller: Caller,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=16 << 20)] = 1 << 20,
) -> LogChunk:
    return jobs.read_logs(ctx.db, caller, job_id, ctx.settings.runs_dir, offset, limit)


@router.get("/nodes", response_model=list[NodeView])
def list_nodes(ctx: Ctx, caller: Caller) -> list[NodeView]:
    return cluster.list_nodes(ctx.db, caller)


@router.get("/queues", response_model=list[QueueView])
def list_queues(ctx: Ctx, caller: Caller) -> list[QueueView]:
    return cluster.list_queues(ctx.db, caller)


@router.post("/teams", response_model=TeamView, status_code=status.HTTP_201_CREATED,
             responses=errors(403, 409))
def create_team(body: TeamCreate, ctx: Ctx, caller: Caller, address: Address) -> TeamView:
    view = admin.create_team(ctx.db, caller, body, address,
                             server_max_idle_s=ctx.settings.notebook_max_idle_timeout_s)
    ctx.controller.wake(capacity_changed=True)
    return view


@router.get("/teams", response_model=list[TeamView])
def list_teams(ctx: Ctx, caller: Caller) -> list[TeamView]:
    return admin.list_teams(ctx.db, caller)


@router.patch("/teams/{name}", response_model=TeamView, responses=errors(403, 404))
def update_team(
    name: str, body: TeamUpdate, ctx: Ctx, caller: Caller, address: Address
) -> TeamView:
    view = admin.update_team(ctx.db, caller, name, body, address,
                             server_max_idle_s=ctx.settings.notebook_max_idle_timeout_s)
    ctx.controller.wake(capacity_changed=True)
    return view


@router.delete("/teams/{name}", response_model=TeamView, responses=errors(403, 404, 409))
def delete_team(name: str, ctx: Ctx, caller: Caller, address: Address) -> TeamView:
    """Soft-delete a team with no users, active jobs or pipelines; answers it as it was."""
    view = admin.delete_team(ctx.db, caller, name, address)
    ctx.controller.wake(capacity_changed=True)
    return view


@router.post("/users", response_model=UserView, status_code=status.HTTP_201_CREATED,
             responses=errors(403, 404, 409))
def create_user(body: UserCreate, ctx: Ctx, caller: Caller, address: Address) -> UserView:
    return users.create_user(ctx.db, caller, body, address)


@router.get("/users", response_model=list[UserView], responses=errors(403))
def list_users(ctx: Ctx, caller: Caller) -> list[UserView]:
    return users.list_users(ctx.db, caller)


@router.post("/users/{name}/disable", response_model=UserView,
             responses=errors(403, 404, 409))
def disable_user(name: str, ctx: Ctx, caller: Caller, address: Address) -> UserView:
    """The user's tokens are refused from the next request on; their jobs keep running."""
    return users.set_disabled(ctx.db, caller, name, True, address)


@router.post("/users/{name}/enable", response_model=UserView, responses=errors(403, 404))
def enable_user(name: str, ctx: Ctx, caller: Caller, address: Address) -> UserView:
    return users.set_disabled(ctx.db, caller, name, False, address)


@router.delete("/users/{name}", response_model=UserDeleted, responses=errors(403, 404, 409))
def delete_user(name: str, ctx: Ctx, caller: Caller, address: Address) -> UserDeleted:
    """Soft-delete a user with no active jobs or pipelines: tokens revoked, name freed."""
    return users.delete_user(ctx.db, caller, name, address)


@router.post("/users/{name}/tokens/revoke", response_model=TokensRevoked,
             responses=errors(403, 404))
def revoke_user_tokens(name: str, ctx: Ctx, caller: Caller, address: Address) -> TokensRevoked:
    return tokens.revoke_user_tokens(ctx.db, caller, name, address)


@router.post("/tokens", response_model=TokenView, status_code=status.HTTP_201_CREATED,
             responses=errors(403, 404, 409))
def create_token(body: TokenCreate, ctx: Ctx, caller: Caller, address: Address) -> TokenView:
    return tokens.create_token(ctx.db, caller, body, address)


@router.get("/tokens", response_model=list[TokenInfo], responses=errors(403, 404))
def list_tokens(
    ctx: Ctx,
    caller: Caller,
    user: str | None = None,
    include_all: Annotated[
        bool, Query(alias="all", description="Also revoked and expired tokens.")
    ] = False,
) -> list[TokenInfo]:
    return tokens.list_tokens(ctx.db, caller, user, include_all)


@router.post("/tokens/{token_id}/revoke", response_model=TokensRevoked,
             responses=errors(403, 404, 409))
def revoke_token(token_id: TokenId, ctx: Ctx, caller: Caller, address: Address) -> TokensRevoked:
    return tokens.revoke_token(ctx.db, caller, token_id, address)


@router.get("/audit", response_model=list[AuditEvent], responses=errors(403) | PAGED)
def list_audit(
    ctx: Ctx, caller: Caller, request: Request, response: Response,
    limit: Annotated[int, Query(ge=1, le=10000, description="Rows per page.")] = 100,
    cursor: Cursor = None,
) -> list[AuditEvent]:
    """Admin actions and refused sign-ins, newest first, one page at a time."""
    return send_page(audit.list_events(ctx.db, caller, limit, cursor), request, response)


def _sim(ctx: AppContext) -> SimulationRunner:
    assert ctx.sim is not None
    return ctx.sim


@router.get("/sim/traces", response_model=list[TraceFile])
def list_traces(ctx: Ctx, caller: Caller) -> list[TraceFile]:
    """Your team's node and pod lists (openb CSV format); an admin sees every team's."""
    return simulation.list_traces(_sim(ctx).folder, caller)


@router.put("/sim/traces/{name}", response_model=TraceFile, status_code=status.HTTP_201_CREATED,
            responses=errors(413))
async def upload_trace(name: str, request: Request, ctx: Ctx, caller: Caller) -> TraceFile:
    """Store a CSV sent as the raw request body as your team's ``name``, after checking every
    row (413 past 64 MiB: the body is streamed and never held whole)."""
    return await simulation.upload_trace(_sim(ctx).folder, caller, name,
                                         request.headers.get("content-length"), request.stream())


@router.post("/sim/runs", response_model=SimRunView, status_code=status.HTTP_202_ACCEPTED)
def start_sim(body: SimRunCreate, ctx: Ctx, caller: Caller) -> SimRunView:
    return _sim(ctx).submit(caller, body)


@router.get("/sim/runs", response_model=list[SimRunView])
def list_sims(ctx: Ctx, caller: Caller) -> list[SimRunView]:
    return _sim(ctx).list(caller)


@router.get("/sim/runs/{run_id}", response_model=SimRunView, responses=errors(404))
def get_sim(run_id: str, ctx: Ctx, caller: Caller) -> SimRunView:
    return _sim(ctx).get(caller, run_id)
