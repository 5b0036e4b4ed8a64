"""Network-topology-aware gang placement: a gang goes to the fewest racks / switches that fit.

``prepare`` estimates how many members each node could hold, groups nodes by a topology
label (finest level first, e.g. ``rack`` then ``spine``), and picks the smallest set of
domains whose capacity covers the gang: the tightest single domain if one suffices (keeping
larger domains whole for larger gangs), otherwise the largest domains first. Inside a domain
chosen at a coarser level (one spine), the fewest finer domains (racks) are chosen the same
way. ``score`` then gives nodes inside the chosen domains a bonus that outweighs any packing
score (and a further bonus to the chosen finer domains).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from gpupool.core.cluster import ClusterState, IntArray
from gpupool.core.framework import CycleState
from gpupool.core.request import Gang, Request
from gpupool.plugins.fit import fitting_gpus

_BIG = 1 << 30
_INT64_MAX = int(np.iinfo(np.int64).max)


def _copies(left: IntArray, each: int) -> IntArray:
    """How many ``each`` (> 0) fit into each entry of ``left``, for any size of ``each``
    (a Python int beyond int64 fits nowhere instead of overflowing numpy)."""
    if each > _INT64_MAX:
        return np.zeros_like(left)
    return left // each


def member_capacity(state: ClusterState, request: Request) -> IntArray:
    """How many copies of ``request`` each node could hold right now (ignoring models).
    Never raises for large requests: what fits nowhere gets 0."""
    cap = np.full(state.num_nodes, _BIG, dtype=np.int64)
    if request.cpu_milli:
        cap = np.minimum(cap, _copies(state.cpu_left, request.cpu_milli))
    if request.memory_mib:
        cap = np.minimum(cap, _copies(state.mem_left, request.memory_mib))
    if request.num_gpus:
        if request.is_sharing:
            # max(.., 1): a request may ask for GPU memory only (gpu_milli 0)
            per_gpu = np.where(state.gpu_left >= 0,
                               _copies(state.gpu_left, max(request.gpu_milli, 1)), 0)
            if request.gpu_memory_mib:
                per_gpu = np.minimum(per_gpu, _copies(state.gpu_mem_left, request.gpu_memory_mib))
            gpus = per_gpu.sum(axis=1)
        else:
            gpus = _copies(fitting_gpus(state, request).sum(axis=1), request.num_gpus)
        models = state.model_mask(request.gpu_models)
        cap = np.minimum(cap, np.where(models, gpus, 0))
    return cap


_DOMAIN_BONUS = 1000
"""Score of a node inside the chosen domain(s) of the coarsest level needed."""
_FINER_BONUS = 100
"""Added per finer level for nodes in the fewest finer domains inside that scope."""


def _domains(state: ClusterState, key: str) -> dict[str, list[int]]:
    domains: dict[str, list[int]] = defaultdict(list)
    for node, labels in enumerate(state.labels):
        if key in labels:
            domains[labels[key]].append(node)
    return domains


def _fewest(domains: dict[str, list[int]], capacity: IntArray, need: int) -> list[int] | None:
    """Nodes of the fewest domains that hold ``need`` members (largest first, names break
    ties); None when all of them together do not."""
    sizes = {d: int(capacity[nodes].sum()) for d, nodes in domains.items()}
    chosen: list[int] = []
    covered = 0
    for d in sorted(sizes, key=lambda d: (-sizes[d], d)):
        chosen.extend(domains[d])
        covered += sizes[d]
        if covered >= need:
            return chosen
    return None


def _scope(
    levels: list[dict[str, list[int]]], capacity: IntArray, need: int
) -> tuple[list[int] | None, int]:
    """(nodes, level index): the tightest single domain of the finest level that has one
    holding ``need`` members, else the fewest domains of the coarsest level that can."""
    for level, domains in enumerate(levels):
        sizes = sorted((int(capacity[nodes].sum()), d) for d, nodes in domains.items())
        fitting = [d for size, d in sizes if size >= need]
        if fitting:
            return domains[fitting[0]], level
    for level in range(len(levels) - 1, -1, -1):
        chosen = _fewest(levels[level], capacity, need)
        if chosen is not None:
            return chosen, level
    return None, 0


class TopologyScore:
    """Prepare + score plugin; only gangs of two or more tasks are steered."""

    name = "topology"

    def __init__(self, keys: tuple[str, ...] = ("rack", "spine")) -> None:
        self.keys = keys

    def prepare(self, state: ClusterState, gang: Gang, cycle: CycleState) -> None:
        """Scope: the tightest single domain at the finest level where one holds the gang,
        else the fewest domains of the coarsest level that can. Inside the scope, nodes of
        the fewest domains of each finer level get a further bonus."""
        if len(gang.members) < 2:
            return
        need = len(gang.members)
        capacity = np.minimum(member_capacity(state, gang.members[0]),
                              1 if gang.distinct_nodes else need)
        levels = [d for d in (_domains(state, key) for key in self.keys) if d]
        scope, level = _scope(levels, capacity, need)
        if scope is None:
            return
        bonus = np.zeros(state.num_nodes, dtype=np.int64)
        bonus[scope] = _DOMAIN_BONUS
        inside = np.zeros(state.num_nodes, dtype=bool)
        inside[scope] = True
        for domains in reversed(levels[:level]):
            within = {d: [n for n in nodes if inside[n]] for d, nodes in domains.items()}
            chosen = _fewest({d: n for d, n in within.items() if n}, capacity, need)
            if chosen is None:
                break
            bonus[chosen] += _FINER_BONUS
            inside[:] = False
            inside[chosen] = True
        cycle.data[self.name] = bonus

    def score(
        self, state: ClusterState, request: Request, cycle: CycleState, nodes: IntArray
    ) -> IntArray | None:
        bonus = cycle.data.get(self.name)
        if bonus is None:
            return None
        return np.asarray(bonus[nodes], dtype=np.int64)


class PriorityQueueSort:
    """Higher priority first, then first come first served."""

    name = "priority"

    def sort_key(self, request: Request, arrival: int) -> tuple[int, ...]:
        return (-request.priority, arrival)
