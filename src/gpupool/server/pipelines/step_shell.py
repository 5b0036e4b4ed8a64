"""The ``shell`` step executor: the command runs at once as a local process on the server's
machine (no GPU, no scheduling), under the same crash-proof shim as jobs, so it outlives a
server kill -9 and is re-adopted afterwards; and like jobs, as the run's Unix account, in
the sandbox, with an allowlisted environment (the server's executor does all of that)."""

from __future__ import annotations

from gpupool.executors.base import Handle as ProcHandle
from gpupool.executors.base import LaunchError, LaunchSpec
from gpupool.executors.local import LocalExecutor
from gpupool.server.pipelines.steps import (
    RUNNING,
    Attempt,
    Handle,
    Status,
    drop_secrets,
    prepare_command,
)


class ShellSteps:
    def __init__(self, executor: LocalExecutor) -> None:
        self.executor = executor

    def _spec(self, attempt: Attempt, handle: Handle) -> LaunchSpec:
        return LaunchSpec(
            job_id=f"step-{attempt.run_id}-{attempt.step.name}", attempt=attempt.number,
            command=list(handle["argv"]), env=dict(handle["env"]), workdir=handle["workdir"],
            log_path=str(attempt.log_path), run_dir=str(attempt.dir / "proc"),
            run_as=attempt.owner.unix_user,
            owner=attempt.owner.name if attempt.owner.created else "",
            job_dir=str(attempt.own_dir),
        )

    def create(self, attempt: Attempt) -> Handle:
        argv = prepare_command(attempt)
        return {"argv": argv, "env": attempt.env,
                "workdir": attempt.workdir or str(attempt.own_dir)}

    def start(self, attempt: Attempt, handle: Handle) -> Handle:
        spec = self._spec(attempt, handle)
        found = self.executor.find_handle(spec)
        if found is None:
            try:
                found = self.executor.launch(spec)
            except LaunchError as exc:
                return {**handle, "error": str(exc)}
        return {**handle, "proc": found.to_json()}

    def status(self, attempt: Attempt, handle: Handle) -> Status:
        if "error" in handle:
            return Status("failed", "error", f"could not start: {handle['error']}")
        proc = ProcHandle.from_json(handle["proc"])
        outcome = self.executor.poll(proc)
        if outcome is None:
            return RUNNING
        if outcome.lost:
            return Status("failed", "error", "the process was lost")
        if outcome.exit_code == 0:
            return Status("succeeded")
        return Status("failed", "failure", f"exit code {outcome.exit_code}")

    def stop(self, attempt: Attempt, handle: Handle) -> None:
        if "proc" in handle:
            self.executor.kill(ProcHandle.from_json(handle["proc"]))

    def delete(self, attempt: Attempt, handle: Handle) -> None:
        drop_secrets(attempt)

