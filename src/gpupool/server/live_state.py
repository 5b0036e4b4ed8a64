"""The loop's live state: the in-memory snapshot the cycle works on, kept in step with the
database. Three stores kept apart (Kueue's idea): what waits (``pending``), what holds
resources (``active``), and the nodes with what is taken on them (``state`` and its
``scheduler``). Resources go back through one ``release``."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpupool.core.cluster import ClusterState
from gpupool.core.live import LiveJob, cycle_candidates
from gpupool.core.scheduler import Scheduler
from gpupool.executors.inventory import LocalInventory
from gpupool.server.active import Active


@dataclass
class LiveState:
    inventory: LocalInventory
    state: ClusterState
    scheduler: Scheduler
    pending: dict[int, LiveJob] = field(default_factory=dict)
    active: dict[int, Active] = field(default_factory=dict)
    dirty: bool = True
    """Capacity or quota changed since the last cycle: every pending job is reconsidered.
    Otherwise only new jobs are: old ones could not fit before and still cannot."""
    fresh: list[LiveJob] = field(default_factory=list)
    """Jobs loaded since the last cycle."""

    def release(self, job: LiveJob) -> None:
        """Give everything ``job`` holds back to the nodes (on the scheduler of the current
        nodes); the next cycle reconsiders every pending job."""
        for allocation in job.allocations:
            self.scheduler.release(allocation)
        job.allocations = ()
        self.dirty = True

    def add_pending(self, job: LiveJob) -> None:
        self.pending[job.id] = job
        self.fresh.append(job)

    def candidates(self) -> tuple[list[LiveJob], bool, list[LiveJob]]:
        """What the next cycle tries (``core.live.cycle_candidates``); clears ``dirty`` and
        ``fresh``."""
        found = cycle_candidates(self.pending, self.fresh, self.dirty)
        self.dirty = False
        self.fresh = []
        return found
