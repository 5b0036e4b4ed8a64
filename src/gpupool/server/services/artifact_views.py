"""The use cases of a job's artifacts: list them, find one attempt's archive. Whoever may
see the job may see its artifacts (its team, admins); others get 404 as for the job."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from gpupool.schemas.artifacts import ArtifactAttempt
from gpupool.server.artifacts import ArtifactStore
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job
from gpupool.server.services.errors import NotFound
from gpupool.server.services.identity import Principal


def _team_of(db: Database, caller: Principal, job_id: int) -> int:
    """The job's team id; NotFound when the caller may not see the job."""
    with db.read() as s:
        team = s.scalar(select(Job.team_id).where(Job.id == job_id))
    if team is None or (not caller.admin and team != caller.team_id):
        raise NotFound(f"no job {job_id}")
    return int(team)


def list_artifacts(db: Database, store: ArtifactStore, caller: Principal,
                   job_id: int) -> list[ArtifactAttempt]:
    """Every attempt's artifacts, oldest first ([] when the job declared none)."""
    team = _team_of(db, caller, job_id)
    return [ArtifactAttempt.model_validate(m) for m in store.manifests(team, job_id)]


def archive(db: Database, store: ArtifactStore, caller: Principal, job_id: int,
            attempt: int) -> Path:
    """The attempt's archive (gzip'd tar); NotFound when it kept none."""
    team = _team_of(db, caller, job_id)
    path = store.archive(team, job_id, attempt)
    if not path.is_file():
        raise NotFound(f"job {job_id} attempt {attempt}: no artifacts kept")
    return path
