"""An attempt whose outcome is unknown (its supervisor died and nothing recorded how the
command ended) is reported as "supervisor lost" and never run again, whatever its restart
policy: the command may have done its work. A real failure is still retried. In-process,
with a fake executor."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

import inprocess
from gpupool.executors.base import SUPERVISOR_LOST, Outcome
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.controller import Controller
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job

LOST = Outcome(None, 1.0, lost=True, reason=f"{SUPERVISOR_LOST}: the shim was killed")


def ended_job(tmp_path: Path, outcome: Outcome) -> tuple[Controller, Database, int]:
    """A controller tracking one running job (restart on-failure) whose process ended."""
    spec = JobSpec(command=["/bin/true"], gpus=1, restart="on-failure", max_retries=3)
    return inprocess.running_job(tmp_path, spec, 1, inprocess.EndedExecutor(outcome))


@pytest.mark.parametrize(("outcome", "phase", "retried"), [
    (LOST, Phase.FAILED, False),
    (Outcome(None, 1.0, lost=True, reason="node n0 lost"), Phase.PENDING, True),
    (Outcome(3, 1.0), Phase.PENDING, True),
])
def test_an_unknown_outcome_is_never_run_again(tmp_path: Path, outcome: Outcome, phase: Phase,
                                              retried: bool) -> None:
    controller, db, job_id = ended_job(tmp_path, outcome)
    controller._poll(time.time())
    with db.session() as s:
        row = s.execute(select(Job.phase, Job.reason, Job.failures, Job.exit_code)
                        .where(Job.id == job_id)).one()
    assert row.phase == phase.value, row
    assert (job_id in controller.pending) == retried
    if not retried:
        assert row.reason.startswith(SUPERVISOR_LOST) and "not run again" in row.reason
        assert row.exit_code is None and row.failures == 0
