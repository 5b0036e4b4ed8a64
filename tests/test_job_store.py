"""The job store (server/job_store.py) is the loop's only writer of rows: read from the
source (no other loop module opens a writing session or builds a write) and watched at run
time (every INSERT, UPDATE and DELETE a loop module causes, over a whole job life, is made
inside a JobStore method)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from sqlalchemy import event, select, update

sys.path.insert(0, str(Path(__file__).parent))

import gpupool.server
from fake_executor import ScriptedExecutor
from gpupool.executors.base import Handle
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.controller import Controller
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job, JobEvent, UsageRecord
from inprocess import phase_of
from pool_twin import TeamDef, Twin

SERVER = Path(gpupool.server.__file__).parent
STORE = SERVER / "job_store.py"

ALLOWED_SESSIONS = {
    "stopping.py": "audits a stop request (an API request, written as the services write)",
}
"""Top-level server modules that may open a writing session, and why."""

WRITE_IMPORTS = {
    "sqlalchemy": {"update", "insert", "delete"},
    "gpupool.server.db.tables": {"JobEvent", "UsageRecord", "Node"},
    "gpupool.server.services.usage_records": {"open_attempt", "close_attempt", "close_open"},
}


def writes_in(path: Path) -> list[str]:
    """What in ``path`` could write a row: a writing session opened (``.session()``), or an
    import of a statement builder, an event/usage/node table, or a usage-record writer."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module in WRITE_IMPORTS:
            found += [f"{path.name}:{node.lineno} imports {a.name} from {node.module}"
                      for a in node.names if a.name in WRITE_IMPORTS[node.module]]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "session"):
            found.append(f"{path.name}:{node.lineno} opens a writing session")
    return found


def test_no_loop_module_but_the_store_writes_rows() -> None:
    modules = sorted(p for p in SERVER.glob("*.py") if p != STORE)
    assert {"controller.py", "placing.py", "outcomes.py", "recovery.py",
            "watching.py"} <= {p.name for p in modules}
    found = [w for p in modules if p.name not in ALLOWED_SESSIONS for w in writes_in(p)]
    assert found == []
    for name in ALLOWED_SESSIONS:  # those may open a session, never build a job write
        assert all("opens a writing session" in w for w in writes_in(SERVER / name))


def test_the_source_check_sees_the_stores_writes() -> None:
    found = " ".join(writes_in(STORE))
    for what in ("imports update", "imports JobEvent", "imports open_attempt",
                 "opens a writing session"):
        assert what in found


# -- at run time -----------------------------------------------------------------------


def _writer(frame: FrameType | None) -> tuple[bool, str | None]:
    """(whether a top-level server module is on the stack, the JobStore method on it)."""
    loop, method = False, None
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.parent == SERVER:
            loop = True
            if path == STORE and method is None and frame.f_code.co_name[0] not in "_<":
                method = frame.f_code.co_name
        frame = frame.f_back
    return loop, method


@dataclass
class WriteWatch:
    """Every write statement on ``db``'s engine caused by a loop module: by which JobStore
    method (``by_method``), or from outside the store (``outside``: its statement)."""

    by_method: dict[str, int] = field(default_factory=dict)
    outside: list[str] = field(default_factory=list)

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().split(" ", 1)[0].upper() not in ("INSERT", "UPDATE", "DELETE"):
            return
        loop, method = _writer(sys._getframe(1))
        if not loop:
            return  # the test's own setup (submits, cancel requests)
        if method is None:
            self.outside.append(statement)
        else:
            self.by_method[method] = self.by_method.get(method, 0) + 1


@pytest.fixture
def watch_writes() -> Iterator[tuple[WriteWatch, list[Database]]]:
    """A :class:`WriteWatch` on every database appended to the list it yields."""
    watch, dbs = WriteWatch(), []
    yield watch, dbs
    for db in dbs:
        event.remove(db.engine, "before_cursor_execute", watch)


class Stubborn(ScriptedExecutor):
    """Jobs in ``stubborn`` ignore SIGTERM (their processes end only when killed)."""

    stubborn: set[str]

    def terminate(self, handle: Handle) -> None:
        if handle.job_id not in self.stubborn:
            super().terminate(handle)

    def kill(self, handle: Handle) -> None:
        super().terminate(handle)


