"""A job that holds resources, as the controller's loop tracks it: its processes' handles,
which of them ended and how, and the attempt's outcome; plus how handles are stored on the
job row and how a job's spec becomes a scheduler request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpupool.core.request import Request
from gpupool.executors.base import Handle, Outcome
from gpupool.executors.containers import IMAGES_LABEL
from gpupool.schemas.jobs import JobSpec
from gpupool.server.cycle import LiveJob
from gpupool.server.services.jobs import resolve_gpu_model


@dataclass
class Active:
    """A job holding resources, with what is needed to finish or restart it. ``handles``:
    one per process (rank order; one for a single-node job), empty until launched."""

    live: LiveJob
    name: str
    spec: JobSpec
    attempt: int
    failures: int
    handles: list[Handle] = field(default_factory=list)
    deadline: float | None = None
    killed: bool = False
    ended: dict[int, Outcome] = field(default_factory=dict)
    """Outcomes of the processes that ended, by process index."""
    failure: tuple[int, Outcome] | None = None
    """The first process that failed (index, outcome): it decides the job's outcome."""

    def running(self) -> list[Handle]:
        return [h for i, h in enumerate(self.handles) if i not in self.ended]

    def outcome(self) -> Outcome:
        """The attempt's outcome once every process ended: the first failure, else 0."""
        if self.failure is not None:
            index, first = self.failure
            if len(self.handles) == 1:
                return first
            where = f"rank {index} on {self.handles[index].node}"
            what = first.reason or ("lost (the process disappeared)" if first.lost
                                    else f"exit code {first.exit_code}")
            return Outcome(first.exit_code, first.ended_at, first.lost, f"{where}: {what}")
        return Outcome(0, max(o.ended_at for o in self.ended.values()))


def handles_json(handles: list[Handle]) -> dict[str, Any]:
    """How handles are stored on the job row (a single process keeps the plain form)."""
    if len(handles) == 1:
        return handles[0].to_json()
    return {"ranks": [h.to_json() for h in handles]}


def handles_from_json(data: dict[str, Any]) -> list[Handle]:
    if "ranks" in data:
        return [Handle.from_json(h) for h in data["ranks"]]
    return [Handle.from_json(data)]


def to_request(job_id: int, spec: JobSpec, queue: str, models: tuple[str, ...]) -> Request:
    return Request(
        name=str(job_id),
        cpu_milli=round(spec.cpu * 1000),
        memory_mib=spec.memory,
        num_gpus=spec.num_gpus,
        gpu_milli=spec.gpu_milli,
        gpu_memory_mib=spec.gpu_memory or 0,
        gpu_models=resolve_gpu_model(spec.gpu_model, models),
        node_labels=((IMAGES_LABEL, "podman"),) if spec.image else (),
        priority=spec.priority,
        queue=queue,
    )
