"""A fake executor with scripted outcomes, for the middle tier of tests: nothing runs; a
process ends when the test says so (``end``) or when it is asked to stop (terminate/kill
end it at the next poll, as a process that honours SIGTERM at once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpupool.executors.base import Handle, LaunchSpec, Outcome


@dataclass
class ScriptedExecutor:
    clock: Any
    """A callable giving the current (fake) time."""
    launched: list[LaunchSpec] = field(default_factory=list)
    ended: dict[tuple[str, int], Outcome] = field(default_factory=dict)
    """Outcome by (job id, attempt): all of an attempt's processes end together."""
    attempts: dict[str, int] = field(default_factory=dict)
    """The latest attempt launched, by job id."""
    _pid: int = 1000

    def launch(self, spec: LaunchSpec) -> Handle:
        self.launched.append(spec)
        self.attempts[spec.job_id] = spec.attempt
        self._pid += 1
        return Handle(spec.job_id, spec.attempt, self._pid, spec.run_dir, spec.log_path,
                      self.clock(), spec.node)

    def end(self, job_id: int, exit_code: int = 0) -> None:
        """The processes of the job's latest attempt exit now with ``exit_code``."""
        key = (str(job_id), self.attempts[str(job_id)])
        self.ended.setdefault(key, Outcome(exit_code, self.clock()))

    def poll(self, handle: Handle) -> Outcome | None:
        return self.ended.get((handle.job_id, handle.attempt))

    def poll_many(self, handles: list[Handle]) -> list[Outcome | None]:
        return [self.poll(h) for h in handles]

    def terminate(self, handle: Handle) -> None:
        self.ended.setdefault((handle.job_id, handle.attempt), Outcome(-15, self.clock()))

    def kill(self, handle: Handle) -> None:
        self.terminate(handle)

    def adopt(self, handle: Handle) -> bool:
        return (handle.job_id, handle.attempt) not in self.ended

    def find_handle(self, spec: LaunchSpec) -> Handle | None:
        return None

    def abandon(self, spec: LaunchSpec) -> None:
        return None

    def node_address(self, node: str) -> str:
        return "127.0.0.1"

    def free_port(self, node: str) -> int:
        return 29500

    def read_log(self, log_path: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        return b""
