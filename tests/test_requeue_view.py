"""A requeued job shows as it waits now: no start, end or exit code of the attempt that ran
before (its events keep them). In-process, with a fake executor."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

import inprocess
from gpupool.executors.base import Outcome
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.db.tables import Job, JobEvent
from gpupool.server.services import jobs
from gpupool.server.services.identity import Principal


def test_a_job_requeued_after_a_failure_shows_no_start_time_of_its_last_attempt(
    tmp_path: Path,
) -> None:
    spec = JobSpec(command=["/bin/false"], gpus=1, restart="on-failure",
                   max_retries=2)
    # Only the poll runs (no cycle), so the job stays pending and is not launched again.
    controller, db, job_id = inprocess.running_job(
        tmp_path, spec, 1, inprocess.EndedExecutor(Outcome(1, time.time())))
    with db.session() as s:
        before = s.scalar(select(Job.started_at).where(Job.id == job_id))
    assert before is not None
    controller._poll(time.time())  # the step that ends the attempt
    with db.session() as s:
        row = s.scalars(select(Job).where(Job.id == job_id)).one()
        messages = [e.message for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id))]
        assert (row.phase, row.started_at, row.ended_at, row.exit_code) == (
            Phase.PENDING.value, None, None, None)
        assert row.attempts == 1
    assert any("exit" in m or "failed" in m for m in messages), messages
    view = jobs.get_job(db, Principal(user="u", user_id=1, team="t", team_id=1, admin=True),
                        job_id)
    assert view.phase is Phase.PENDING and view.started_at is None
