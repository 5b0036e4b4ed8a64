"""The ``pipeline`` step executor: a nested definition runs as a child run (dispatched at
once, outside the queue's limit, so a parent never waits for a slot its own children need).
The step's outputs are the child's ``outputs`` templates over the child's step outputs."""

from __future__ import annotations

from sqlalchemy import select, update

from gpupool.schemas.pipelines import PipelineSpec, RunState
from gpupool.server.db.database import Database
from gpupool.server.db.pipeline_tables import PipelineRun, PipelineStep
from gpupool.server.pipelines import runs
from gpupool.server.pipelines.dag import render_any
from gpupool.server.pipelines.steps import RUNNING, Attempt, Handle, Status, append_log
from gpupool.server.services.errors import ServiceError


class NestedSteps:
    def __init__(self, db: Database, missing: runs.Missing) -> None:
        self.db = db
        self.missing = missing

    def create(self, attempt: Attempt) -> Handle:
        assert attempt.child is not None
        return dict(attempt.child)

    def _tag(self, attempt: Attempt) -> str:
        return f"{attempt.step.name}#{attempt.number}"

    def start(self, attempt: Attempt, handle: Handle) -> Handle:
        with self.db.session() as s:
            found = s.scalar(select(PipelineRun.id).where(
                PipelineRun.parent_run_id == attempt.run_id,
                PipelineRun.parent_step == self._tag(attempt)))
        if found is None:
            spec = PipelineSpec.model_validate(handle["spec"])
            new = runs.NewRun(spec, dict(handle["params"]), attempt.priority, "parent",
                              parent_run_id=attempt.run_id, parent_step=self._tag(attempt))
            try:
                found = runs.insert_run(self.db, attempt.principal, new, self.missing)
            except ServiceError as exc:
                return {**handle, "error": exc.message}
            append_log(attempt, f"child run {found} of {spec.name} started")
        return {**handle, "child_run": found}

    def status(self, attempt: Attempt, handle: Handle) -> Status:
        if "error" in handle:
            return Status("failed", "error", handle["error"])
        child = int(handle["child_run"])
        with self.db.session() as s:
            run = s.get(PipelineRun, child)
            if run is None:
                return Status("failed", "error", f"child run {child} is gone")
            state = RunState(run.state)
            steps = s.scalars(select(PipelineStep).where(PipelineStep.run_id == child)).all()
            spec = PipelineSpec.model_validate(run.spec)
        if not state.final:
            return RUNNING
        append_log(attempt, f"child run {child} {state.value}")
        if state != RunState.SUCCEEDED:
            return Status("failed", "failure" if state == RunState.FAILED else "error",
                          f"child run {child} {state.value}")
        values: dict[str, object] = {}
        for st in steps:
            values.update({f"steps.{st.name}.outputs.{k}": v for k, v in st.outputs.items()})
            values.update({f"steps.{st.name}.files.{k}": v for k, v in st.files.items()})
        outputs = {k: render_any(v, values) for k, v in spec.outputs.items()
                   if k in attempt.step.outputs}
        return Status("succeeded", message=f"child run {child} succeeded", outputs=outputs)

    def stop(self, attempt: Attempt, handle: Handle) -> None:
        if "child_run" in handle:
            with self.db.session() as s:
                s.execute(update(PipelineRun).where(PipelineRun.id == int(handle["child_run"]))
                          .values(cancel_requested=True))

    def delete(self, attempt: Attempt, handle: Handle) -> None:
        """Nothing is held: the child run is kept as history."""
