"""``/api/v1/jobs/{id}/artifacts``: the files a job declared (``artifacts:``), kept when each
attempt ended (server/artifacts.py). Its team and admins; others get 404 as for the job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from gpupool.schemas.artifacts import ArtifactAttempt
from gpupool.server.api.deps import Caller, Ctx
from gpupool.server.api.hostile import SafeRoute
from gpupool.server.api.responses import API_ERRORS, MAX_ID, errors
from gpupool.server.services import artifact_views

router = APIRouter(prefix="/api/v1", route_class=SafeRoute, responses=API_ERRORS)
JobId = Annotated[int, Path(ge=1, le=MAX_ID, description="job id")]
Attempt = Annotated[int, Path(ge=1, le=1_000_000, description="attempt number")]


@router.get("/jobs/{job_id}/artifacts", response_model=list[ArtifactAttempt],
            responses=errors(404))
def list_artifacts(job_id: JobId, ctx: Ctx, caller: Caller) -> list[ArtifactAttempt]:
    """What each attempt kept of the job's declared artifacts, oldest first."""
    return artifact_views.list_artifacts(ctx.db, ctx.controller.artifacts.store, caller,
                                         job_id)


@router.get("/jobs/{job_id}/artifacts/{attempt}", response_class=FileResponse,
            responses={200: {"content": {"application/gzip": {}},
                             "description": "The attempt's artifacts as a gzip'd tar"},
                       **errors(404)})
def download_artifacts(job_id: JobId, attempt: Attempt, ctx: Ctx,
                       caller: Caller) -> FileResponse:
    """The attempt's artifacts as one gzip'd tar (names relative to its working dir)."""
    path = artifact_views.archive(ctx.db, ctx.controller.artifacts.store, caller, job_id,
                                  attempt)
    return FileResponse(path, media_type="application/gzip",
                        filename=f"job-{job_id}-attempt-{attempt}-artifacts.tar.gz")
