"""Database rows → wire views. Nothing secret is in a row, so nothing to hide here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from gpupool.schemas.pipelines import RunState, RunView, StepState, StepView
from gpupool.server.db.pipeline_tables import PipelineRun, PipelineStep


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def step_view(row: PipelineStep) -> StepView:
    handle = row.handle or {}
    job = handle.get("job_id")
    child = handle.get("child_run")
    return StepView(
        name=row.name, kind=row.kind, state=StepState(row.state),
        depends_on=list(row.depends_on or []), attempt=row.attempt, message=row.message,
        outputs=dict(row.outputs or {}), files=dict(row.files or {}),
        job_id=None if job is None else str(job), child_run=None if child is None else str(child),
        reused_from=None if row.reused_from is None else str(row.reused_from),
        started_at=_dt(row.started_at), ended_at=_dt(row.ended_at),
    )


def run_view(
    row: PipelineRun, team: str, user: str, steps: Sequence[PipelineStep],
    schedules: Mapping[int, str],
) -> RunView:
    return RunView(
        id=str(row.id), name=row.name, team=team, user=user, state=RunState(row.state),
        priority=row.priority, trigger=row.trigger, params=dict(row.params or {}),
        message=row.message,
        schedule=schedules.get(row.schedule_id) if row.schedule_id is not None else None,
        scheduled_for=_dt(row.scheduled_for),
        parent_run=None if row.parent_run_id is None else str(row.parent_run_id),
        retry_of=None if row.retry_of is None else str(row.retry_of),
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        started_at=_dt(row.started_at), ended_at=_dt(row.ended_at),
        steps=[step_view(s) for s in steps],
    )
