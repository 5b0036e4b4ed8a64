"""From a placement to a running attempt on this machine: the process environment, how the
GPU share is enforced, the run directory, and the executor call; and, after a restart, what
became of attempts that may have been launched.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gpupool.core.cluster import Allocation, ClusterState
from gpupool.executors.base import Executor, Handle, LaunchSpec
from gpupool.interposer import job_env, sharefile
from gpupool.schemas.jobs import JobSpec
from gpupool.server.inventory import LocalInventory
from gpupool.server.launch_env import launch_env

log = logging.getLogger("gpupool.launcher")

SHARE_FILE = "gpushare"
"""The interposer's share file, in the attempt's run dir (docs/design/gpu-sharing.md)."""
INTERPOSER = "interposer"
WHOLE_GPU = "whole GPU"
ENFORCEMENT_WIDTH = 200


class Launcher:
    """Starts attempts under ``runs_dir/<job>/<attempt>`` (log: ``runs_dir/<job>/log``).

    ``interposer`` is the path of ``libgpushare.so`` when GPU shares are enforced with it;
    else None, and ``interposer_missing`` says why not.
    """

    def __init__(
        self,
        runs_dir: Path,
        executor: Executor,
        inventory: LocalInventory,
        state: ClusterState,
        interposer: str | None = None,
        interposer_missing: str = "not built",
    ) -> None:
        self.runs_dir = runs_dir
        self.executor = executor
        self.inventory = inventory
        self.state = state
        self.interposer = interposer
        self.interposer_missing = " ".join(interposer_missing.split()) or "unknown reason"

    @property
    def mechanisms(self) -> list[str]:
        """The share-enforcement mechanisms this machine's nodes offer."""
        return [INTERPOSER] if self.interposer else []

    def run_dir(self, job_id: int, attempt: int) -> Path:
        return self.runs_dir / str(job_id) / str(attempt)

    def spec(
        self,
        job_id: int,
        attempt: int,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
    ) -> LaunchSpec:
        run_dir = self.run_dir(job_id, attempt)
        return LaunchSpec(job_id=str(job_id), attempt=attempt, command=command or ["-"],
                          env=env or {}, workdir=workdir, log_path=str(run_dir.parent / "log"),
                          run_dir=str(run_dir))

    def start(
        self, job_id: int, name: str, attempt: int, queue: str, alloc: Allocation, spec: JobSpec
    ) -> tuple[Handle, str | None]:
        """Launch the attempt; return its handle and the enforcement to record on the job.
        On any failure the share file is released and the exception propagates."""
        node_name = self.state.names[alloc.node]
        physical = self.inventory.physical_gpus.get(node_name, ())
        gpus = [physical[g] if g < len(physical) else g for g in alloc.gpus]
        node_spec = self.state.specs[alloc.node]
        env = launch_env(job_id, name, attempt, queue, gpus,
                         [node_spec.gpus[g] for g in alloc.gpus], alloc.gpu_milli,
                         alloc.gpu_memory_mib, spec.env)
        try:
            enforcement = self._enforce(job_id, attempt, alloc, env, spec.env)
            launch = self.spec(job_id, attempt, list(spec.command), env, spec.workdir)
            return self.executor.launch(launch), enforcement
        except BaseException:
            self.drop_share_file(job_id, attempt)
            raise

    def _enforce(
        self, job_id: int, attempt: int, alloc: Allocation, env: dict[str, str],
        user_env: dict[str, str],
    ) -> str | None:
        """How the attempt's GPU share is enforced; with the interposer, create the share
        file and add its variables to ``env``."""
        if not alloc.gpus:
            return None
        if alloc.gpu_milli >= 1000 and not alloc.gpu_memory_mib:
            return WHOLE_GPU
        if not self.interposer:
            text = f"none (interposer unavailable: {self.interposer_missing})"
            return text if len(text) <= ENFORCEMENT_WIDTH else (
                text[: ENFORCEMENT_WIDTH - 2] + "…)")
        path = self.share_file(job_id, attempt)
        limit = int(env.get("GPUPOOL_GPU_MEMORY_LIMIT_MIB", "0") or 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        sharefile.create(path, limit_mib=limit)
        env.update(job_env(self.interposer, path, user_env.get("LD_PRELOAD")))
        return INTERPOSER

    def share_file(self, job_id: int, attempt: int) -> Path:
        return self.run_dir(job_id, attempt) / SHARE_FILE

    def drop_share_file(self, job_id: int, attempt: int) -> None:
        """Release the attempt's interposer accounting (no-op without a share file)."""
        try:
            sharefile.remove(self.share_file(job_id, attempt))
        except OSError:
            log.warning("job %s: cannot remove its share file", job_id, exc_info=True)

    def find_handle(self, job_id: int, attempt: int) -> Handle | None:
        """The handle of an attempt launched just before a crash (None: never launched)."""
        return self.executor.find_handle(self.spec(job_id, attempt))

    def abandon(self, job_id: int, attempt: int) -> None:
        """Make sure an attempt that was never found never runs its command."""
        self.executor.abandon(self.spec(job_id, attempt))
