"""The pool's node set as the controller keeps it: the scheduler built over a snapshot, held
allocations carried over when nodes join or leave, and the nodes table kept in step."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
from sqlalchemy import delete

from gpupool.core.cluster import ClusterError, ClusterState
from gpupool.core.scheduler import Scheduler
from gpupool.executors.inventory import LocalInventory
from gpupool.plugins.profiles import PolicyContext, build_profile
from gpupool.server.cycle import LiveJob
from gpupool.server.db.database import Database
from gpupool.server.db.tables import Node

log = logging.getLogger("gpupool.controller")


def build_scheduler(policy: str, state: ClusterState) -> Scheduler:
    """The live server's scheduler over ``state`` (seeded: decisions are reproducible)."""
    context = PolicyContext(rng=np.random.default_rng(0))
    return Scheduler(state, build_profile(policy, state, context))


def carry_over(old: ClusterState, scheduler: Scheduler, jobs: Sequence[LiveJob]) -> None:
    """Re-take every held allocation of ``jobs`` on ``scheduler``'s new state, by node name;
    allocations on departed nodes are dropped (their processes poll as lost), and one that
    no longer fits a changed node is dropped with a warning."""
    state = scheduler.state
    for job in jobs:
        kept = []
        for allocation in job.allocations:
            name = old.names[allocation.node]
            if name not in state.index:
                continue
            try:
                kept.append(scheduler.place_on(state.index[name], allocation.gpus,
                                               allocation.request))
            except ClusterError:
                log.warning("job %s: node %s changed; its share is no longer counted",
                            job.id, name)
        job.allocations = tuple(kept)


def register_nodes(
    db: Database, inventory: LocalInventory, mechanisms: Callable[[str], list[str]], now: float
) -> None:
    """Make the nodes table say what the pool has now (departed nodes removed)."""
    names = {spec.name for spec in inventory.nodes}
    with db.session() as s:
        for spec in inventory.nodes:
            node = s.get(Node, spec.name) or Node(name=spec.name)
            node.cpu_milli = spec.cpu_milli
            node.memory_mib = spec.memory_mib
            node.gpus = [{"model": g.model, "memory_mib": g.memory_mib} for g in spec.gpus]
            node.labels = dict(spec.labels)
            node.source = inventory.source
            node.mechanisms = mechanisms(spec.name)
            node.updated_at = now
            s.merge(node)
        s.execute(delete(Node).where(Node.name.not_in(names)))
