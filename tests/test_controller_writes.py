"""The loop never forgets a job before its row is written: a failed write (the database was
briefly unavailable) keeps the job tracked, holding its resources, and the next step writes
it. In-process, with a fake executor and a patched row write."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import inprocess
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.controller import Controller
from gpupool.server.cycle import run_cycle
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job
from gpupool.server.queue_inputs import quota_and_weights
from inprocess import phase_of


def running_job(tmp_path: Path) -> tuple[Controller, Database, int]:
    """A controller with one 2-GPU job running (as recovered after a restart) on 4 GPUs."""
    return inprocess.running_job(tmp_path, JobSpec(command=["/bin/true"], gpus=2), 4)


def test_a_failed_finish_write_keeps_the_job_and_the_next_step_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    controller, db, job_id = running_job(tmp_path)
    real_finish = controller.store.finish
    calls: list[int] = []

    def flaky_finish(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError("database is locked")
        real_finish(*args, **kwargs)

    monkeypatch.setattr(controller.store, "finish", flaky_finish)
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
    running = [controller.active[running_id].live]
    quota = quota_and_weights(controller.db, running).book
    out = run_cycle(controller.scheduler, quota, [live], running)
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
