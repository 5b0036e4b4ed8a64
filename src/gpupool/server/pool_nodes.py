"""The pool's node set as the controller keeps it: the scheduler built over a snapshot, and
held allocations carried over when nodes join or leave (the nodes table is kept in step by
the job store, server/job_store.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from gpupool.core.cluster import ClusterError, ClusterState
from gpupool.core.scheduler import Scheduler
from gpupool.plugins.profiles import PolicyContext, build_profile
from gpupool.server.cycle import LiveJob

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