def test_every_row_of_a_job_life_is_written_by_the_store(
        tmp_path: Path, watch_writes: tuple[WriteWatch, list[Database]]) -> None:
    """Failed at load, pending with a reason, cancelled pending and running, retried after a
    failure, stopped at its time limit (and killed after the grace), succeeded, preempted
    and requeued, then recovered by a restarted loop: each row write goes through the
    store, and no GPU stays held by a job that ended."""
    watch, dbs = watch_writes
    twin = Twin(tmp_path, nodes=1, cards=2, teams=[TeamDef("a", 2, 0)])
    db, clock = twin.db, twin.clock
    event.listen(db.engine, "before_cursor_execute", watch)
    dbs.append(db)
    executor = Stubborn(clock)
    executor.stubborn = set()
    twin.executor = executor
    c = twin.controller
    c.executor = executor
    c.recover()

    def submit(**spec: Any) -> int:
        return twin.submit("a", JobSpec(command=["true"], **spec))

    def cancel(job_id: int) -> None:
        with db.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(stop_requested="cancel"))

    def step(seconds: float = 0.0) -> None:
        clock.now += seconds
        c.step()

    bad = submit(gpus=1)
    with db.session() as s:  # a row whose spec no longer validates
        s.execute(update(Job).where(Job.id == bad).values(spec={"command": ["true"],
                                                               "unknown": 1}))
    limited = submit(gpus=1, time_limit_s=30, grace_period_s=5)
    retried = submit(gpus=1, restart="on-failure", max_retries=1)
    waits = submit(gpus=2)
    executor.stubborn.add(str(limited))
    step()
    assert phase_of(db, bad) == Phase.FAILED.value
    assert phase_of(db, limited) == phase_of(db, retried) == Phase.RUNNING.value
    assert c.pending[waits].reason  # why it waits is written
    cancel(waits)
    step()
    assert phase_of(db, waits) == Phase.CANCELLED.value
    executor.end(retried, 3)
    step()  # requeued, and placed again at once
    assert phase_of(db, retried) == Phase.RUNNING.value
    step(30)  # the time limit: SIGTERM, which it ignores
    assert c.active[limited].live.stopping == "time-limit"
    step(5)  # the grace is over: SIGKILL
    step()
    assert phase_of(db, limited) == Phase.FAILED.value
    executor.end(retried)
    step()
    assert phase_of(db, retried) == Phase.SUCCEEDED.value
    cancelled = submit(gpus=1)
    step()
    cancel(cancelled)
    step()  # SIGTERM
    step()
    assert phase_of(db, cancelled) == Phase.CANCELLED.value
    low = submit(gpus=2)
    step()
    high = submit(gpus=2, priority=5)
    step()  # the low-priority job is told to stop
    assert c.active[low].live.stopping == "preempt"
    step()
    assert phase_of(db, low) == Phase.PENDING.value
    assert phase_of(db, high) == Phase.RUNNING.value
    assert int(c.state.gpu_total_left[0]) == 0  # the high-priority job holds both

    restarted = Controller(twin.settings, db, executor, c.inventory, clock=clock,
                           launch_threads=0)
    restarted.recover()
    assert list(restarted.active) == [high]
    restarted.step()
    assert watch.outside == []
    assert {"nodes", "finish", "reasons", "bind", "running", "requeue", "stop_asked",
            "event", "adopted"} <= set(watch.by_method)
    with db.session() as s:
        events = s.scalars(select(JobEvent.message).where(JobEvent.job_id == limited)).all()
        open_usage = s.scalars(select(UsageRecord.job_id)
                               .where(UsageRecord.ended_at.is_(None))).all()
    assert "grace period over: SIGKILL sent" in events
    assert open_usage == [high]


def test_the_watch_sees_a_write_made_outside_the_store(
        tmp_path: Path, watch_writes: tuple[WriteWatch, list[Database]]) -> None:
    """The run-time check can fail: a write from a server module other than the store."""
    watch, dbs = watch_writes
    twin = Twin(tmp_path, nodes=1, cards=1, teams=[TeamDef("a", 1, 0)])
    event.listen(twin.db.engine, "before_cursor_execute", watch)
    dbs.append(twin.db)
    job_id = twin.submit("a", JobSpec(command=["true"]))
    code = compile("with db.session() as s:\n"
                   "    s.add(JobEvent(job_id=job_id, at=0.0, phase='pending', message='x'))\n",
                   str(SERVER / "elsewhere.py"), "exec")
    exec(code, {"db": twin.db, "JobEvent": JobEvent, "job_id": job_id})
    assert len(watch.outside) == 1 and watch.outside[0].startswith("INSERT INTO job_events")
    assert watch.by_method == {}
