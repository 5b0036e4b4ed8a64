"""Recovery after a restart: the jobs the database says hold resources (starting or running)
get their placements back on the fresh snapshot and their processes re-adopted.

Contract, for each such job (the nodes table is registered by the caller first):

- its placement cannot be restored (a node gone, a spec or request invalid today, GPUs that no
  longer fit): its row is failed with the reason, whatever processes remain are abandoned and
  its share file dropped; it holds nothing;
- some process of it was never found (the server stopped before the job started): the
  processes found are abandoned, its allocations released, its share file dropped, and it is
  requeued (row first);
- otherwise it is tracked in ``active`` holding its allocations, its processes are adopted
  (whether they still run or ended meanwhile; the next poll finds out), a note is written, and
  a row still marked starting is marked running with its handles.

A placement is all or nothing: allocations taken before one fails are released.
"""

from __future__ import annotations

from collections.abc import Callable

from gpupool.core.cluster import Allocation, ClusterError
from gpupool.core.request import RequestError
from gpupool.executors.base import Handle
from gpupool.schemas.jobs import JobSpec, Phase
from gpupool.server.active import Active, handles_from_json, to_request
from gpupool.server.cycle import LiveJob
from gpupool.server.db.tables import Job
from gpupool.server.job_store import JobStore
from gpupool.server.launcher import Launcher
from gpupool.server.live_state import LiveState
from gpupool.server.services.errors import Invalid


class Recovery:
    """Restores the jobs that held resources when the server stopped (see the module) into
    ``live`` (its ``active`` is filled in place), reading and writing rows through ``store``
    and adopting processes through the launcher's executor. ``requeue(active, message,
    now)`` sends a job back to pending, its row first."""

    def __init__(
        self,
        store: JobStore,
        live: LiveState,
        launcher: Launcher,
        requeue: Callable[[Active, str, float], None],
    ) -> None:
        self.store = store
        self.live = live
        self.launcher = launcher
        self.requeue = requeue

    def run(self, now: float) -> None:
        """Restore every job the database says is starting or running."""
        for job in self.store.held():
            self._recover(job, now)

    def _recover(self, job: Job, now: float) -> None:
        scheduler = self.live.scheduler
        state = scheduler.state
        spec = JobSpec.model_validate(job.spec)
        places = ([(r["node"], tuple(r["gpus"])) for r in job.ranks] if job.ranks
                  else [(job.node or "", tuple(job.gpus or ()))])
        nodes = [node for node, _ in places]
        found: list[Handle | None] = (
            list(handles_from_json(job.handle)) if job.handle
            else self.launcher.find_handles(job.id, job.attempts, nodes, spec.procs_per_node))
        try:
            request = to_request(job.id, spec, job.queue, state.models)
            allocations: list[Allocation] = []
            try:
                for node, gpus in places:
                    allocations.append(scheduler.place_on(state.index[node], gpus, request))
            except BaseException:
                for allocation in allocations:
                    scheduler.release(allocation)
                raise
        except (KeyError, ClusterError, Invalid, RequestError) as exc:
            self.store.finish(job.id, Phase.FAILED, None, f"cannot restore after restart: {exc}",
                              now)
            self.launcher.abandon(job.id, job.attempts, nodes, spec.procs_per_node, found)
            self.launcher.drop_share_file(job.id, job.attempts)
            return
        live = LiveJob(job.id, job.queue, job.priority, job.created_at, request,
                       spec.grace_period_s, tuple(allocations), job.started_at or now,
                       job.stop_requested, nodes=spec.nodes,
                       user=self.store.owner(job.id).name or "",
                       time_limit_s=spec.time_limit_s)
        active = Active(live, job.name, spec, job.attempts, job.failures,
                        deadline=job.stop_deadline)
        if any(h is None for h in found):
            self.launcher.abandon(job.id, job.attempts, nodes, spec.procs_per_node, found)
            self.live.release(live)
            self.launcher.drop_share_file(job.id, job.attempts)
            self.requeue(active, "the server stopped before the job started", now)
            return
        active.handles = [h for h in found if h is not None]
        self.live.active[job.id] = active
        alive = [self.launcher.executor.adopt(h) for h in active.handles]
        self.store.adopted(job.id, active.handles, job.phase == Phase.STARTING.value,
                           "server restarted: process re-adopted" if any(alive)
                           else "server restarted: the process ended while the server was down",
                           now)
