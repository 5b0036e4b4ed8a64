"""Network-topology-aware gang placement: a gang goes to the fewest racks / switches that fit.

``prepare`` estimates how many members each node could hold, groups nodes by a topology
label (finest level first, e.g. ``rack`` then ``spine``), and picks the smallest set of
domains whose capacity covers the gang: the tightest single domain if one suffices (keeping
larger domains whole for larger gangs), otherwise the largest domains first. ``score`` then
gives nodes inside the chosen domains a bonus that outweighs any packing score.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from gpupool.core.cluster import ClusterState, IntArray
from gpupool.core.framework import CycleState
from gpupool.core.request import Gang, Request
from gpupool.plugins.fit import fitting_gpus

_BIG = 1 << 30


def member_capacity(state: ClusterState, request: Request) -> IntArray:
    """How many copies of ``request`` each node could hold right now (ignoring models)."""
    cap = np.full(state.num_nodes, _BIG, dtype=np.int64)
    if request.cpu_milli:
        cap = np.minimum(cap, state.cpu_left // request.cpu_milli)
    if request.memory_mib:
        cap = np.minimum(cap, state.mem_left // request.memory_mib)
    if request.num_gpus:
        if request.is_sharing:
            per_gpu = np.where(state.gpu_left >= 0, state.gpu_left // request.gpu_milli, 0)
            gpus = per_gpu.sum(axis=1)
        else:
            gpus = fitting_gpus(state, request).sum(axis=1) // request.num_gpus
        models = state.model_mask(request.gpu_models)
        cap = np.minimum(cap, np.where(models, gpus, 0))
    return cap


class TopologyScore:
    """Prepare + score plugin; only gangs of two or more tasks are steered."""

    name = "topology"

    def __init__(self, keys: tuple[str, ...] = ("rack", "spine")) -> None:
        self.keys = keys

    def prepare(self, state: ClusterState, gang: Gang, cycle: CycleState) -> None:
        if len(gang.members) < 2:
            return
        need = len(gang.members)
        capacity = member_capacity(state, gang.members[0])
        for key in self.keys:
            domains: dict[str, list[int]] = defaultdict(list)
            for node, labels in enumerate(state.labels):
                if key in labels:
                    domains[labels[key]].append(node)
            if not domains:
                continue
            sizes = {d: int(np.minimum(capacity[nodes], need).sum()) for d, nodes in domains.items()}
            fitting = sorted((size, d) for d, size in sizes.items() if size >= need)
            chosen: list[str] = []
            if fitting:
                chosen = [fitting[0][1]]
            else:
                covered = 0
                for d in sorted(sizes, key=lambda d: (-sizes[d], d)):
                    chosen.append(d)
                    covered += sizes[d]
                    if covered >= need:
                        break
                if covered < need:
                    continue
                if len(chosen) > 1 and key != self.keys[-1]:
                    # A coarser level may hold the gang in one domain: prefer that.
                    continue
            mask = np.zeros(state.num_nodes, dtype=bool)
            for d in chosen:
                mask[domains[d]] = True
            cycle.data[self.name] = mask
            return

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray | None:
        mask = cycle.data.get(self.name)
        if mask is None:
            return None
        return np.where(mask[nodes], 1000, 0).astype(np.int64)


class PriorityQueueSort:
    """Higher priority first, then first come first served."""

    name = "priority"

    def sort_key(self, request: Request, arrival: int) -> tuple[int, ...]:
        return (-request.priority, arrival)
