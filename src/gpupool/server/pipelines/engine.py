"""The pipeline engine: one background thread beside the job controller.

Each pass (on a short tick, or at once when woken by the API):

1. schedules: runs for cron firings that are due (catch-up after downtime, concurrency);
2. dispatcher: queued top-level runs start in priority order (highest first, then oldest),
   while fewer than ``GPUPOOL_PIPELINE_MAX_RUNS`` (default 8) run; nested runs start at once;
3. reconciler: every running run makes progress (reconciler.py).

All state is in the database, so after a restart (kill -9 included) the first pass carries
on every run where it was. ``GPUPOOL_PIPELINE_CLOCK_FILE``, when set, names a file holding
the UNIX time the cron logic sees (tests simulate downtime with it, without sleeping).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from sqlalchemy import func, select, update

from gpupool.executors.local import LocalExecutor
from gpupool.schemas.pipelines import RunState
from gpupool.server.db.database import Database
from gpupool.server.db.pipeline_tables import PipelineRun
from gpupool.server.pipelines import schedules
from gpupool.server.pipelines.http_guard import HttpGuard
from gpupool.server.pipelines.reconciler import Reconciler
from gpupool.server.pipelines.secrets import SecretStore
from gpupool.server.pipelines.step_http import HttpSteps
from gpupool.server.pipelines.step_job import JobSteps
from gpupool.server.pipelines.step_nested import NestedSteps
from gpupool.server.pipelines.step_remote import RemoteFiles
from gpupool.server.pipelines.step_shell import ShellSteps
from gpupool.server.pipelines.steps import StepExecutor
from gpupool.server.workspace import Workspace

log = logging.getLogger("gpupool.pipelines")
CLOCK_FILE_ENV = "GPUPOOL_PIPELINE_CLOCK_FILE"
MAX_RUNS_ENV = "GPUPOOL_PIPELINE_MAX_RUNS"


def cron_clock() -> float:
    """Now, as the cron logic sees it: the clock file's time when one is configured."""
    path = os.environ.get(CLOCK_FILE_ENV, "")
    if path:
        try:
            return float(Path(path).read_text().strip())
        except (OSError, ValueError):
            log.warning("cannot read the clock file %s; using the wall clock", path)
    return time.time()


class PipelineEngine:
    def __init__(self, home: Path, db: Database, models: Callable[[], Sequence[str]],
                 wake_jobs: Callable[[], None], tick_seconds: float = 0.5,
                 http_guard: HttpGuard | None = None,
                 shell_executor: LocalExecutor | None = None,
                 workspace: Workspace | None = None,
                 remote_files: RemoteFiles | None = None) -> None:
        """``shell_executor`` runs shell steps (the server's, isolating them like jobs);
        ``workspace``: where steps' own directories live (default: under ``home``);
        ``remote_files``: job steps run on other machines' nodes (Ray), their files travel
        with them."""
        self.db = db
        self.tick_seconds = tick_seconds
        self.store = SecretStore(db, home)
        self.max_runs = int(os.environ.get(MAX_RUNS_ENV, "8") or 8)
        executors: dict[str, StepExecutor] = {
            "shell": ShellSteps(shell_executor or LocalExecutor()),
            "job": JobSteps(db, models, wake_jobs, remote_files),
            "http": HttpSteps(self.secret_values, http_guard),
            "pipeline": NestedSteps(db, self.missing_secrets),
        }
        self.base = home / "pipelines"
        self.reconciler = Reconciler(
            db, self.base, executors, self.store,
            work_base=workspace.pipelines if workspace is not None else None,
            runner=workspace.masked_runner() if workspace is not None else None)
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def secret_values(self, team_id: int, names: Iterable[str]) -> dict[str, str]:
        return self.store.values(team_id, names)

    def missing_secrets(self, team_id: int, names: Iterable[str]) -> list[str]:
        return self.store.missing(team_id, names)

    def cron_now(self) -> float:
        return cron_clock()

    # -- lifecycle -----------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpupool-pipelines",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._halt.is_set():
            try:
                self.step()
            except Exception:  # the loop must survive any one bad pass
                log.exception("pipeline engine pass failed")
            self._wake.wait(self.tick_seconds)
            self._wake.clear()

    # -- one pass ------------------------------------------------------------------------

    def step(self) -> None:
        with self._lock:
            schedules.fire(self.db, cron_clock(), self.missing_secrets, self.wake)
            self._dispatch()
            with self.db.session() as s:
                running = list(s.scalars(select(PipelineRun.id).where(
                    PipelineRun.state == RunState.RUNNING.value).order_by(PipelineRun.id)))
            for run_id in running:
                try:
                    self.reconciler.reconcile(run_id)
                except Exception:  # one broken run must not stop the others
                    log.exception("pipeline run %s: reconcile failed", run_id)

    def _dispatch(self) -> None:
        with self.db.session() as s:
            busy = s.scalar(select(func.count()).select_from(PipelineRun).where(
                PipelineRun.state == RunState.RUNNING.value,
                PipelineRun.parent_run_id.is_(None))) or 0
            queued = s.execute(select(PipelineRun.id, PipelineRun.parent_run_id).where(
                PipelineRun.state == RunState.QUEUED.value)
                .order_by(PipelineRun.priority.desc(), PipelineRun.id)).all()
            now = time.time()
            for run_id, parent in queued:
                if parent is None:
                    if busy >= self.max_runs:
                        continue
                    busy += 1
                s.execute(update(PipelineRun).where(PipelineRun.id == run_id).values(
                    state=RunState.RUNNING.value, started_at=now, message="running"))
