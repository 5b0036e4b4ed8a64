"""The middle tier of tests: a real Controller on a real SQLite database, in this process,
with a fake executor, and one job already running on one fake node (as after a recovery).
Fast enough for the controller's logic; the end-to-end tests keep a real server. The setup
is middle_tier.build_controller's."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gpupool.executors.base import Handle, Outcome
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.active import Active, to_request
from gpupool.server.controller import Controller
from gpupool.server.cycle import LiveJob
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, User
from middle_tier import build_controller


class EndedExecutor:
    """Every process it is asked about ended with ``outcome`` (default: exit 0 now); any
    other executor call fails the test."""

    def __init__(self, outcome: Outcome | None = None) -> None:
        self.outcome = outcome

    def poll_many(self, handles: list[Handle]) -> list[Outcome | None]:
        return [self.outcome or Outcome(0, time.time()) for _ in handles]

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the loop should not call executor.{name} here")


def running_job(tmp_path: Path, spec: JobSpec, cards: int,
                executor: Any = None) -> tuple[Controller, Database, int]:
    """A controller (bestfit) over one node with ``cards`` fake A100s and one job of
    ``spec`` running on the first ``spec.gpus`` of them, tracked as active with a made-up
    handle; ``executor`` answers for its processes (default :class:`EndedExecutor`)."""
    _, db, controller = build_controller(tmp_path, 1, cards, executor or EndedExecutor(),
                                         tick_seconds=0.1)
    gpus = tuple(range(cards))
    held = gpus[: int(spec.gpus or 0)]
    now = time.time()
    with db.session() as s:
        team = Team(name="t", quota_milli=1000 * cards, created_at=now)
        s.add(team)
        s.flush()
        user = User(name="u", team_id=team.id, created_at=now)
        s.add(user)
        s.flush()
        job = Job(name="j", team_id=team.id, user_id=user.id, queue="t",
                  phase=Phase.RUNNING.value, spec=spec.model_dump(mode="json"), node="n0",
                  gpus=list(held), attempts=1, failures=0, created_at=now, started_at=now)
        s.add(job)
        s.flush()
        job_id = job.id
    controller._max_seen = job_id
    request = to_request(job_id, spec, "t", controller.models)
    allocation = controller.scheduler.place_on(0, held, request)
    live = LiveJob(job_id, "t", 0, now, request, allocations=(allocation,), started_at=now)
    handle = Handle(str(job_id), 1, 999999, str(tmp_path / "run"), str(tmp_path / "log"), now)
    controller.active[job_id] = Active(live, "j", spec, 1, 0, handles=[handle])
    return controller, db, job_id


def phase_of(db: Database, job_id: int) -> str:
    with db.session() as s:
        return str(s.scalar(select(Job.phase).where(Job.id == job_id)))
