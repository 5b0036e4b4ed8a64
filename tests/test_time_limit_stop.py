"""The server stops a job at its time limit (SIGTERM, SIGKILL after the grace) and records
it as failed, with the limit in the reason; its usage record ends then."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parent))

from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.db.tables import Job, UsageRecord
from inprocess import phase_of
from pool_twin import TeamDef, Twin


def test_a_job_is_stopped_at_its_time_limit(tmp_path: Path) -> None:
    twin = Twin(tmp_path, nodes=1, cards=2, teams=[TeamDef("a", 2, 0)])
    c = twin.controller
    start = twin.clock.now
    job = twin.submit("a", JobSpec(command=["sleep", "1000"], gpus=1, time_limit_s=60,
                                   grace_period_s=5))
    free = twin.submit("a", JobSpec(command=["sleep", "1000"], gpus=1))
    c.step()
    assert phase_of(twin.db, job) == phase_of(twin.db, free) == Phase.RUNNING.value
    twin.clock.now = start + 59
    c.step()
    assert phase_of(twin.db, job) == Phase.RUNNING.value  # not yet
    twin.clock.now = start + 60
    c.step()  # the limit: SIGTERM (the scripted process exits on it)
    assert c.active[job].live.stopping == "time-limit"
    twin.clock.now = start + 61
    c.step()
    assert phase_of(twin.db, job) == Phase.FAILED.value
    assert phase_of(twin.db, free) == Phase.RUNNING.value  # no limit: runs on
    with twin.db.session() as s:
        reason = s.scalar(select(Job.reason).where(Job.id == job))
        ended = s.scalar(select(UsageRecord.ended_at).where(UsageRecord.job_id == job))
    assert reason is not None and reason.startswith("stopped at its time limit of 60 s")
    assert ended == start + 61
