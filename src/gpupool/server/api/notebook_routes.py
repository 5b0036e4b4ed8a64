"""Routes of /api/v1 for notebooks beyond what every workload has (create, list, describe and
delete are the jobs' routes with ``kind: notebook``): suspend, resume, and a browser's
one-time sign-in address on the gateway. Each handler is one service call."""

from __future__ import annotations

from fastapi import APIRouter, status

from gpupool.schemas.jobs import GatewaySignIn, JobView
from gpupool.server.api.deps import Caller, Ctx
from gpupool.server.api.hostile import SafeRoute
from gpupool.server.api.responses import API_ERRORS, errors
from gpupool.server.api.routes import JobId
from gpupool.server.services import notebooks
from gpupool.server.services.errors import Conflict

router = APIRouter(prefix="/api/v1", route_class=SafeRoute, responses=API_ERRORS)


@router.post("/jobs/{job_id}/suspend", response_model=JobView,
             status_code=status.HTTP_202_ACCEPTED, responses=errors(404, 409))
def suspend_notebook(job_id: JobId, ctx: Ctx, caller: Caller) -> JobView:
    """Suspend a notebook (202): its processes stop, its GPU share is given back, its files
    stay. 409 when it is not a notebook, is suspended already, or ended."""
    return notebooks.suspend(ctx.db, caller, job_id, ctx.controller.wake)


@router.post("/jobs/{job_id}/resume", response_model=JobView,
             status_code=status.HTTP_202_ACCEPTED, responses=errors(404, 409))
def resume_notebook(job_id: JobId, ctx: Ctx, caller: Caller) -> JobView:
    """Queue a suspended notebook again (202): it is placed like any job, its kernels start
    afresh, its files are where they were. 409 unless it is suspended."""
    return notebooks.resume(ctx.db, caller, job_id, ctx.controller.wake)


@router.post("/jobs/{job_id}/open", response_model=GatewaySignIn, responses=errors(404, 409))
def open_notebook(job_id: JobId, ctx: Ctx, caller: Caller) -> GatewaySignIn:
    """A one-time address (valid about a minute, once) that signs a browser in to the
    notebook on the gateway's origin and opens it. Its owner and admins only (404 for
    others); 409 when it ended or the server has no gateway."""
    if ctx.gateway is None:
        raise Conflict("this server runs no gateway: notebooks cannot be opened")
    return notebooks.sign_in(ctx.db, caller, job_id, ctx.gateway.url(), ctx.gateway.mint)
