"""Drive one running pipeline run toward a final state, one pass at a time.

Each pass (idempotent; every decision is written before acting on the next step):

1. a cancel request stops in-flight steps and cancels the rest;
2. in-flight steps are polled: success collects outputs; failure retries (after backoff)
   when the step's retry policy allows it, else the step fails; past its timeout a step is
   stopped and fails with kind ``timeout``;
3. ``fail_fast``: a failed step (without ``allow_failure``) stops the in-flight steps and
   skips the waiting ones; ``continue``: only its dependents are skipped;
4. waiting steps whose dependencies all succeeded (or failed with ``allow_failure``) start;
5. once every step is final, the run ends (succeeded iff no step failed or was skipped).

Everything is read from the database on each pass, so a pass after a restart simply goes on
where the last one stopped; executors make ``start`` safe to repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from gpupool.schemas.pipelines import PipelineSpec, RunState, StepSpec, StepState
from gpupool.server.db.database import Database
from gpupool.server.db.pipeline_tables import PipelineRun, PipelineStep
from gpupool.server.db.tables import Team, User
from gpupool.server.launcher import Owner
from gpupool.server.pipelines.dag import references, render, render_any
from gpupool.server.pipelines.outputs import OutputError, attempt_dir, collect, files_dir
from gpupool.server.pipelines.runs import dump
from gpupool.server.pipelines.secrets import SecretStore, mask_terms
from gpupool.server.pipelines.steps import Attempt, Status, StepExecutor
from gpupool.server.services.errors import ServiceError
from gpupool.server.services.identity import Principal

log = logging.getLogger("gpupool.pipelines")
IN_FLIGHT = (StepState.STARTING.value, StepState.RUNNING.value)
PENDING = (StepState.WAITING.value, StepState.RETRYING.value)


class Reconciler:
    def __init__(self, db: Database, base: Path, executors: Mapping[str, StepExecutor],
                 store: SecretStore, clock: Callable[[], float] = time.time,
                 work_base: Path | None = None, runner: list[str] | None = None) -> None:
        """``base``: the server's pipeline dir (logs); ``work_base``: where command steps'
        own directories and stored file outputs live (owned by the runs' accounts; default
        ``base``); ``runner``: how such an account starts ``masked_run``."""
        self.db = db
        self.base = base
        self.work_base = work_base or base
        self.runner = runner
        self._owners: dict[int, Owner] = {}
        self.executors = executors
        self.store = store
        self.clock = clock

    # -- one pass ------------------------------------------------------------------------

    def reconcile(self, run_id: int) -> None:
        with self.db.session() as s:
            run = s.get(PipelineRun, run_id)
            if run is None or run.state != RunState.RUNNING.value:
                return
            steps = list(s.scalars(select(PipelineStep).where(PipelineStep.run_id == run_id)
                                   .order_by(PipelineStep.id)).all())
        spec = PipelineSpec.model_validate(run.spec)
        specs = {st.name: st for st in spec.steps}
        who = self._principal(run)
        now = self.clock()
        if run.cancel_requested:
            self._halt(run, steps, specs, who, StepState.CANCELLED, "cancelled")
            self._finish(run, RunState.CANCELLED, run.message or "cancelled")
            return
        for row in steps:
            if row.state in IN_FLIGHT:
                self._advance(run, row, specs[row.name], who, now)
        blocked = {r.name for r in steps if r.state == StepState.FAILED.value
                   and not specs[r.name].allow_failure}
        if blocked and spec.on_failure == "fail_fast":
            first = sorted(blocked)[0]
            self._halt(run, steps, specs, who, StepState.SKIPPED,
                       f"not run: step {first} failed (fail_fast)")
        self._skip_blocked(steps, specs)
        for row in steps:
            if row.state in PENDING and self._ready(row, steps, specs, now):
                self._launch(run, row, specs[row.name], steps, who, now)
        if all(StepState(r.state).final for r in steps):
            bad = [r.name for r in steps if r.state in (StepState.SKIPPED.value,
                   StepState.CANCELLED.value) or (r.state == StepState.FAILED.value
                   and not specs[r.name].allow_failure)]
            failed = [r.name for r in steps if r.state == StepState.FAILED.value]
            if bad:
                self._finish(run, RunState.FAILED, f"failed: step(s) {', '.join(failed)}")
            else:
                self._finish(run, RunState.SUCCEEDED, "succeeded")

    # -- helpers -------------------------------------------------------------------------

    def _principal(self, run: PipelineRun) -> Principal:
        with self.db.session() as s:
            row = s.execute(select(User.name, User.admin, Team.name)
                            .join(Team, Team.id == run.team_id)
                            .where(User.id == run.user_id)).one()
        return Principal(run.user_id, row[0], run.team_id, row[2], bool(row[1]))

    def attempt(self, run: PipelineRun, row: PipelineStep, step: StepSpec, who: Principal,
                number: int) -> Attempt:
        """The attempt as status/stop/delete need it (nothing rendered)."""
        attempt = Attempt(run.id, run.name, step, number,
                          attempt_dir(self.base, run.id, row.name, number), who, run.priority)
        attempt.owner = self._owner(run.user_id)
        attempt.work = attempt_dir(self.work_base, run.id, row.name, number)
        if self.runner:
            attempt.runner = list(self.runner)
        return attempt

    def _owner(self, user_id: int) -> Owner:
        """The run's user and Unix account (remembered: a user's mapping does not change)."""
        if user_id not in self._owners:
            with self.db.session() as s:
                row = s.execute(select(User.name, User.unix_user, User.unix_created)
                                .where(User.id == user_id)).one()
            self._owners[user_id] = Owner(row[0], row[1], bool(row[2]))
        return self._owners[user_id]

    def _save(self, row: PipelineStep, **values: Any) -> None:
        for key, value in values.items():
            setattr(row, key, value)
        with self.db.session() as s:
            s.execute(update(PipelineStep).where(PipelineStep.id == row.id).values(**values))

    def _finish(self, run: PipelineRun, state: RunState, message: str) -> None:
        with self.db.session() as s:
            s.execute(update(PipelineRun).where(PipelineRun.id == run.id).values(
                state=state.value, message=message, ended_at=self.clock()))
        log.info("pipeline run %s %s", run.id, state.value)

    def _halt(self, run: PipelineRun, steps: list[PipelineStep], specs: Mapping[str, StepSpec],
              who: Principal, pending_to: StepState, message: str) -> None:
        """Stop in-flight steps (cancelled) and end the pending ones as ``pending_to``."""
        now = self.clock()
        for row in steps:
            if row.state in IN_FLIGHT:
                ex = self.executors[row.kind]
                attempt = self.attempt(run, row, specs[row.name], who, row.attempt)
                handle = row.handle or {}
                try:
                    ex.stop(attempt, handle)
                    ex.delete(attempt, handle)
                except Exception:  # stopping is best effort; the step ends either way
                    log.exception("run %s step %s: stop failed", run.id, row.name)
                self._save(row, state=StepState.CANCELLED.value, ended_at=now,
                           message=f"stopped: {message}")
            elif row.state in PENDING:
                self._save(row, state=pending_to.value, ended_at=now, message=message)

    def _skip_blocked(self, steps: list[PipelineStep], specs: Mapping[str, StepSpec]) -> None:
        state = {r.name: r.state for r in steps}
        changed = True
        while changed:
            changed = False
            for row in steps:
                if row.state not in PENDING:
                    continue
                for dep in row.depends_on:
                    dead = state[dep] in (StepState.SKIPPED.value, StepState.CANCELLED.value) or (
                        state[dep] == StepState.FAILED.value and not specs[dep].allow_failure)
                    if dead:
                        self._save(row, state=StepState.SKIPPED.value, ended_at=self.clock(),
                                   message=f"not run: upstream step {dep} {state[dep]}")
                        state[row.name] = row.state
                        changed = True
                        break

    def _ready(self, row: PipelineStep, steps: list[PipelineStep],
               specs: Mapping[str, StepSpec], now: float) -> bool:
        state = {r.name: r.state for r in steps}
        for dep in row.depends_on:
            ok = StepState(state[dep]).ok or (state[dep] == StepState.FAILED.value
                                              and specs[dep].allow_failure)
            if not ok:
                return False
        return row.next_try_at is None or row.next_try_at <= now

    def _values(self, run: PipelineRun, steps: list[PipelineStep]) -> dict[str, Any]:
        values: dict[str, Any] = {f"params.{k}": v for k, v in (run.params or {}).items()}
        for st in steps:
            values.update({f"steps.{st.name}.outputs.{k}": v for k, v in st.outputs.items()})
            values.update({f"steps.{st.name}.files.{k}": v for k, v in st.files.items()})
        return values

    def _render(self, run: PipelineRun, row: PipelineStep, step: StepSpec,
                steps: list[PipelineStep], who: Principal, number: int) -> Attempt:
        values = self._values(run, steps)
        attempt = self.attempt(run, row, step, who, number)
        env = {"GPUPOOL_OUTPUTS": str(attempt.outputs_dir), "GPUPOOL_RUN_ID": str(run.id),
               "GPUPOOL_PIPELINE": run.name, "GPUPOOL_STEP": step.name,
               "GPUPOOL_STEP_ATTEMPT": str(number)}
        env.update({k: render(v, values) for k, v in step.env.items()})
        env.update({k: render(v, values) for k, v in step.inputs.items()})
        attempt.env = env
        attempt.argv = [render(a, values) for a in step.argv]
        attempt.workdir = render(step.workdir, values) if step.workdir else None
        if step.http is not None:
            # secrets stay templates here: the HTTP worker resolves them and stores nothing
            keep = dict(values)
            keep.update({e: f"${{{{ {e} }}}}" for v in step.http.headers.values()
                         for e in references(v) if e.startswith("secrets.")})
            call = step.http.model_dump(mode="json")
            call["url"] = render(call["url"], values)
            call["headers"] = {k: render(v, keep) for k, v in call["headers"].items()}
            call["body"] = render_any(call["body"], values)
            attempt.http = call
        if step.pipeline is not None:
            attempt.child = {"spec": dump(step.pipeline),
                             "params": render_any(dict(step.with_), values)}
        names = [ref.name for ref in step.secrets]
        attempt.secrets = self.store.values(who.team_id, names)
        attempt.mask = mask_terms(attempt.secrets.values())
        return attempt

    def _launch(self, run: PipelineRun, row: PipelineStep, step: StepSpec,
                steps: list[PipelineStep], who: Principal, now: float) -> None:
        number = row.attempt + 1
        self._save(row, state=StepState.STARTING.value, attempt=number, handle=None,
                   next_try_at=None, started_at=row.started_at or now,
                   message=f"starting attempt {number}")
        self._start(run, row, step, steps, who, now)

    def _start(self, run: PipelineRun, row: PipelineStep, step: StepSpec,
               steps: list[PipelineStep], who: Principal, now: float) -> None:
        ex = self.executors[row.kind]
        try:
            if row.handle is None:
                attempt = self._render(run, row, step, steps, who, row.attempt)
                self._save(row, handle=ex.create(attempt))
            else:
                attempt = self.attempt(run, row, step, who, row.attempt)
            assert row.handle is not None
            handle = ex.start(attempt, row.handle)
        except (KeyError, ServiceError, OSError, ValueError) as exc:
            message = exc.message if isinstance(exc, ServiceError) else f"{exc}"
            self._attempt_failed(row, step, Status("failed", "error",
                                                   f"could not start: {message}"), now)
            return
        deadline = now + step.timeout_s if step.timeout_s else None
        self._save(row, handle=handle, state=StepState.RUNNING.value, deadline=deadline,
                   message=f"attempt {row.attempt} running")

    def _advance(self, run: PipelineRun, row: PipelineStep, step: StepSpec, who: Principal,
                 now: float) -> None:
        if row.state == StepState.STARTING.value:  # the server stopped while starting it
            if row.handle is not None:
                self._start(run, row, step, [], who, now)
            else:
                self._restart_render(run, row, step, who, now)
            return
        ex = self.executors[row.kind]
        attempt = self.attempt(run, row, step, who, row.attempt)
        handle = row.handle or {}
        status = ex.status(attempt, handle)
        if status.state == "running":
            if row.deadline is not None and now >= row.deadline:
                ex.stop(attempt, handle)
                ex.delete(attempt, handle)
                self._attempt_failed(row, step, Status(
                    "failed", "timeout", f"timed out after {step.timeout_s:g} s"), now)
            return
        ex.delete(attempt, handle)
        if status.state == "failed":
            self._attempt_failed(row, step, status, now)
            return
        outputs, files = dict(status.outputs), dict[str, str]()
        if row.kind in ("job", "shell"):
            try:
                outputs, files = collect(attempt.outputs_dir, step,
                                         files_dir(self.work_base, run.id, row.name))
            except OutputError as exc:
                self._attempt_failed(row, step, Status("failed", "failure", str(exc)), now)
                return
        self._save(row, state=StepState.SUCCEEDED.value, outputs=outputs, files=files,
                   ended_at=now, deadline=None,
                   message=status.message or f"succeeded on attempt {row.attempt}")

    def _restart_render(self, run: PipelineRun, row: PipelineStep, step: StepSpec,
                        who: Principal, now: float) -> None:
        with self.db.session() as s:
            steps = list(s.scalars(select(PipelineStep).where(PipelineStep.run_id == run.id)))
        self._start(run, row, step, steps, who, now)

    def _attempt_failed(self, row: PipelineStep, step: StepSpec, status: Status,
                        now: float) -> None:
        retry = step.retry
        if status.kind in retry.when and row.attempt <= retry.count:
            delay = min(retry.max_backoff_s, retry.backoff_s * retry.factor ** (row.attempt - 1))
            self._save(row, state=StepState.RETRYING.value, next_try_at=now + delay,
                       deadline=None, message=f"attempt {row.attempt} failed ({status.message}); "
                       f"retry {row.attempt} of {retry.count} in {delay:g} s")
            return
        tries = f"after {row.attempt} attempts" if row.attempt > 1 else "on attempt 1"
        self._save(row, state=StepState.FAILED.value, ended_at=now, deadline=None,
                   message=f"failed {tries}: {status.message} [{status.kind}]")
