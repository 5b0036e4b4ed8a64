"""The GPU watch's pass (server/gpu_watch.py) on a real SQLite database with a scripted NVML
reading and a fake clock: the board for /metrics, the usage records' measured columns, the
idle flag, a notebook's GPU use told to the notebook watch, and a restarted watch going on
from the records (nothing counted twice). The attempts' "shims" are this test's own process
and its parent, so the real /proc maps the reading's pids to them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from db_backends import database
from gpupool.executors.nvml_sampler import CardReading, NvmlReading, ProcessReading
from gpupool.schemas.jobs import Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, Team, UsageRecord, User
from gpupool.server.gpu_watch import GpuWatch
from gpupool.server.metrics.gpu_board import GpuBoard
from gpupool.server.services.usage_records import open_attempt

GIB = 1 << 30
T0 = 1_700_000_000.0


class Script:
    """A sampler answering the reading the test sets."""

    def __init__(self) -> None:
        self.reading: NvmlReading | None = None
        self.problem = ""

    def read(self) -> NvmlReading | None:
        return self.reading

    def close(self) -> None:
        pass


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    yield from database("sqlite", tmp_path)


def seed(db: Database) -> tuple[int, int]:
    """Team ml; a job (half of card 0) and a notebook (card 1), both running attempt 1."""
    with db.session() as s:
        team = Team(name="ml", quota_milli=0, borrow_limit_milli=0, created_at=T0)
        s.add(team)
        s.flush()
        user = User(name="ada", team_id=team.id, created_at=T0)
        s.add(user)
        s.flush()
        ids = []
        for kind, milli in (("job", 500), ("notebook", 1000)):
            job = Job(name=kind, team_id=team.id, user_id=user.id, queue="ml", kind=kind,
                      phase=Phase.RUNNING.value, spec={"command": ["true"]}, attempts=1,
                      failures=0, created_at=T0)
            s.add(job)
            s.flush()
            open_attempt(s, job.id, 1, team.id, user.id, milli, 0, 0, T0)
            ids.append(job.id)
    return ids[0], ids[1]


def live(job: int, notebook: int) -> Any:
    """The loop's live state as the watch reads it: the job's shim is this process, the
    notebook's this process's parent."""
    def active(pid: int, gpu: int, milli: int) -> Any:
        allocation = SimpleNamespace(node=0, gpus=(gpu,), gpu_milli=milli)
        handle = SimpleNamespace(pid=pid, run_dir=f"/nonexistent/run/{pid}")  # no container
        return SimpleNamespace(handles=[handle], attempt=1,
                               live=SimpleNamespace(allocations=(allocation,)))
    return SimpleNamespace(
        active={job: active(os.getpid(), 0, 500), notebook: active(os.getppid(), 1, 1000)},
        state=SimpleNamespace(names=["n0"]),
        inventory=SimpleNamespace(physical_gpus={"n0": (0, 1)}))


def reading(job_sm: float, notebook_sm: float) -> NvmlReading:
    return NvmlReading(
        (CardReading(0, 0.9, 6 * GIB, 80 * GIB, True),
         CardReading(1, notebook_sm, GIB, 80 * GIB, True)),
        (ProcessReading(os.getpid(), 0, 2 * GIB, job_sm),
         ProcessReading(os.getppid(), 1, GIB, notebook_sm),
         ProcessReading(1, 0, 4 * GIB, 0.4)))  # init: nobody's


def record(db: Database, job: int) -> UsageRecord:
    with db.read() as s:
        found = s.query(UsageRecord).filter(UsageRecord.job_id == job).one()
        s.expunge(found)
        return found


def test_a_pass_publishes_records_flags_and_tells_notebooks(db: Database) -> None:
    job, notebook = seed(db)
    now = [T0 + 100]
    busy: list[tuple[int, float]] = []
    script = Script()
    board = GpuBoard()

    def watch() -> GpuWatch:
        return GpuWatch(db, live(job, notebook), board, interval_s=10, idle_after_s=30,
                        on_busy=lambda j, at: busy.append((j, at)),
                        sampler=script, clock=lambda: now[0])  # type: ignore[arg-type]

    first = watch()
    script.reading = reading(0.25, 0.5)
    first.sample()
    shown = {j.job: j for j in board.board.jobs}
    assert shown[str(job)].utilization == 0.5 and shown[str(job)].team == "ml"
    assert shown[str(job)].memory_bytes == 2 * GIB and not shown[str(job)].idle
    assert board.board.gpus == (("n0", 0, 0.9, 6 * GIB), ("n0", 1, 0.5, GIB))
    assert busy == [(notebook, T0 + 100)]  # the notebook's GPU is busy: activity
    now[0] += 10
    first.sample()
    r = record(db, job)
    assert (r.gpu_seconds_used, r.gpu_measured_s, r.gpu_util_peak, r.gpu_memory_peak_mib,
            r.gpu_idle_since) == (0.5 * 0.5 * 10, 10, 0.5, 2048, None)

    script.reading = reading(0.01, 0.0)  # both under 5 %
    busy.clear()
    for _ in range(4):
        now[0] += 10
        first.sample()
    assert busy == []
    assert record(db, job).gpu_idle_since == T0 + 120  # low since then, 30 s ago
    assert {j.job: j.idle for j in board.board.jobs} == {str(job): True,
                                                         str(notebook): True}

    # a restarted server: the tallies and the idle spell go on from the records
    second = watch()
    now[0] += 10
    second.sample()  # starts its clock: nothing counted for the restart's gap
    before = record(db, job).gpu_seconds_used
    assert before == pytest.approx(2.5 + 0.02 * 0.5 * 40)
    assert record(db, job).gpu_idle_since == T0 + 120
    script.reading = reading(0.25, 0.5)
    now[0] += 10
    second.sample()
    after = record(db, job)
    assert after.gpu_seconds_used == pytest.approx(before + 0.5 * 0.5 * 10)
    assert after.gpu_idle_since is None and after.gpu_measured_s == 60
    assert busy == [(notebook, now[0])]


def test_no_reading_publishes_nothing(db: Database) -> None:
    job, notebook = seed(db)
    script = Script()
    script.problem = "NVML unavailable: Driver Not Loaded"
    board = GpuBoard()
    GpuWatch(db, live(job, notebook), board, 10, 30,
             sampler=script).sample()  # type: ignore[arg-type]
    assert board.board.jobs == () and record(db, job).gpu_measured_s is None
