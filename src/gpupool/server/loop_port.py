"""What the API and the pipeline engine may ask of the scheduling loop: a narrow port, so
routers never reach into the loop's live state (they go through services and the database,
then wake the loop)."""

from __future__ import annotations

from typing import Protocol

from gpupool.executors.base import Executor
from gpupool.schemas.jobs import JobSpec
from gpupool.server.artifacts import ArtifactCollector
from gpupool.server.launcher import Launcher
from gpupool.server.metrics.loop_metrics import LoopMetrics


class LoopPort(Protocol):
    @property
    def models(self) -> tuple[str, ...]:
        """The GPU models of the pool now (to resolve a job's ``gpu_model``)."""
        ...

    def wake(self, capacity_changed: bool = False) -> None:
        """Run a step soon; ``capacity_changed`` (quota edits) reconsiders every job."""
        ...

    def never_fits(self, spec: JobSpec) -> str | None:
        """Why no node of a fixed pool could ever hold ``spec``, else None."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    executor: Executor
    """Where processes run (pipeline shell steps reuse a local one)."""
    launcher: Launcher
    """The launcher (its workspace holds workloads' files)."""
    metrics: LoopMetrics
    """What the loop counts; the API adds its submits and serves them at ``/metrics``."""
    artifacts: ArtifactCollector
    """Keeps ended attempts' declared artifacts (server/artifacts.py); the API reads its
    store."""
