"""An attempt whose outcome is unknown (its supervisor died and nothing recorded how the
command ended) is reported as "supervisor lost" and never run again, whatever its restart
policy: the command may have done its work. A real failure is still retried. In-process,
with a fake executor."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gpupool.core.cluster import NodeSpec
from gpupool.executors.base import SUPERVISOR_LOST, Handle, Outcome
from gpupool.executors.inventory import LocalInventory, parse_fake_gpus
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.active import Active, to_request
from gpupool.server.controller import Controller
from gpupool.server.cycle import LiveJob
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, User
from gpupool.server.settings import Settings

LOST = Outcome(None, 1.0, lost=True, reason=f"{SUPERVISOR_LOST}: the shim was killed")


class EndedExecutor:
    """Every process it is asked about ended with ``outcome``."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def poll_many(self, handles: list[Handle]) -> list[Outcome | None]:
        return [self.outcome for _ in handles]

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the loop should not call executor.{name} here")


def ended_job(tmp_path: Path, outcome: Outcome) -> tuple[Controller, Database, int]:
    """A controller tracking one running job (restart on-failure) whose process ended."""
    settings = Settings(home=tmp_path, work_dir=tmp_path / "work", tick_seconds=0.1,
                        policy="bestfit")
    db = Database(settings.db_url)
    db.migrate()
    inventory = LocalInventory((NodeSpec("n0", 16000, 65536, parse_fake_gpus("1xA100-80GB")),),
                               {"n0": (0,)}, "fake")
    controller = Controller(settings, db, EndedExecutor(outcome), inventory)  # type: ignore[arg-type]
    spec = JobSpec(command=["/bin/true"], gpus=1, restart="on-failure", max_retries=3)
    now = time.time()
    with db.session() as s:
        team = Team(name="t", quota_milli=1000, created_at=now)
        s.add(team)
        s.flush()
        user = User(name="u", team_id=team.id, created_at=now)
        s.add(user)
        s.flush()
        job = Job(name="j", team_id=team.id, user_id=user.id, queue="t",
                  phase=Phase.RUNNING.value, spec=spec.model_dump(mode="json"), node="n0",
                  gpus=[0], attempts=1, failures=0, created_at=now, started_at=now)
        s.add(job)
        s.flush()
        job_id = job.id
    controller._max_seen = job_id
    request = to_request(job_id, spec, "t", controller.models)
    allocation = controller.scheduler.place_on(0, (0,), request)
    live = LiveJob(job_id, "t", 0, now, request, allocations=(allocation,), started_at=now)
    handle = Handle(str(job_id), 1, 999999, str(tmp_path / "run"), str(tmp_path / "log"), now)
    controller.active[job_id] = Active(live, "j", spec, 1, 0, handles=[handle])
    return controller, db, job_id


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
