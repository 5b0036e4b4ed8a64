"""The ``job`` step executor: the step is submitted as a normal gpupool job through the jobs
service (so it waits in its queue and is placed like any job) and followed by its id.

A step is bound to its job by id, never by name. The job's name ``pl<run>-<step>-<attempt>``
is only a label for people: anyone may submit a job of that name before the run exists, so
the engine never looks jobs up by it. Instead ``create`` writes a server-made *origin*
``pipeline:<run>:<step>:<attempt>:<nonce>`` into the handle (stored before ``start`` is
called), and ``start`` submits the job with it in ``jobs.origin``, a column only the server
sets (the API body has no such field) and that is unique. After a crash between submitting
and recording the id, ``start`` finds the job by that origin *and* the run's user
(``jobs.find_by_origin``) instead of submitting twice; the random nonce keeps a re-used run
id from matching an older job. A handle from before origins existed (no ``origin`` key) gets
one on its first ``start``: such an attempt may be submitted a second time, never adopted.

Secrets never go into the job's spec (the jobs API shows it): the command runs under
``masked_run``, which reads them from the attempt's 0600 file.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Job
from gpupool.server.pipelines.step_remote import OUTPUTS, RemoteFiles
from gpupool.server.pipelines.steps import (
    RUNNING,
    Attempt,
    Handle,
    Status,
    drop_secrets,
    prepare_command,
)
from gpupool.server.services import jobs
from gpupool.server.services.errors import Conflict, NotFound, ServiceError

JOB_FILE = "job"


def job_name(attempt: Attempt) -> str:
    """The job's name: a label for people, never used to find the job."""
    return f"pl{attempt.run_id}-{attempt.step.name}-{attempt.number}"[:100]


def job_origin(attempt: Attempt) -> str:
    """A fresh origin for the attempt's job (see the module docstring)."""
    return (f"pipeline:{attempt.run_id}:{attempt.step.name}:{attempt.number}:"
            f"{secrets.token_hex(8)}")


class JobSteps:
    def __init__(
        self, db: Database, models: Callable[[], Sequence[str]], wake: Callable[[], None],
        remote: RemoteFiles | None = None,
    ) -> None:
        """``remote``: the pool's nodes are other machines (Ray): steps' files travel with
        them (pipelines/step_remote.py)."""
        self.db = db
        self.models = models
        self.wake = wake
        self.remote = remote

    def create(self, attempt: Attempt) -> Handle:
        code = self.remote.ship(attempt) if self.remote is not None else None
        argv = prepare_command(attempt)
        res = attempt.step.resources
        spec = JobSpec(
            command=argv, name=job_name(attempt), gpus=res.gpus, gpu_memory=res.gpu_memory,
            gpu_model=res.gpu_model, cpu=res.cpu, memory=res.memory, queue=res.queue,
            priority=attempt.priority, env=attempt.env,
            workdir=None if code else attempt.workdir or str(attempt.own_dir),
            image=attempt.step.image, code=code, artifacts=[OUTPUTS + "/"] if code else [],
            restart="never", max_retries=0, grace_period_s=10,
        )
        return {"spec": spec.model_dump(mode="json"), "origin": job_origin(attempt)}

    def start(self, attempt: Attempt, handle: Handle) -> Handle:
        if "job_id" in handle or "error" in handle:
            return handle
        origin = str(handle.get("origin") or job_origin(attempt))
        handle = {**handle, "origin": origin}
        job_id = jobs.find_by_origin(self.db, attempt.principal, origin)
        if job_id is None:
            spec = JobSpec.model_validate(handle["spec"])
            try:
                job_id = jobs.submit(self.db, attempt.principal, spec, self.models(),
                                     self.wake, origin=origin).id
            except ServiceError as exc:
                return {**handle, "error": exc.message}
            except IntegrityError:  # submitted meanwhile by a second start: adopt that one
                job_id = jobs.find_by_origin(self.db, attempt.principal, origin)
                if job_id is None:
                    raise
        attempt.dir.mkdir(parents=True, exist_ok=True)
        (attempt.dir / JOB_FILE).write_text(job_id + "\n")
        return {**handle, "job_id": job_id}

    def status(self, attempt: Attempt, handle: Handle) -> Status:
        if "error" in handle:
            return Status("failed", "error", f"could not submit the job: {handle['error']}")
        try:
            view = jobs.get_job(self.db, attempt.principal, int(handle["job_id"]))
        except NotFound:
            return Status("failed", "error", f"job {handle['job_id']} is gone")
        if not view.phase.final:
            return RUNNING
        if view.phase == Phase.SUCCEEDED:
            if self.remote is not None and view.spec.code is not None:
                with self.db.read() as s:
                    team = s.scalar(select(Job.team_id).where(Job.id == int(view.id)))
                waiting = self.remote.fetch_outputs(attempt, int(view.id), int(team or 0))
                if waiting is not None:
                    return waiting
            return Status("succeeded", message=f"job {view.id} succeeded")
        if view.phase == Phase.CANCELLED:
            return Status("failed", "error", f"job {view.id} was cancelled ({view.reason})")
        return Status("failed", "failure", f"job {view.id} failed ({view.reason})")

    def stop(self, attempt: Attempt, handle: Handle) -> None:
        if "job_id" in handle:
            with contextlib.suppress(Conflict, NotFound):
                jobs.cancel(self.db, attempt.principal, int(handle["job_id"]), self.wake)

    def delete(self, attempt: Attempt, handle: Handle) -> None:
        drop_secrets(attempt)
