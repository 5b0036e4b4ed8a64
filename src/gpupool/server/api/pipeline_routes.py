"""Routes of pipelines under /api/v1: runs, schedules, secrets. Each handler is one call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from gpupool.schemas.pipelines import (
    PipelineLogs,
    RunCreate,
    RunState,
    RunUpdate,
    RunView,
    ScheduleSpec,
    ScheduleView,
    SecretPut,
    SecretView,
    ValidateRequest,
    ValidateView,
)
from gpupool.server.api.deps import Caller, Ctx
from gpupool.server.api.hostile import SafeRoute
from gpupool.server.api.paging import PAGED, Cursor, send_page
from gpupool.server.api.responses import API_ERRORS, MAX_ID, errors
from gpupool.server.pipelines import logs, runs, schedules
from gpupool.server.pipelines.dag import PipelineInvalid, validate
from gpupool.server.pipelines.engine import PipelineEngine
from gpupool.server.services.errors import Invalid

router = APIRouter(prefix="/api/v1", route_class=SafeRoute, responses=API_ERRORS)
RunId = Annotated[int, Path(ge=1, le=MAX_ID, description="pipeline run id")]
Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")]


def engine(request: Request) -> PipelineEngine:
    found: PipelineEngine = request.app.state.pipelines
    return found


Engine = Annotated[PipelineEngine, Depends(engine)]


@router.post("/pipelines/validate", response_model=ValidateView)
def validate_pipeline(body: ValidateRequest, caller: Caller) -> ValidateView:
    """Check a definition and its params without running it (422 naming every problem)."""
    try:
        plan = validate(body.definition, body.params)
    except PipelineInvalid as exc:
        raise Invalid("invalid pipeline: " + "; ".join(exc.problems)) from None
    return ValidateView(order=plan.order, depends_on=plan.depends_on, params=plan.params)


@router.post("/pipeline-runs", response_model=RunView, status_code=status.HTTP_201_CREATED)
def create_run(body: RunCreate, ctx: Ctx, caller: Caller, eng: Engine) -> RunView:
    new = runs.NewRun(body.definition, body.params, body.priority, body.trigger)
    return runs.create(ctx.db, caller, new, eng.missing_secrets, eng.wake)


@router.get("/pipeline-runs", response_model=list[RunView], responses=PAGED)
def list_runs(
    ctx: Ctx, caller: Caller, request: Request, response: Response,
    state: RunState | None = None, name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000, description="Rows per page.")] = 100,
    cursor: Cursor = None,
) -> list[RunView]:
    """Runs your team may see, newest first, one page at a time."""
    page = runs.list_runs(ctx.db, caller, state, name, limit, cursor)
    return send_page(page, request, response)


@router.get("/pipeline-runs/{run_id}", response_model=RunView, responses=errors(404))
def get_run(run_id: RunId, ctx: Ctx, caller: Caller) -> RunView:
    return runs.get_run(ctx.db, caller, run_id)


@router.patch("/pipeline-runs/{run_id}", response_model=RunView, responses=errors(404, 409))
def update_run(run_id: RunId, body: RunUpdate, ctx: Ctx, caller: Caller, eng: Engine) -> RunView:
    """Change the priority of a queued run (409 once it started)."""
    return runs.set_priority(ctx.db, caller, run_id, body.priority, eng.wake)


@router.post("/pipeline-runs/{run_id}/cancel", response_model=RunView,
             responses=errors(404, 409))
def cancel_run(run_id: RunId, ctx: Ctx, caller: Caller, eng: Engine) -> RunView:
    return runs.cancel(ctx.db, caller, run_id, eng.wake)


@router.post("/pipeline-runs/{run_id}/retry", response_model=RunView,
             status_code=status.HTTP_201_CREATED, responses=errors(404, 409))
def retry_run(run_id: RunId, ctx: Ctx, caller: Caller, eng: Engine) -> RunView:
    """A new run reusing the outputs of the steps that succeeded; the rest run again."""
    return runs.retry(ctx.db, caller, run_id, eng.missing_secrets, eng.wake)


@router.get("/pipeline-runs/{run_id}/logs", response_model=PipelineLogs, responses=errors(404))
def run_logs(run_id: RunId, ctx: Ctx, caller: Caller, eng: Engine,
             step: str | None = None) -> PipelineLogs:
    return logs.read(ctx.db, caller, run_id, step, eng.base, ctx.settings.runs_dir, eng.store)


@router.put("/pipeline-schedules", response_model=ScheduleView)
def put_schedule(body: ScheduleSpec, ctx: Ctx, caller: Caller, eng: Engine) -> ScheduleView:
    """Create or replace the cron schedule named like the definition."""
    view = schedules.put(ctx.db, caller, body, eng.cron_now(), eng.missing_secrets)
    eng.wake()
    return view


@router.get("/pipeline-schedules", response_model=list[ScheduleView])
def list_schedules(ctx: Ctx, caller: Caller) -> list[ScheduleView]:
    return schedules.list_schedules(ctx.db, caller)


@router.delete("/pipeline-schedules/{name}", responses=errors(404))
def delete_schedule(name: Name, ctx: Ctx, caller: Caller) -> dict[str, str]:
    schedules.remove(ctx.db, caller, name)
    return {"deleted": name}


@router.put("/secrets/{name}", response_model=SecretView)
def put_secret(name: Name, body: SecretPut, caller: Caller, eng: Engine) -> SecretView:
    """Store a team secret (encrypted); its value is never returned."""
    return eng.store.put(caller, name, body.value)


@router.get("/secrets", response_model=list[SecretView])
def list_secrets(caller: Caller, eng: Engine) -> list[SecretView]:
    return eng.store.names(caller)


@router.delete("/secrets/{name}", responses=errors(404))
def delete_secret(name: Name, caller: Caller, eng: Engine) -> dict[str, str]:
    eng.store.delete(caller, name)
    return {"deleted": name}
