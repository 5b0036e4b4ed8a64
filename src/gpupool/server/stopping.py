"""How a running server stops itself on request (``gpupool down``, ``POST
/api/v1/server/shutdown``), and what it says about the jobs it leaves.

Contract of the three modes (``schemas.server.StopMode``):

- ``leave``: the server stops at once. Running jobs keep running (they are processes of
  their own, not the server's children); the next ``gpupool up`` on the same data dir
  re-adopts them (``server/recovery.py``) and records how they ended.
- ``drain``: no new job starts from now on; the server stops once no job is starting or
  running.
- ``cancel``: as ``drain``, and every running job is cancelled as ``gpupool cancel`` would
  (SIGTERM, SIGKILL after its grace period), including one that starts meanwhile.

In every mode pending jobs stay queued, in the database: they start after the next ``gpupool
up``. A later request may change the mode of a stop in progress (e.g. ``leave`` ends a
drain at once). Each request is audited (``server.shutdown``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sqlalchemy import func, select

from gpupool import __version__
from gpupool.schemas.jobs import Phase
from gpupool.schemas.server import ServerState, StopMode
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job
from gpupool.server.job_store import ACTIVE
from gpupool.server.services import audit, jobs
from gpupool.server.services.errors import ServiceError
from gpupool.server.services.identity import Principal

POLL_S = 0.2


class Holdable(Protocol):
    """What a stop needs of the background loop (``server/controller.py``'s Controller)."""

    def hold(self) -> None:
        """From the next step on, start no job; keep polling, cancelling and recording the
        ones that run."""
        ...

    def wake(self, capacity_changed: bool = False) -> None:
        """Run a step soon (a cancel was asked)."""
        ...


def counts(db: Database) -> tuple[int, int]:
    """(jobs starting or running, jobs pending), as the database says."""
    with db.read() as s:
        rows = s.execute(
            select(Job.phase, func.count()).where(
                Job.phase.in_((Phase.PENDING.value, *ACTIVE))).group_by(Job.phase)
        ).all()
    by_phase = {phase: int(n) for phase, n in rows}
    return sum(by_phase.get(p, 0) for p in ACTIVE), by_phase.get(Phase.PENDING.value, 0)


def jobs_text(n: int, what: str) -> str:
    """``1 running job`` / ``2 running jobs`` / ``no running job``."""
    if n == 0:
        return f"no {what} job"
    return f"{n} {what} job{'s' if n != 1 else ''}"


def _queued(pending: int) -> str:
    if not pending:
        return ""
    verb = "stays" if pending == 1 else "stay"
    return f"; {jobs_text(pending, 'pending')} {verb} queued for the next `gpupool up`"


def plan_text(mode: StopMode, running: int, pending: int) -> str:
    """What a stop in ``mode`` does next, in one sentence (pending jobs stay queued)."""
    one = running == 1
    if not running:
        return f"stopping now: no job is running{_queued(pending)}"
    if mode is StopMode.LEAVE:
        return (f"stopping now; {jobs_text(running, 'running')} "
                f"{'keeps' if one else 'keep'} running and the next `gpupool up` re-adopts "
                f"{'it' if one else 'them'}{_queued(pending)}")
    if mode is StopMode.DRAIN:
        return (f"draining: no new job starts; stopping once {jobs_text(running, 'running')} "
                f"{'has' if one else 'have'} ended{_queued(pending)}")
    whose = "its" if one else "each one's"
    return (f"cancelling {jobs_text(running, 'running')} (SIGTERM, then SIGKILL after "
            f"{whose} grace period), then stopping{_queued(pending)}")


def farewell(why: str, running: int, pending: int, home: Path) -> str:
    """What ``gpupool up`` prints once it stopped (``why``: e.g. "Ctrl-C")."""
    lines = [f"gpupool stopped ({why})."]
    one = running == 1
    if running:
        lines.append(
            f"{jobs_text(running, 'running').capitalize()} {'keeps' if one else 'keep'} "
            f"running without a server: nothing records {'its' if one else 'their'} end or "
            f"enforces {'its' if one else 'their'} limits until the next `gpupool up` on "
            f"{home} re-adopts {'it' if one else 'them'}.")
    else:
        lines.append("No job was running.")
    if pending:
        lines.append(f"{jobs_text(pending, 'pending').capitalize()} "
                     f"{'stays' if pending == 1 else 'stay'} queued for the next `gpupool up`.")
    if running:
        lines.append("To stop with no job left running: `gpupool down --drain` (let them "
                     "finish) or `gpupool down --cancel-jobs`.")
    return "\n".join(lines)


class Stopper:
    """Carries out stop requests (see the module) for the server whose loop is
    ``controller``; ``exit_server()`` makes the HTTP server return (it then stops the loop)."""

    def __init__(self, db: Database, controller: Holdable,
                 exit_server: Callable[[], None]) -> None:
        self.db = db
        self.controller = controller
        self.exit_server = exit_server
        self.mode: StopMode | None = None
        self.requested_by = ""
        self._principal: Principal | None = None
        self._asked: set[int] = set()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def state(self) -> ServerState:
        running, pending = counts(self.db)
        mode = self.mode
        message = plan_text(mode, running, pending) if mode is not None else ""
        return ServerState(version=__version__, stopping=mode, running=running,
                           pending=pending, message=message)

    def begin(self, mode: StopMode, principal: Principal, address: str = "") -> ServerState:
        """Start (or change the mode of) a stop; answers the state right after. The caller
        has checked that ``principal`` is an admin."""
        with self._lock:
            if mode is not StopMode.LEAVE:
                self.controller.hold()
            self.mode = mode
            self.requested_by = principal.user
            self._principal = principal
            with self.db.session() as s:
                audit.record(s, principal.user, "server.shutdown", "server", f"mode {mode}",
                             address)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gpupool-stop",
                                                daemon=True)
                self._thread.start()
        self._wake.set()
        return self.state()

    def _run(self) -> None:
        while self.mode is not StopMode.LEAVE:
            try:
                if self._step():
                    break
            except Exception:  # e.g. the database briefly unavailable: try again
                time.sleep(POLL_S)
            self._wake.wait(POLL_S)
            self._wake.clear()
        self.exit_server()

    def _step(self) -> bool:
        """One look: True once no job is starting or running (cancelling them first in the
        ``cancel`` mode)."""
        with self.db.read() as s:
            running = s.scalars(select(Job.id).where(Job.phase.in_(ACTIVE))).all()
        if not running:
            return True
        if self.mode is StopMode.CANCEL and self._principal is not None:
            for job_id in running:
                if job_id not in self._asked:
                    self._asked.add(job_id)
                    with contextlib.suppress(ServiceError):  # it ended meanwhile
                        jobs.cancel(self.db, self._principal, job_id, self.controller.wake)
        return False
