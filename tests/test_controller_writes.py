"""The loop never forgets a job before its row is written: a failed write (the database was
briefly unavailable) keeps the job tracked, holding its resources, and the next step writes
it. In-process, with a fake executor and a patched row write."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import gpupool.server.outcomes as outcomes_module
from gpupool.core.cluster import NodeSpec
from gpupool.executors.base import Handle, Outcome
from gpupool.executors.inventory import LocalInventory, parse_fake_gpus
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.active import Active, to_request
from gpupool.server.controller import Controller
from gpupool.server.cycle import LiveJob, run_cycle
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, User
from gpupool.server.settings import Settings


class EndedExecutor:
    """Every process it is asked about has ended with exit code 0."""

    def poll_many(self, handles: list[Handle]) -> list[Outcome | None]:
        return [Outcome(0, time.time()) for _ in handles]

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the loop should not call executor.{name} here")


def running_job(tmp_path: Path) -> tuple[Controller, Database, int]:
    """A controller with one job running (as recovered after a restart) on a 4-GPU node."""
    settings = Settings(home=tmp_path, work_dir=tmp_path / "work", tick_seconds=0.1,
                        policy="bestfit")
    db = Database(settings.db_url)
    db.migrate()
    inventory = LocalInventory((NodeSpec("n0", 16000, 65536, parse_fake_gpus("4xA100-80GB")),),
                               {"n0": (0, 1, 2, 3)}, "fake")
    controller = Controller(settings, db, EndedExecutor(), inventory)  # type: ignore[arg-type]
    spec = JobSpec(command=["/bin/true"], gpus=2)
    now = time.time()
    with db.session() as s:
        team = Team(name="t", quota_milli=4000, created_at=now)
        s.add(team)
        s.flush()
        user = User(name="u", team_id=team.id, created_at=now)
        s.add(user)
        s.flush()
        job = Job(name="j", team_id=team.id, user_id=user.id, queue="t",
                  phase=Phase.RUNNING.value, spec=spec.model_dump(mode="json"), node="n0",
                  gpus=[0, 1], attempts=1, created_at=now, started_at=now)
        s.add(job)
        s.flush()
        job_id = job.id
    controller._max_seen = job_id
    request = to_request(job_id, spec, "t", controller.models)
    allocation = controller.scheduler.place_on(0, (0, 1), request)
    live = LiveJob(job_id, "t", 0, now, request, allocations=(allocation,), started_at=now)
    handle = Handle(str(job_id), 1, 999999, str(tmp_path / "run"), str(tmp_path / "log"), now)
    controller.active[job_id] = Active(live, "j", spec, 1, 0, handles=[handle])
    return controller, db, job_id


def phase_of(db: Database, job_id: int) -> str:
    with db.session() as s:
        return str(s.scalar(select(Job.phase).where(Job.id == job_id)))


def test_a_failed_finish_write_keeps_the_job_and_the_next_step_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    controller, db, job_id = running_job(tmp_path)
    real_finish = outcomes_module.finish
    calls: list[int] = []

    def flaky_finish(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("database is locked")
        real_finish(*args, **kwargs)

    monkeypatch.setattr(outcomes_module, "finish", flaky_finish)
    controller.step()
    assert job_id in controller.active  # not forgotten
    assert phase_of(db, job_id) == "running"
    assert int(controller.state.gpu_total_left[0]) == 2000  # still holds its GPUs
    controller.step()  # fails again: still tracked, logged once
    assert job_id in controller.active
    assert sum("could not record its end" in r.getMessage() for r in caplog.records) == 1
    controller.step()
    assert phase_of(db, job_id) == "succeeded"
    assert job_id not in controller.active
    assert int(controller.state.gpu_total_left[0]) == 4000
    assert len(calls) == 3


def test_a_stored_spec_past_todays_bounds_fails_that_job_only(tmp_path: Path) -> None:
    """A row written before the bounds existed (memory 1e20 MiB) fails with a reason; the
    loop goes on and schedules the job after it."""
    controller, db, running_id = running_job(tmp_path)
    del running_id  # only the pending rows matter here
    now = time.time()
    with db.session() as s:
        team_id, user_id = s.execute(select(Job.team_id, Job.user_id)).first()  # type: ignore[misc]
        rows = [Job(name=name, team_id=team_id, user_id=user_id, queue="t",
                    phase=Phase.PENDING.value, spec=spec, created_at=now)
                for name, spec in (
                    ("bad", {"command": ["/bin/true"], "nodes": 2, "gpus": 1,
                             "memory": 10**20}),
                    ("good", {"command": ["/bin/true"], "gpus": 1}))]
        s.add_all(rows)
        s.flush()
        bad, good = rows[0].id, rows[1].id
    controller._load_pending()
    with db.session() as s:
        phase, reason = s.execute(select(Job.phase, Job.reason).where(Job.id == bad)).one()
    assert phase == "failed"
    assert reason.startswith("cannot be scheduled: memory: ") and "64 TiB" in reason
    assert list(controller.pending) == [good]


def test_a_failed_bind_write_leaves_the_placed_job_pending_and_holding_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, db, running_id = running_job(tmp_path)
    with db.session() as s:
        team_id, user_id = s.execute(select(Job.team_id, Job.user_id)).first()  # type: ignore[misc]
        row = Job(name="p", team_id=team_id, user_id=user_id, queue="t",
                  phase=Phase.PENDING.value, spec={"command": ["/bin/true"], "gpus": 2},
                  created_at=time.time())
        s.add(row)
        s.flush()
        job_id = row.id
    controller._load_pending()
    live = controller.pending[job_id]
    out = run_cycle(controller.scheduler, controller.quota_book(), [live], [
        controller.active[running_id].live])
    assert out.placed == [live]
    assert int(controller.state.gpu_total_left[0]) == 0

    def unavailable() -> Any:
        raise RuntimeError("could not connect to server")

    monkeypatch.setattr(db, "session", unavailable)
    with pytest.raises(RuntimeError):
        controller._bind(out.placed, time.time())
    monkeypatch.undo()
    assert live.allocations == ()
    assert job_id in controller.pending and job_id not in controller.active
    assert int(controller.state.gpu_total_left[0]) == 2000  # only the running job's GPUs
    assert phase_of(db, job_id) == "pending"
